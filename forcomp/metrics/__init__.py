"""Bias metrics on controlled recombinations (README, "Bias metrics"): evaluate, report, compare.

Public names are imported lazily so that ``forcomp --help`` does not import torch or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "evaluate": "forcomp.metrics.bias",
    "run_evaluation": "forcomp.metrics.bias",
    "Evaluation": "forcomp.metrics.bias",
    "EvaluateOptions": "forcomp.metrics.options",
    "AttributionExamples": "forcomp.metrics.bias",
    "EvaluationGrid": "forcomp.metrics.grids",
    "Condition": "forcomp.metrics.grids",
    "SIZE_FACTORS": "forcomp.metrics.grids",
    "Attributor": "forcomp.metrics.attribution",
    "load_model": "forcomp.models.classifiers",
    "LoadedModel": "forcomp.models.classifiers",
    "write_report": "forcomp.metrics.output",
    "load_report": "forcomp.metrics.report",
    "compare": "forcomp.metrics.output",
    "refresh_report": "forcomp.metrics.output",
    "render_report_plots": "forcomp.metrics.plots",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.metrics.attribution import Attributor  # noqa: F401
    from forcomp.metrics.bias import AttributionExamples, Evaluation, evaluate, run_evaluation  # noqa: F401
    from forcomp.metrics.grids import SIZE_FACTORS, Condition, EvaluationGrid  # noqa: F401
    from forcomp.metrics.options import EvaluateOptions  # noqa: F401
    from forcomp.metrics.output import compare, refresh_report, write_report  # noqa: F401
    from forcomp.metrics.plots import render_report_plots  # noqa: F401
    from forcomp.metrics.report import load_report  # noqa: F401
    from forcomp.models.classifiers import LoadedModel, load_model  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forcomp.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
