"""Segmenter backends, chosen by name (``--segmenter``); ``auto`` picks the best with weights present."""

from forcomp.offline.registry import Registry
from forcomp.offline.segmenters.base import MaskCandidate, Segmenter

SEGMENTERS = Registry(
    "segmenter",
    [
        "forcomp.offline.segmenters.classical",
        "forcomp.offline.segmenters.sam",
        "forcomp.offline.segmenters.grounded",
    ],
)

__all__ = ["SEGMENTERS", "MaskCandidate", "Segmenter"]
