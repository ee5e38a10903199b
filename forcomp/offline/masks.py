"""Mask operations shared by every backend: clean-up of candidate masks, the hole to fill, the blend back."""

from __future__ import annotations

import cv2
import numpy as np

from forcomp.offline.segmenters.base import MaskCandidate

REFERENCE_SIDE_PX = 500  # dilate_px / feather_px are given for a ~500 px ImageNet image


def scaled_px(px: int, shape: tuple[int, ...]) -> int:
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
    return _dilate(mask, max(1, scaled_px(dilate_px, mask.shape)) if dilate_px > 0 else 0)


def feathered_blend(
    original: np.ndarray, filled: np.ndarray, mask: np.ndarray, *, dilate_px: int, feather_px: int
) -> np.ndarray:
    """Blend the inpainted image into the original with a soft seam inside the hole.

    The blend weight is 1 on the object (no object pixel survives) and falls off smoothly across
    the outer half of the dilation ring, so the fill meets the untouched background without a
    visible edge.
    """
    r = max(1, scaled_px(dilate_px, mask.shape)) if dilate_px > 0 else 0
    sigma = min(float(scaled_px(feather_px, mask.shape)), r / 4)
    core = _dilate(mask, r // 2)
    if sigma <= 0.3:
        alpha: np.ndarray = core.astype(np.float32)
    else:
        alpha = cv2.GaussianBlur(core.astype(np.float32), (0, 0), sigmaX=sigma)
    alpha = np.maximum(alpha, mask.astype(np.float32))[..., None]
    out = alpha * filled.astype(np.float32) + (1.0 - alpha) * original.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def keep_main_object(mask: np.ndarray, *, keep_frac: float = 0.25) -> np.ndarray:
    """Keep the largest connected component, plus components at least ``keep_frac`` of its size."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    biggest = int(areas.max())
    keep = np.flatnonzero(areas >= keep_frac * biggest) + 1
    return np.isin(labels, keep)


def clean_mask(mask: np.ndarray, *, min_region_ratio: float = 0.001, keep_frac: float = 0.25) -> np.ndarray:
    """Remove holes and specks smaller than ``min_region_ratio`` of the image; keep the main object."""
    from segment_anything.utils.amg import remove_small_regions

    area = min_region_ratio * mask.size
    if area >= 1:
        mask, _ = remove_small_regions(mask, area, mode="holes")
        mask, _ = remove_small_regions(mask, area, mode="islands")
    if not mask.any():
        return mask.astype(bool)
    return keep_main_object(mask, keep_frac=keep_frac)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def dedupe(cands: list[MaskCandidate], iou: float) -> list[MaskCandidate]:
    """Best first; drop a candidate whose mask overlaps a better one by more than ``iou``."""
    kept: list[MaskCandidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        if all(mask_iou(c.mask, k.mask) <= iou for k in kept):
            kept.append(c)
    return kept
