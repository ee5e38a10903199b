"""The inpainter interface: images plus hole masks in, object-free backgrounds out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Inpainter(Protocol):
    """Fills the holes of a batch of images.

    ``inpaint`` gets ``(H, W, 3)`` uint8 RGB images and ``(H, W)`` bool hole masks (already dilated
    by the pipeline) and returns ``(H, W, 3)`` uint8 images of the same sizes. The pipeline blends
    the result back with a feathered mask, so an inpainter only has to fill the hole plausibly.
    """

    name: str
    weights_id: str | None

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]: ...
