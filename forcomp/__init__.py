"""forcomp: recombine foregrounds and backgrounds to train and audit image classifiers.

The public names are imported lazily so that ``import forcomp`` (and ``forcomp --version``) stay
cheap: nothing heavy (torch models, OpenCV, Ray) is imported or loaded until it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "ForComp": "forcomp.recombine.dataset",
    "Recombine": "forcomp.recombine.transform",
    "RecombineConfig": "forcomp.recombine.params",
    "build_cache": "forcomp.build.pipeline",
    "BuildConfig": "forcomp.build.config",
    "evaluate": "forcomp.metrics.bias",
    "verify_cache": "forcomp.cache.verify",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.build.config import BuildConfig
    from forcomp.build.pipeline import build_cache
    from forcomp.cache.verify import verify_cache
    from forcomp.metrics.bias import evaluate
    from forcomp.recombine.dataset import ForComp
    from forcomp.recombine.params import RecombineConfig
    from forcomp.recombine.transform import Recombine


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forcomp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
