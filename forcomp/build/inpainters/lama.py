"""LaMa inpainter (TorchScript big-lama). Implementation in progress (issue 4)."""

from __future__ import annotations

from forcomp.build.registry import BackendSpec

SPECS = [
    BackendSpec(
        name="lama",
        factory="forcomp.build.inpainters.lama:build_lama_inpainter",
        weights=(("big-lama.pt",),),
        priority=20,
        extra="lama",
        description="LaMa (TorchScript big-lama.pt), the ForAug inpainter",
    ),
]
