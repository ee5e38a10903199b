"""Segment-anything (SAM) segmenter. Implementation in progress (issue 4)."""

from __future__ import annotations

from forcomp.build.registry import BackendSpec

SAM_CHECKPOINTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}

SPECS = [
    BackendSpec(
        name="sam",
        factory="forcomp.build.segmenters.sam:build_sam_segmenter",
        weights=tuple((f,) for f in SAM_CHECKPOINTS.values()),
        priority=20,
        extra="sam",
        description="segment-anything ViT-H/L/B (largest checkpoint present), box-prompted",
    ),
]
