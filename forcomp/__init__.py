"""forcomp: recombine foregrounds and backgrounds to train and audit image classifiers.

The public names are imported lazily so that ``import forcomp`` (and ``forcomp --version``) stay
cheap: nothing heavy (torch models, OpenCV, Ray) is imported or loaded until it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forcomp.version import __version__

_LAZY = {
    "ForComp": "forcomp.recombine.dataset",
    "ForCompLoader": "forcomp.recombine.loader",
    "KeepAlpha": "forcomp.recombine.fg_transform",
    "LoaderOptions": "forcomp.recombine.loader",
    "Recombine": "forcomp.recombine.transform",
    "RecombineConfig": "forcomp.recombine.config",
    "build_cache": "forcomp.offline.entry",
    "BuildConfig": "forcomp.offline.config",
    "evaluate": "forcomp.metrics.bias",
    "EvaluateOptions": "forcomp.metrics.options",
    "verify_cache": "forcomp.cache.verify",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.cache.verify import verify_cache  # noqa: F401
    from forcomp.metrics.bias import evaluate  # noqa: F401
    from forcomp.metrics.options import EvaluateOptions  # noqa: F401
    from forcomp.offline.config import BuildConfig  # noqa: F401
    from forcomp.offline.entry import build_cache  # noqa: F401
    from forcomp.recombine.config import RecombineConfig  # noqa: F401
    from forcomp.recombine.dataset import ForComp  # noqa: F401
    from forcomp.recombine.fg_transform import KeepAlpha  # noqa: F401
    from forcomp.recombine.loader import ForCompLoader, LoaderOptions  # noqa: F401
    from forcomp.recombine.transform import Recombine  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forcomp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
