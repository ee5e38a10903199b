"""Write a bias report's files (``report.json``, ``report.md``, PNG plots) and compare several reports."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forcomp.metrics.plots import plot_comparison, render_report_plots
from forcomp.metrics.report import (
    HEADLINE_ROWS,
    REPORT_JSON,
    REPORT_MD,
    chance_warning,
    flag,
    format_markdown,
    format_number,
    headline,
    json_ready,
    load_report,
)

log = logging.getLogger(__name__)


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike[str], examples: Any = None, *, plots: bool = True
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with matplotlib) the PNG plots into ``out_dir``.

    Args:
        report: The dict from :func:`forcomp.evaluate`.
        out_dir: Created if missing.
        examples: :class:`~forcomp.metrics.bias.AttributionExamples` for the attribution strip.
        plots: Also render PNGs.

    Returns:
        ``{"json": path, "markdown": path, <plot name>: path, ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots:
        written.update(render_report_plots(report, out, examples))
    json_path = out / REPORT_JSON
    json_path.write_text(json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out / REPORT_MD
    md_path.write_text(format_markdown(report, [str(p) for p in written.values()]), encoding="utf-8")
    log.info("wrote %s and %s", json_path, md_path)
    return {"json": json_path, "markdown": md_path, **written}


def refresh_report(report_dir: str | os.PathLike[str], *, plots: bool = True) -> dict[str, Path]:
    """Rewrite a report's files from its ``report.json`` with this version of forcomp, without the model.

    Adds what newer versions derive from the stored numbers (the ``chance`` block and the per-score
    ``meaningful`` flags), then writes ``report.json``, ``report.md`` and the plots that need only the
    numbers. The attribution strip needs the images and maps of a run, so an existing
    ``attribution_examples.png`` is kept as it is and still listed in ``report.md``.

    Returns:
        As :func:`write_report`.
    """
    from forcomp.metrics.chance import chance_of
    from forcomp.metrics.plots import PLOT_FILES
    from forcomp.metrics.summary import mark_chance

    out = Path(report_dir)
    report = load_report(out)
    chance = chance_of(report)
    if chance is not None:
        mark_chance(report, chance)
    written = write_report(report, out, plots=plots)
    strip = out / PLOT_FILES["attribution"]
    if plots and strip.is_file() and "attribution" not in written:
        written["attribution"] = strip
        figures = [str(p) for k, p in written.items() if k not in ("json", "markdown")]
        written["markdown"].write_text(format_markdown(report, figures), encoding="utf-8")
    return written


PLOT_SUFFIXES = (".png", ".svg", ".pdf")
COMPARE_PNG = "compare.png"


def compare(
    paths: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    names: Sequence[str] | None = None,
) -> str:
    """Headline scores of several reports side by side (a plain-text table); with ``out``, also a plot.

    Scores whose reference accuracy is not clearly above chance (:mod:`forcomp.metrics.chance`) are
    marked ``*`` and each such report gets a warning line above the table; reports written before
    that check existed are assessed from their per-condition intervals.

    Args:
        paths: Report directories (or ``report.json`` files).
        out: Write the comparison figure there (``.png``, ``.svg`` or ``.pdf``; a directory gets
            ``compare.png``). Without it nothing is written.
        names: Column names (default: each directory's name).

    Returns:
        Warning lines (if any), the table (one row per metric, one column per report, arrows saying
        which way is better) and a footnote for ``*``.

    Raises:
        ReportNotFoundError: A directory without ``report.json``.
        ValueError: ``names`` of the wrong length, or ``out`` with another suffix.
    """
    if not paths:
        raise ValueError("compare needs at least one report directory")
    plot_path = None if out is None else _plot_path(Path(out))
    reports = [load_report(p) for p in paths]
    cols = list(names) if names else [_run_name(Path(p)) for p in paths]
    if len(cols) != len(reports):
        raise ValueError(f"names must give one name per report ({len(reports)}), got {len(cols)}")
    width = max(12, *(len(c) for c in cols)) + 2
    label_w = max(len(label) for _, label, _, _ in HEADLINE_ROWS) + 4
    rows = [f"WARNING {c}: {w}" for c, r in zip(cols, reports, strict=True) if (w := chance_warning(r))]
    if rows:
        rows.append("")
    rows.append("".join([f"{'metric':<{label_w}}", *(f"{c:>{width}}" for c in cols)]))
    flagged = False
    for key, label, _, better in HEADLINE_ROWS:
        arrow = {True: " ↑", False: " ↓", None: ""}[better]
        cells = []
        for r in reports:
            score, _ci = headline(r, key)
            digits = 1 if key == "bg_gap" else 3
            mark = "*" if flag(r, key) else " "
            flagged |= mark == "*"
            cells.append(f"{format_number(score, digits) + mark:>{width}}")
        rows.append(f"{label + arrow:<{label_w}}" + "".join(cells))
    rows.append(
        f"{'images':<{label_w}}" + "".join(f"{str(r.get('n_images', 'n/a')) + ' ':>{width}}" for r in reports)
    )
    if flagged:
        rows.append(
            "* at chance (accuracy) or not meaningful: the accuracy it is measured against is not "
            "clearly above chance"
        )
    table = "\n".join(row.rstrip() for row in rows)
    if plot_path is not None:
        plot_comparison(reports, cols, plot_path)
        log.info("wrote %s", plot_path)
    return table


def _plot_path(out: Path) -> Path:
    if out.is_dir():
        return out / COMPARE_PNG
    if out.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(
            f"compare --out {out}: give a file ending in {', '.join(PLOT_SUFFIXES)} (or a directory, "
            f"which gets {COMPARE_PNG})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _run_name(p: Path) -> str:
    return (p.parent if p.is_file() or p.suffix == ".json" else p).name or str(p)
