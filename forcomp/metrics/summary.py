"""Build the report dict (``report.json``'s schema) from per-image results of an evaluation run."""

from __future__ import annotations

import hashlib
import math
import operator
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from forcomp.metrics.chance import REFERENCE, assess_chance
from forcomp.metrics.grids import CENTER_CELL, CORNER_CELLS, EDGE_CELLS, EvaluationGrid
from forcomp.metrics.options import EvaluateOptions
from forcomp.metrics.scores import HEADLINES, bootstrap_mean, paired_bootstrap

SCHEMA = "forcomp.bias_report/1"


def _f(t: Tensor | float) -> float:
    v = float(t)
    return v if math.isfinite(v) else float("nan")


def build_report(
    *,
    correct: dict[str, Tensor],
    focus: dict[str, Tensor],
    methods: tuple[str, ...],
    unavailable: dict[str, str],
    grid: EvaluationGrid,
    seed: int,
    bootstrap: int,
    n_classes: int | None = None,
    label_counts: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The bias report dict (without model/cache identity, which the caller adds).

    Args:
        correct: ``{condition: (N,) bool}`` per-image correctness, paired over the same images.
        focus: ``{method: (N,) float}`` per-image focus (NaN where a map was all zero).
        methods: Attribution methods; the first is the headline.
        unavailable: ``{method: reason}`` for methods that did not apply to the model.
        grid: The conditions that were run.
        seed: Seeds the bootstrap.
        bootstrap: Resamples per interval.
        n_classes: Classes the prediction ranges over; given, the report gets a ``chance`` block and
            every headline a ``meaningful`` flag (:mod:`forcomp.metrics.chance`).
        label_counts: Evaluated images per class (the majority share in the chance level).
    """
    # float64 throughout: float32 turns 5/12 into 0.4166666567 and equal grids into -1.19e-07 scores
    acc = {
        name: c.double().mean() if c.numel() else torch.tensor(float("nan"), dtype=torch.float64)
        for name, c in correct.items()
    }
    point = {k: _f(f(acc)) for k, f in HEADLINES.items()}
    g = torch.Generator().manual_seed(seed)
    ci = paired_bootstrap(
        correct,
        {**HEADLINES, **{n: operator.itemgetter(n) for n in correct}},
        resamples=bootstrap,
        generator=g,
    )
    n = len(next(iter(correct.values())))
    a = {k: _f(v) for k, v in acc.items()}

    conditions = {c.name: {**c.to_dict(), "accuracy": a[c.name], "ci95": ci[c.name]} for c in grid}
    bg = {m: a[f"bg={m}"] for m in ("orig", "same", "all")}
    grid3 = [[a[f"nonant={3 * r + c}"] for c in range(3)] for r in range(3)]
    curve = {c.name.split("=", 1)[1]: a[c.name] for c in grid.size}
    small = [v for k, v in curve.items() if float(k) < 1.0]
    large = [v for k, v in curve.items() if float(k) > 1.0]

    method_reports: dict[str, dict[str, Any]] = {}
    for m in methods:
        vals = focus.get(m, torch.zeros(0))
        valid = vals[torch.isfinite(vals)]
        if m in unavailable or valid.numel() == 0:
            method_reports[m] = {
                "score": float("nan"),
                "ci95": [float("nan"), float("nan")],
                "n_valid": int(valid.numel()),
                "unavailable": unavailable.get(m, "no image had a non-zero attribution map"),
            }
            continue
        method_reports[m] = {
            "score": float(valid.double().mean()),
            "ci95": bootstrap_mean(vals, resamples=bootstrap, generator=g),
            "median": float(valid.double().median()),
            "n_valid": int(valid.numel()),
        }
    head = methods[0]

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "accuracy": point["accuracy"],
        "accuracy_ci95": ci["accuracy"],
        "background_robustness": {
            "score": point["background_robustness"],
            "ci95": ci["background_robustness"],
            "formula": "acc(all) / acc(same)",
            "accuracy": bg,
            "ratio_all_over_orig": point["background_robustness_orig"],
            "ratio_all_over_orig_ci95": ci["background_robustness_orig"],
            "n_images": n,
        },
        "bg_gap": {
            "score": point["bg_gap"],
            "ci95": ci["bg_gap"],
            "unit": "percentage points",
            "formula": "100 * (acc(same) - acc(all))",
            "accuracy": {"same": bg["same"], "all": bg["all"]},
            "n_images": n,
        },
        "foreground_focus": {
            "score": method_reports[head]["score"],
            "ci95": method_reports[head]["ci95"],
            "method": head,
            "formula": "mean over images of (sum(A*M) / sum(A)) / (sum(M) / |image|)",
            "condition": grid.focus.name,
            "methods": method_reports,
            "n_images": n,
        },
        "center_bias": {
            "score": point["center_bias"],
            "ci95": ci["center_bias"],
            "formula": "1 - mean(acc over the 8 outer cells) / acc(center cell)",
            "grid": grid3,
            "center": a[f"nonant={CENTER_CELL}"],
            "corners": float(sum(a[f"nonant={k}"] for k in CORNER_CELLS) / 4),
            "edges": float(sum(a[f"nonant={k}"] for k in EDGE_CELLS) / 4),
            "corner_score": point["center_bias_corners"],
            "corner_score_ci95": ci["center_bias_corners"],
            "edge_score": point["center_bias_edges"],
            "edge_score_ci95": ci["center_bias_edges"],
            "background": "same",
            "n_images": n,
        },
        "size_bias": {
            "score": point["size_bias"],
            "ci95": ci["size_bias"],
            "formula": "1 - mean(acc over f < 1) / acc(f = 1)",
            "curve": curve,
            "reference": curve["1"],
            "small_mean": float(sum(small) / len(small)) if small else float("nan"),
            "large_mean": float(sum(large) / len(large)) if large else float("nan"),
            "large_score": point["size_bias_large"],
            "large_score_ci95": ci["size_bias_large"],
            "large_formula": "1 - mean(acc over f > 1) / acc(f = 1)",
            "background": "same",
            "n_images": n,
        },
        "conditions": conditions,
        "bootstrap": {"resamples": bootstrap, "interval": "percentile 95%", "paired_over_images": True},
    }
    if n_classes is not None:
        mark_chance(report, assess_chance(conditions, n_classes, label_counts=label_counts))
    return report


def mark_chance(report: dict[str, Any], chance: dict[str, Any]) -> None:
    """Put the ``chance`` block at the top of ``report`` and flag each headline (numbers kept)."""
    flagged = chance["not_meaningful"]
    report["accuracy_at_chance"] = "accuracy" in flagged
    for key in REFERENCE:
        if key == "accuracy" or not isinstance(report.get(key), dict):
            continue
        report[key]["meaningful"] = key not in flagged
        report[key].pop("not_meaningful", None)
        if key in flagged:
            report[key]["not_meaningful"] = flagged[key]
    rest = {k: v for k, v in report.items() if k not in ("schema", "chance")}
    report.clear()
    report.update({"schema": SCHEMA, "chance": chance, **rest})


def cache_identity(cache: Path, split: str, ds: Any) -> dict[str, Any]:
    """Path, split, classes and a fingerprint of a cache's split (hash of its ratios file)."""
    from forcomp.cache.layout import CacheLayout

    layout = CacheLayout(cache, split)
    digest = None
    if layout.ratios_path.is_file():
        digest = hashlib.sha256(layout.ratios_path.read_bytes()).hexdigest()[:16]
    return {
        "path": str(Path(cache).resolve()),
        "split": split,
        "n_items": len(ds),
        "n_classes": len(ds.classes),
        "classes": list(ds.classes) if len(ds.classes) <= 50 else None,
        "ratios_sha256_16": digest,
    }


def absolute_path(path: str | os.PathLike[str] | None) -> str | None:
    """``path`` made absolute against the working directory (None stays None)."""
    return None if path is None else str(Path(path).resolve())


def describe_run(
    options: EvaluateOptions,
    *,
    n_images: int,
    n_classes: int,
    size: int | tuple[int, int],
    norm: tuple[Sequence[float], Sequence[float]] | None,
    gradcam_layer: str | None,
    class_indices: list[int] | None,
    n_outputs: int,
    prediction: str,
    model: dict[str, Any],
    cache: dict[str, Any],
    seconds: float,
    device: str,
) -> dict[str, Any]:
    """The report's provenance fields: what was evaluated, how, with which settings and software.

    File paths are recorded absolute, so a report read from another working directory (or by
    ``forcomp compare`` elsewhere) still names the files that were used.
    """
    from forcomp.version import __version__

    model = {**model, "weights": absolute_path(model.get("weights"))} if "weights" in model else model
    settings = options.to_dict()
    if "weights_dir" in settings:
        settings["weights_dir"] = absolute_path(settings["weights_dir"])

    return {
        "n_images": n_images,
        "n_classes": n_classes,
        "seed": options.seed,
        "split": options.split,
        "size": list(size) if isinstance(size, tuple) else size,
        "normalize": None if norm is None else {"mean": list(norm[0]), "std": list(norm[1])},
        "methods": list(options.methods),
        "gradcam_layer": gradcam_layer,
        "class_indices": class_indices,
        "n_model_outputs": n_outputs,
        "prediction": prediction,
        "limit": options.limit,
        "recombine": dict(options.recombine or {}),
        "options": settings,
        "model": model,
        "cache": cache,
        "forcomp_version": __version__,
        "runtime": {
            "seconds": round(seconds, 3),
            "device": device,
            "batch_size": options.batch_size,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
