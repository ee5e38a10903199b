"""Mask operations shared by every backend: the hole to fill and the feathered blend back."""

from __future__ import annotations

import cv2
import numpy as np

REFERENCE_SIDE_PX = 500  # dilate_px / feather_px are given for a ~500 px ImageNet image


def _scaled(px: int, shape: tuple[int, ...]) -> int:
    return max(0, round(px * max(shape[:2]) / REFERENCE_SIDE_PX))


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return mask.copy()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def resize_hole(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` resized to ``size`` (width, height) so that every cell touching a hole pixel is a hole.

    Area resampling in float gives each cell a share of every pixel it overlaps, so one hole pixel
    is enough; a uint8 area resize rounded a lone pixel's 1/16 to 0 and a linear resize samples
    only some pixels, and the object's colour then passed for known context next to its own hole.
    """
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0


def hole_mask(mask: np.ndarray, dilate_px: int) -> np.ndarray:
    """The region to inpaint: the object mask grown by ``dilate_px`` (scaled to the image size)."""
    return _dilate(mask, max(1, _scaled(dilate_px, mask.shape)) if dilate_px > 0 else 0)


def feathered_blend(
    original: np.ndarray, filled: np.ndarray, mask: np.ndarray, *, dilate_px: int, feather_px: int
) -> np.ndarray:
    """Blend the inpainted image into the original with a soft seam inside the hole.

    The blend weight is 1 on the object (no object pixel survives) and falls off smoothly across
    the outer half of the dilation ring, so the fill meets the untouched background without a
    visible edge.
    """
    r = max(1, _scaled(dilate_px, mask.shape)) if dilate_px > 0 else 0
    sigma = min(float(_scaled(feather_px, mask.shape)), r / 4)
    core = _dilate(mask, r // 2)
    if sigma <= 0.3:
        alpha: np.ndarray = core.astype(np.float32)
    else:
        alpha = cv2.GaussianBlur(core.astype(np.float32), (0, 0), sigmaX=sigma)
    alpha = np.maximum(alpha, mask.astype(np.float32))[..., None]
    out = alpha * filled.astype(np.float32) + (1.0 - alpha) * original.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
