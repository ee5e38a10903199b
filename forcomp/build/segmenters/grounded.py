"""Text-grounded SAM (ForAug recipe). Implementation in progress (issue 4)."""

from __future__ import annotations

from forcomp.build.registry import BackendSpec

SPECS = [
    BackendSpec(
        name="grounded-sam",
        factory="forcomp.build.segmenters.grounded:build_grounded_segmenter",
        weights=tuple(
            (f"{det}/config.json", sam)
            for det in ("grounding-dino-base", "grounding-dino-tiny", "owlv2-base-patch16-ensemble")
            for sam in ("sam_vit_h_4b8939.pth", "sam_vit_l_0b3195.pth", "sam_vit_b_01ec64.pth")
        ),
        priority=30,
        extra="grounded",
        description="zero-shot detector prompted with the class and its WordNet parents, then SAM",
    ),
]
