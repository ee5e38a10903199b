"""diffusers inpainting pipeline. Implementation in progress (issue 4)."""

from __future__ import annotations

from forcomp.build.registry import BackendSpec

SPECS = [
    BackendSpec(
        name="sd",
        factory="forcomp.build.inpainters.diffusion:build_sd_inpainter",
        weights=(
            ("stable-diffusion-2-inpainting/model_index.json",),
            ("stable-diffusion-xl-1.0-inpainting-0.1/model_index.json",),
        ),
        priority=10,
        extra="diffusion",
        description="a diffusers inpainting pipeline from a local directory (slow, highest quality)",
    ),
]
