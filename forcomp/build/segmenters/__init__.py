"""Segmenter backends, chosen by name (``--segmenter``); ``auto`` picks the best with weights present."""

from forcomp.build.registry import Registry
from forcomp.build.segmenters.base import MaskCandidate, Segmenter

SEGMENTERS = Registry(
    "segmenter",
    [
        "forcomp.build.segmenters.classical",
        "forcomp.build.segmenters.sam",
        "forcomp.build.segmenters.grounded",
    ],
)

__all__ = ["SEGMENTERS", "MaskCandidate", "Segmenter"]
