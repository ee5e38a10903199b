"""Inpainter backends, chosen by name (``--inpainter``); ``auto`` picks the best with weights present."""

from forcomp.offline.inpainters.base import Inpainter
from forcomp.offline.registry import Registry

INPAINTERS = Registry(
    "inpainter",
    [
        "forcomp.offline.inpainters.opencv",
        "forcomp.offline.inpainters.lama",
        "forcomp.offline.inpainters.diffusion",
    ],
)

__all__ = ["INPAINTERS", "Inpainter"]
