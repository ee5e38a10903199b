"""The bias report as data and text: headline rows, number formatting, Markdown, loading ``report.json``.

No plotting and no file writing here: :mod:`forcomp.metrics.plots` draws from this module, and
:mod:`forcomp.metrics.output` writes files using both (report data → plots → output, one way).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forcomp.errors import ForcompError
from forcomp.metrics.chance import chance_of, not_meaningful

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# (key, label, how to read, higher is better?)
HEADLINE_ROWS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("accuracy", "Accuracy (orig)", "top-1 on each object's own background", True),
    (
        "background_robustness",
        "Background robustness",
        "acc(all)/acc(same); 1 = background class irrelevant",
        True,
    ),
    ("bg_gap", "BG-gap [p.p.]", "acc(same) − acc(all); 0 = no reliance on background", False),
    (
        "foreground_focus",
        "Foreground focus",
        "attribution share on object / object's area share; 1 = chance",
        True,
    ),
    ("center_bias", "Center bias", "1 − mean(outer cells)/center; 0 = position irrelevant", False),
    ("size_bias", "Size bias", "1 − mean(acc f<1)/acc(f=1); 0 = small objects fine", False),
)


class ReportNotFoundError(ForcompError, FileNotFoundError):
    """A directory given to ``compare`` holds no ``report.json``."""


def json_ready(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → ``None``, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


def headline(report: dict[str, Any], key: str) -> tuple[float | None, list[float | None] | None]:
    """``(score, ci95)`` of a headline key (``accuracy`` is a bare float)."""
    value = report.get(key)
    if key == "accuracy":
        return _num(value), report.get("accuracy_ci95")
    if isinstance(value, dict):
        return _num(value.get("score")), value.get("ci95")
    return None, None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


# Differences below this are rounding noise, not measurements: shown (and plotted) as 0.
NOISE_FLOOR = 1e-9


def denoise(v: float) -> float:
    """``v`` with ``|v| < NOISE_FLOOR`` set to 0 (NaN unchanged)."""
    return 0.0 if abs(v) < NOISE_FLOOR else v


def format_number(v: Any, digits: int = 3) -> str:
    """``v`` rounded to ``digits`` decimals for the tables; ``"n/a"`` for a missing or undefined number."""
    v = _num(v)
    return "n/a" if v is None else f"{round(denoise(v), digits) + 0.0:.{digits}f}"  # + 0.0: no "-0.000"


def _fmt_ci(ci: Any, digits: int = 3) -> str:
    if not ci or any(_num(c) is None for c in ci):
        return "n/a"
    return f"[{format_number(ci[0], digits)}, {format_number(ci[1], digits)}]"


def chance_warning(report: dict[str, Any]) -> str | None:
    """The report's chance-level warning (``None`` when every headline is meaningful)."""
    block = chance_of(report)
    return None if block is None else block.get("warning")


def flag(report: dict[str, Any], key: str) -> str:
    """``""``, ``"at chance"`` (accuracy) or ``"not meaningful"`` for a headline ``key``."""
    if not_meaningful(report, key) is None:
        return ""
    return "at chance" if key == "accuracy" else "not meaningful"


def format_markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The human-readable report."""
    m = report.get("model", {})
    c = report.get("cache", {})
    warning = chance_warning(report)
    lines = ["# forcomp bias report", ""]
    if warning:
        lines += [
            f"> **Warning: {warning}.** The flagged scores keep their numbers, but they compare "
            'chance-level guesses (a model that always answers one class scores a "perfect" background '
            "robustness of 1 and center/size bias of 0); do not read them as measurements.",
            "",
        ]
    key = f", checkpoint entry `{m['checkpoint_key']}`" if m.get("checkpoint_key") else ""
    lines += [
        f"- model: `{m.get('spec')}` ({m.get('source')}, weights: `{m.get('weights')}`{key})",
        f"- cache: `{c.get('path')}` split `{report.get('split')}` — {report.get('n_images')} images, "
        f"{report.get('n_classes')} classes",
        f"- seed {report.get('seed')}, input size {report.get('size')}, normalize {report.get('normalize')}, "
        f"forcomp {report.get('forcomp_version')}",
        *([f"- prediction: {report['prediction']}"] if report.get("prediction") else []),
        "",
        "## Headline scores (bootstrap 95% interval)",
        "",
        "| metric | score | 95% CI | how to read |",
        "|---|---|---|---|",
    ]
    for hkey, label, how, _ in HEADLINE_ROWS:
        score, ci = headline(report, hkey)
        digits = 1 if hkey == "bg_gap" else 3
        mark = flag(report, hkey)
        cell = f"{format_number(score, digits)} ({mark})" if mark else format_number(score, digits)
        lines.append(f"| {label} | {cell} | {_fmt_ci(ci, digits)} | {how} |")
    block = chance_of(report)
    if block is not None:
        at = block.get("conditions_at_chance") or []
        lines += [
            "",
            f"Chance level {block['level']:.3f} (1/{block['n_classes']} classes"
            + (
                f", majority class share {block['majority_share']:.3f}"
                if block.get("majority_share") is not None
                else ""
            )
            + "). Conditions whose accuracy is not clearly above it (95% interval reaches it): "
            + (", ".join(f"`{n}`" for n in at) if at else "none")
            + ".",
        ]
        for hkey, why in block.get("not_meaningful", {}).items():
            lines.append(f"- {hkey}: {why}")

    br = report.get("background_robustness", {})
    acc = br.get("accuracy", {})
    lines += [
        "",
        "## Background robustness and BG-gap",
        "",
        f"acc(orig) = {format_number(acc.get('orig'))}, acc(same) = {format_number(acc.get('same'))}, "
        f"acc(all) = {format_number(acc.get('all'))}.",
        "Ratio acc(all)/acc(orig) (alternative denominator) = "
        f"{format_number(br.get('ratio_all_over_orig'))}.",
    ]
    ff = report.get("foreground_focus", {})
    lines += [
        "",
        f"## Foreground focus (condition `{ff.get('condition')}`; headline method `{ff.get('method')}`)",
        "",
    ]
    lines += ["| method | mean focus | 95% CI | median | images with a map |", "|---|---|---|---|---|"]
    for name, r in ff.get("methods", {}).items():
        if r.get("unavailable"):
            lines.append(f"| {name} | n/a | n/a | n/a | {r.get('n_valid')} — {r['unavailable']} |")
        else:
            lines.append(
                f"| {name} | {format_number(r.get('score'))} | {_fmt_ci(r.get('ci95'))} | "
                f"{format_number(r.get('median'))} | {r.get('n_valid')} |"
            )
    cb = report.get("center_bias", {})
    lines += ["", "## Center bias: accuracy with the object in each cell (background `same`)", ""]
    lines += ["| | left | middle | right |", "|---|---|---|---|"]
    for name, row in zip(("top", "middle", "bottom"), cb.get("grid", []), strict=False):
        lines.append(f"| {name} | " + " | ".join(format_number(v) for v in row) + " |")
    lines += [
        "",
        f"center {format_number(cb.get('center'))}, corners {format_number(cb.get('corners'))} "
        f"(score {format_number(cb.get('corner_score'))}), "
        f"edge-middles {format_number(cb.get('edges'))} (score {format_number(cb.get('edge_score'))}).",
    ]
    sb = report.get("size_bias", {})
    curve = sb.get("curve", {})
    lines += ["", "## Size bias: accuracy versus object-area factor (background `same`)", ""]
    lines += ["| factor | " + " | ".join(curve) + " |", "|---" * (len(curve) + 1) + "|"]
    lines.append("| accuracy | " + " | ".join(format_number(v) for v in curve.values()) + " |")
    lines += [
        "",
        f"mean below 1: {format_number(sb.get('small_mean'))}; at 1: {format_number(sb.get('reference'))}; "
        "mean above 1: "
        f"{format_number(sb.get('large_mean'))} (large-side score {format_number(sb.get('large_score'))}, "
        f"95% CI {_fmt_ci(sb.get('large_score_ci95'))}).",
    ]
    conds = report.get("conditions", {})
    if conds:
        lines += ["", "## All conditions", "", "| condition | accuracy | 95% CI |", "|---|---|---|"]
        for k, v in conds.items():
            lines.append(f"| {k} | {format_number(v.get('accuracy'))} | {_fmt_ci(v.get('ci95'))} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report from a directory (its ``report.json``) or a JSON file."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() != ".json":
        p = p / REPORT_JSON
    if not p.is_file():
        raise ReportNotFoundError(f"no report at {p}; run `forcomp evaluate ... --out {p.parent}` first")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ForcompError(f"{p} is not valid JSON: {e}") from e
