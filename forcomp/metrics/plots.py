"""Report plots: center-bias heat map, size curve, background bars, attribution strip, and a
comparison of several reports.

Figures are drawn with matplotlib's object API (a :class:`~matplotlib.figure.Figure` on its own Agg
canvas), never through pyplot: writing the files leaves the caller's backend and pyplot state (a
notebook's inline figures, an interactive window) as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forcomp.metrics.classnames import display_name
from forcomp.metrics.report import denoise

PLOT_FILES = {
    "center_bias": "center_bias.png",
    "size_curve": "size_curve.png",
    "background": "background.png",
    "attribution": "attribution_examples.png",
}


def _figure(figsize: tuple[float, float]) -> Any:
    """A figure on its own Agg canvas, unknown to pyplot (no backend switch, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _colors() -> list[str]:
    import matplotlib

    return list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])


# Bar panels span at least this much around 0, so that differences of rounding size are not blown up
# to fill the axis (two equal models once showed bars of opposite sign on a 1e-7 axis).
MIN_BAR_SPAN = 0.1


def _nan(v: Any) -> float:
    """A plottable float: NaN for missing values, 0 for values below the noise floor (|v| < 1e-9)."""
    return denoise(float(v)) if isinstance(v, int | float) and v is not None else float("nan")


def _nm(block: dict[str, Any]) -> str:
    """`` (not meaningful)`` for a headline flagged by the chance check."""
    return " (not meaningful)" if block.get("meaningful") is False else ""


def _chance_level(report: dict[str, Any]) -> float:
    from forcomp.metrics.chance import chance_of

    block = chance_of(report)
    return float(block["level"]) if block else float("nan")


def _save(fig: Any, path: Path, *, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` to ``path``."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    return path


CHANCE_COLOR = "firebrick"


def _chance_line(ax: Any, level: float, *, x_text: float) -> None:
    """A dotted line at the chance accuracy, labelled "chance" (as on every accuracy axis)."""
    if not math.isfinite(level):
        return
    ax.axhline(level, color=CHANCE_COLOR, ls=":", lw=1)
    ax.text(x_text, level + 0.01, "chance", color=CHANCE_COLOR, fontsize=7, va="bottom")


def plot_center_bias(report: dict[str, Any], path: Path) -> Path:
    """3×3 heat map of accuracy with the object in each cell; the colour bar marks chance."""
    cb = report["center_bias"]
    grid = [[_nan(v) for v in row] for row in cb["grid"]]
    fig = _figure((3.8, 3.4))
    ax = fig.subplots()
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
    for r in range(3):
        for c in range(3):
            v = grid[r][c]
            ax.text(
                c,
                r,
                "n/a" if math.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                color="white" if not math.isnan(v) and v < 0.6 else "black",
                fontsize=11,
            )
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"accuracy by position\ncenter bias = {_nan(cb['score']):.3f}{_nm(cb)}", fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    level = _chance_level(report)
    if math.isfinite(level):
        bar.ax.axhline(level, color=CHANCE_COLOR, ls=":", lw=1.5)
        ax.set_xlabel(f"chance = {level:.2f} (dotted on the colour bar)", color=CHANCE_COLOR, fontsize=8)
    return _save(fig, path)


def plot_size_curve(report: dict[str, Any], path: Path) -> Path:
    """Accuracy versus object-area factor (log x axis), with the f = 1 reference marked."""
    sb = report["size_bias"]
    xs = [float(k) for k in sb["curve"]]
    ys = [_nan(v) for v in sb["curve"].values()]
    fig = _figure((4.6, 3.2))
    ax = fig.subplots()
    ax.plot(xs, ys, "o-", color="tab:blue")
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    _size_axis(ax, xs)
    _chance_line(ax, _chance_level(report), x_text=min(xs) if xs else 0.1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("object area factor f")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"size bias = {_nan(sb['score']):.3f}{_nm(sb)}", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_background(report: dict[str, Any], path: Path) -> Path:
    """Accuracy per background mode with bootstrap 95% error bars and the chance line."""
    modes = ("orig", "same", "all")
    conds = report.get("conditions", {})
    acc = [_nan(report["background_robustness"]["accuracy"][m]) for m in modes]
    lo, hi = [], []
    for m, a in zip(modes, acc, strict=True):
        ci = conds.get(f"bg={m}", {}).get("ci95") or [a, a]
        lo.append(max(0.0, a - _nan(ci[0])) if ci[0] is not None else 0.0)
        hi.append(max(0.0, _nan(ci[1]) - a) if ci[1] is not None else 0.0)
    fig = _figure((3.8, 3.2))
    ax = fig.subplots()
    ax.bar(modes, acc, yerr=[lo, hi], capsize=4, color=["tab:gray", "tab:green", "tab:orange"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 accuracy")
    br, gap = report["background_robustness"], report["bg_gap"]
    _chance_line(ax, _chance_level(report), x_text=-0.45)
    ax.set_title(
        f"background robustness = {_nan(br['score']):.3f}{_nm(br)}\n"
        f"BG-gap = {_nan(gap['score']):.1f} p.p.{_nm(gap)}",
        fontsize=10,
    )
    return _save(fig, path)


def plot_attribution_examples(examples: Any, path: Path, classes: Sequence[str] = ()) -> Path:
    """One row per example: image | mask | one attribution map per method (with its focus)."""
    methods = list(examples.maps)
    n = examples.images.shape[0]
    cols = 2 + len(methods)
    fig = _figure((1.9 * cols, 1.9 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        img = examples.images[i].clamp(0, 1).permute(1, 2, 0).numpy()
        label = int(examples.labels[i])
        name = display_name(classes[label]) if label < len(classes) else str(label)
        name = name if len(name) <= 30 else name[:29] + "…"
        axes[i][0].imshow(img)
        axes[i][0].set_title(name if i else f"image\n{name}", fontsize=8)
        axes[i][1].imshow(examples.masks[i].numpy(), cmap="gray", vmin=0, vmax=1)
        if i == 0:
            axes[i][1].set_title("mask", fontsize=8)
        for j, m in enumerate(methods):
            a = examples.maps[m][i]
            a = a / a.max() if float(a.max()) > 0 else a
            ax = axes[i][2 + j]
            ax.imshow(img, alpha=0.35)
            ax.imshow(a.numpy(), cmap="inferno", alpha=0.75, vmin=0, vmax=1)
            f = float(examples.focus[m][i])
            txt = f"focus {f:.2f}" if math.isfinite(f) else "focus n/a"
            ax.set_title(f"{m}\n{txt}" if i == 0 else txt, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    return _save(fig, path)


def render_report_plots(report: dict[str, Any], out: Path, examples: Any = None) -> dict[str, Path]:
    """Write all report plots into ``out``; returns ``{name: path}``."""
    out = Path(out)
    paths = {
        "center_bias": plot_center_bias(report, out / PLOT_FILES["center_bias"]),
        "size_curve": plot_size_curve(report, out / PLOT_FILES["size_curve"]),
        "background": plot_background(report, out / PLOT_FILES["background"]),
    }
    if examples is not None and examples.maps:
        classes = examples.classes or report.get("cache", {}).get("classes") or []
        paths["attribution"] = plot_attribution_examples(examples, out / PLOT_FILES["attribution"], classes)
    return paths


def _size_axis(ax: Any, factors: Sequence[float]) -> None:
    """Log x axis labelled with the size factors themselves (0.1 … 2), not powers of ten."""
    ax.set_xscale("log")
    ax.set_xticks(list(factors), [f"{f:g}" for f in factors])
    ax.minorticks_off()


# The comparison figure: 2 rows of 4 panels, 15 × 7.2 in at 100 dpi ≈ 1500 × 720 px (a laptop screen).
COMPARE_FIGSIZE = (15.0, 7.2)
COMPARE_DPI = 100
# Size curves of several models: one marker and line style each, so that one never hides another.
CURVE_MARKERS = ("o", "s", "^", "D", "v", "P")
CURVE_DASHES = ("-", "--", "-.", ":")


def plot_comparison(reports: Sequence[dict[str, Any]], names: Sequence[str], path: Path) -> Path:
    """Grouped bars of the headline scores (one panel per metric) plus the size curves, in two rows.

    Bars of scores that are not meaningful (their reference accuracy is at chance) are hatched and
    labelled "n.m."; an accuracy at chance is labelled "chance".
    """
    from forcomp.metrics.report import HEADLINE_ROWS, flag, headline

    fig = _figure(COMPARE_FIGSIZE)
    gs = fig.add_gridspec(2, 4)
    bar_axes = [fig.add_subplot(gs[i // 4, i % 4]) for i in range(len(HEADLINE_ROWS))]
    colors = _colors()
    for ax, (key, label, _, better) in zip(bar_axes, HEADLINE_ROWS, strict=True):
        vals, errs_lo, errs_hi, marks = [], [], [], []
        for r in reports:
            s, ci = headline(r, key)
            s = _nan(s)
            vals.append(s)
            ci = ci or []
            bounds = [_nan(c) for c in ci if isinstance(c, int | float)]
            ok = bool(ci) and len(bounds) == len(ci) and math.isfinite(s)
            errs_lo.append(max(0.0, s - bounds[0]) if ok else 0.0)
            errs_hi.append(max(0.0, bounds[1] - s) if ok else 0.0)
            marks.append(flag(r, key))
        bars = ax.bar(
            range(len(reports)),
            vals,
            yerr=[errs_lo, errs_hi],
            capsize=3,
            color=[colors[i % len(colors)] for i in range(len(reports))],
        )
        ax.set_xticks(range(len(reports)), names, rotation=20, ha="right", fontsize=10)
        ax.set_title(label + {True: " ↑", False: " ↓", None: ""}[better], fontsize=11)
        ax.tick_params(axis="y", labelsize=9)
        ax.axhline(0, color="black", lw=0.5)
        lo, hi = ax.get_ylim()
        lo, hi = min(lo, -MIN_BAR_SPAN / 2), max(hi, MIN_BAR_SPAN / 2)
        ax.set_ylim(lo, hi)
        ax.set_xlim(-0.6, len(reports) - 0.4)  # also when a bar is NaN (not drawn, not autoscaled)
        for bar, mark, v in zip(bars, marks, vals, strict=True):
            if not mark:
                continue
            bar.set_hatch("//")
            bar.set_alpha(0.45)
            y = v if math.isfinite(v) else 0.0
            if y >= 0:  # above the bar's end, or inside it when that is near the frame
                dy = -14 if y > lo + 0.85 * (hi - lo) else 3
            else:
                dy = 4 if y < lo + 0.15 * (hi - lo) else -12
            ax.annotate(
                ("chance" if mark == "at chance" else "n.m.") + ("" if math.isfinite(v) else " (n/a)"),
                (bar.get_x() + bar.get_width() / 2, y),
                xytext=(0, dy),
                textcoords="offset points",
                ha="center",
                fontsize=9,
                color=CHANCE_COLOR,
            )
    ax = fig.add_subplot(gs[1, 2:])
    factors: set[float] = set()
    for i, (r, name) in enumerate(zip(reports, names, strict=True)):
        curve = r.get("size_bias", {}).get("curve", {})
        xs = [float(k) for k in curve]
        factors.update(xs)
        # equal curves stay visible: each model has its own marker and dash, drawn see-through
        ax.plot(
            xs,
            [_nan(v) for v in curve.values()],
            marker=CURVE_MARKERS[i % len(CURVE_MARKERS)],
            ls=CURVE_DASHES[i % len(CURVE_DASHES)],
            ms=7 - 1.5 * (i % 3),
            lw=1.5,
            alpha=0.75,
            color=colors[i % len(colors)],
            label=name,
        )
    if factors:
        _size_axis(ax, sorted(factors))
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("object area factor f", fontsize=10)
    ax.set_ylabel("top-1 accuracy", fontsize=10)
    ax.set_title("accuracy vs object size", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    if any(flag(r, key) for r in reports for key, *_ in HEADLINE_ROWS):
        fig.text(
            0.5,
            0.005,
            "hatched, n.m.: not meaningful (its reference accuracy is not clearly above chance); "
            "chance: accuracy at chance level",
            ha="center",
            fontsize=9,
            color=CHANCE_COLOR,
        )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, path, dpi=COMPARE_DPI, tight=False)  # a fixed, known pixel size
