"""Weight-free inpainter: OpenCV Telea or Navier-Stokes, run at reduced resolution for speed.

Telea's cost grows with the hole's area times its radius, and an object hole is large, so the fill
is computed at most ``work_px`` on the long side and upsampled; only the hole is replaced, the rest
of the image keeps its full resolution (the pipeline blends the seam with a feathered mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from forcomp.offline.masks import resize_hole
from forcomp.offline.registry import BackendSpec

SPECS = [
    BackendSpec(
        name="telea",
        factory="forcomp.offline.inpainters.opencv:OpenCVInpainter",
        priority=1,
        description="OpenCV Telea fast-marching inpainting; no weights (the default)",
    ),
    BackendSpec(
        name="ns",
        factory="forcomp.offline.inpainters.opencv:build_navier_stokes",
        priority=0,
        description="OpenCV Navier-Stokes inpainting; no weights",
    ),
]


class OpenCVInpainter:
    """OpenCV inpainting (``method="telea"`` or ``"ns"``) of the pipeline's dilated hole.

    Args:
        method: ``telea`` (fast marching) or ``ns`` (Navier-Stokes).
        work_px: long side at which the hole is filled.
        radius_px: neighbourhood radius at ``work_px`` resolution.
    """

    weights_id: str | None = None

    def __init__(
        self,
        *,
        weights_dir: Path | None = None,
        device: str | None = None,
        method: Literal["telea", "ns"] = "telea",
        work_px: int = 192,
        radius_px: int = 5,
        **_: Any,
    ) -> None:
        if method not in ("telea", "ns"):
            raise ValueError(f"method must be 'telea' or 'ns', got {method!r}")
        if work_px < 16:
            raise ValueError(f"work_px must be >= 16, got {work_px}")
        if radius_px < 1:
            raise ValueError(f"radius_px must be >= 1, got {radius_px}")
        self.name = method
        self.method = method
        self.flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        self.work_px = work_px
        self.radius_px = radius_px

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._one(img, m) for img, m in zip(images, masks, strict=True)]

    def _one(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        H, W = image.shape[:2]
        if not mask.any():
            return image.copy()
        scale = min(1.0, self.work_px / max(H, W))
        if scale < 1:
            w, h = max(4, round(W * scale)), max(4, round(H * scale))
            small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            small_mask = resize_hole(mask, (w, h))  # any hole pixel in a cell makes the cell a hole
            filled = cv2.inpaint(small, small_mask.astype(np.uint8) * 255, self.radius_px, self.flag)
            filled = cv2.resize(filled, (W, H), interpolation=cv2.INTER_CUBIC)
        else:
            filled = cv2.inpaint(image, mask.astype(np.uint8) * 255, self.radius_px, self.flag)
        out = image.copy()
        out[mask] = filled[mask]
        return out


def build_navier_stokes(**kwargs: Any) -> OpenCVInpainter:
    return OpenCVInpainter(method="ns", **kwargs)
