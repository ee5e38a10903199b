"""Is the model above chance where a headline score needs it to be?

A headline ratio or difference only means something when the model recognises the objects under its
reference condition: a model that predicts one class gets ``acc(all) / acc(same) = 0.25 / 0.25 = 1``
and ``center_bias = 0``, numbers that read as ideal. Each headline depends on one condition (the
denominator of its ratio, or the condition it is measured on); when the bootstrap 95% interval of the
accuracy under that condition does not lie clearly above the chance level, the score is kept but
marked not meaningful, and the report says so at the top.

Chance level = ``max(1 / n_classes, majority share)``: ``n_classes`` are the classes the prediction
ranges over (the cache's classes, mapped onto the model's outputs), and the majority share is the
accuracy of always answering the most frequent class among the evaluated images (above ``1/n`` when
``--limit`` draws an unbalanced subset).

Pure Python on the report dict (no torch), so that old ``report.json`` files can be assessed too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# headline key -> the condition whose accuracy it needs above chance, and that condition in words
REFERENCE: dict[str, tuple[str, str]] = {
    "accuracy": ("bg=orig", "acc(orig)"),
    "background_robustness": ("bg=same", "acc(same)"),
    "bg_gap": ("bg=same", "acc(same)"),
    "foreground_focus": ("bg=orig", "acc(orig)"),
    "center_bias": ("nonant=4", "acc(center cell)"),
    "size_bias": ("size=1", "acc(f=1)"),
}


def chance_level(n_classes: int, label_counts: Sequence[int] | None = None) -> tuple[float, float | None]:
    """``(chance level, majority share)`` for ``n_classes`` and the evaluated images' label counts."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    majority = None
    total = sum(label_counts) if label_counts else 0
    if total > 0:
        majority = max(label_counts or [0]) / total
    return max(1.0 / n_classes, majority or 0.0), majority


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def assess_chance(
    conditions: Mapping[str, Mapping[str, Any]],
    n_classes: int,
    *,
    label_counts: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The ``chance`` block of ``report.json``.

    Args:
        conditions: ``{condition name: {"accuracy": float, "ci95": [low, high]}}`` (the report's
            ``conditions``).
        n_classes: Classes the prediction ranges over.
        label_counts: Images per class among the evaluated ones (for the majority share), if known.

    Returns:
        ``{"level", "n_classes", "majority_share", "rule", "conditions_at_chance": [names],
        "not_meaningful": {headline: reason}, "warning": str | None}``. A condition is at chance when
        its interval's lower bound is not above the level (or the accuracy is undefined).
    """
    level, majority = chance_level(n_classes, label_counts)
    at_chance: list[str] = []
    for name, c in conditions.items():
        ci = c.get("ci95") or [None, None]
        low = _finite(ci[0]) if len(ci) == 2 else None
        if low is None or low <= level:
            at_chance.append(name)
    not_meaningful: dict[str, str] = {}
    states: dict[str, str] = {}
    for key, (cond, words) in REFERENCE.items():
        if cond not in at_chance or cond not in conditions:
            continue
        c = conditions[cond]
        ci = c.get("ci95") or [None, None]
        states[words] = (
            f"{words} = {_fmt(_finite(c.get('accuracy')))} [{_fmt(_finite(ci[0]))}, {_fmt(_finite(ci[1]))}]"
        )
        state = f"{states[words]} is not clearly above chance ({level:.3f})"
        not_meaningful[key] = (
            state if key == "accuracy" else f"{state}: the score compares chance-level guesses"
        )
    warning = None
    if not_meaningful:
        scores = [k for k in REFERENCE if k in not_meaningful and k != "accuracy"]
        majority_text = (
            f", majority class {majority:.3f}" if majority is not None and majority > 1 / n_classes else ""
        )
        warning = (
            f"model not clearly above chance ({level:.3f}: 1/{n_classes} classes{majority_text}) under "
            f"{len(at_chance)} of {len(conditions)} conditions, including {', '.join(states.values())}"
            + (f"; not meaningful: {', '.join(scores)}" if scores else "")
        )
    return {
        "level": level,
        "n_classes": n_classes,
        "majority_share": majority,
        "rule": "a condition is at chance when the lower end of its accuracy's 95% interval is <= level; "
        "level = max(1/n_classes, majority class share of the evaluated images)",
        "conditions_at_chance": at_chance,
        "not_meaningful": not_meaningful,
        "warning": warning,
    }


def chance_of(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's ``chance`` block; assessed from its conditions for reports written before it existed
    (``None`` when the report lacks what is needed)."""
    block = report.get("chance")
    if isinstance(block, Mapping) and "not_meaningful" in block:
        return dict(block)
    conds = report.get("conditions")
    n = report.get("n_classes")
    if not isinstance(conds, Mapping) or not conds or not isinstance(n, int) or n < 1:
        return None
    return assess_chance(conds, n)


def not_meaningful(report: Mapping[str, Any], key: str) -> str | None:
    """Why the headline ``key`` of ``report`` is not meaningful, or ``None`` when it is."""
    block = chance_of(report)
    if block is None:
        return None
    return block["not_meaningful"].get(key)
