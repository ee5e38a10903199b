"""Inpainter backends, chosen by name (``--inpainter``); ``auto`` picks the best with weights present."""

from forcomp.build.inpainters.base import Inpainter
from forcomp.build.registry import Registry

INPAINTERS = Registry(
    "inpainter",
    [
        "forcomp.build.inpainters.opencv",
        "forcomp.build.inpainters.lama",
        "forcomp.build.inpainters.diffusion",
    ],
)

__all__ = ["INPAINTERS", "Inpainter"]
