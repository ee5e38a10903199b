"""The segmenter interface: a batch of images in, candidate object masks out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class MaskCandidate:
    """One candidate object mask for one image.

    Attributes:
        mask: ``(H, W)`` bool, True on the object, same size as the image.
        score: the segmenter's own confidence in [0, 1] (e.g. SAM's predicted IoU).
        label: what prompted it (a class or parent name for grounded segmenters), if anything.
    """

    mask: np.ndarray
    score: float
    label: str | None = None


@runtime_checkable
class Segmenter(Protocol):
    """Turns a batch of RGB images into candidate masks of the main object.

    ``name`` and ``weights_id`` are written to the index for every item (provenance).
    ``segment`` gets ``(H, W, 3)`` uint8 RGB arrays (sizes may differ) and the class folder name of
    each image (the ImageNet wnid for ImageNet); it returns, per image, a list of candidates, best
    first; an empty list means no object was found.
    """

    name: str
    weights_id: str | None

    def segment(self, images: Sequence[np.ndarray], classes: Sequence[str]) -> list[list[MaskCandidate]]: ...
