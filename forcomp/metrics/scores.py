"""The headline formulas of the bias metrics and their paired bootstrap intervals.

Each formula takes ``{condition name: accuracy tensor}`` (0-d for the point estimate, ``(R,)`` for
bootstrap resamples) so the same code gives the score and its interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

from forcomp.metrics.grids import CENTER_CELL, CORNER_CELLS, EDGE_CELLS


def _finite(t: Tensor) -> Tensor:
    return torch.where(torch.isfinite(t), t, torch.full_like(t, float("nan")))


def background_robustness(acc: Mapping[str, Tensor]) -> Tensor:
    """``acc(all) / acc(same)``."""
    return _finite(acc["bg=all"] / acc["bg=same"])


def background_robustness_orig(acc: Mapping[str, Tensor]) -> Tensor:
    """The same ratio with ``acc(orig)`` as denominator."""
    return _finite(acc["bg=all"] / acc["bg=orig"])


def bg_gap(acc: Mapping[str, Tensor]) -> Tensor:
    """``acc(same) − acc(all)`` in percentage points."""
    return 100.0 * (acc["bg=same"] - acc["bg=all"])


def _cells(acc: Mapping[str, Tensor], cells: Iterable[int]) -> Tensor:
    return torch.stack([acc[f"nonant={k}"] for k in cells]).mean(0)


def center_bias(acc: Mapping[str, Tensor]) -> Tensor:
    """``1 − mean(acc over the 8 outer cells) / acc(center)``."""
    outer = [k for k in range(9) if k != CENTER_CELL]
    return _finite(1.0 - _cells(acc, outer) / acc[f"nonant={CENTER_CELL}"])


def corner_bias(acc: Mapping[str, Tensor]) -> Tensor:
    return _finite(1.0 - _cells(acc, CORNER_CELLS) / acc[f"nonant={CENTER_CELL}"])


def edge_bias(acc: Mapping[str, Tensor]) -> Tensor:
    return _finite(1.0 - _cells(acc, EDGE_CELLS) / acc[f"nonant={CENTER_CELL}"])


def _size_names(acc: Mapping[str, Tensor], side: str) -> list[str]:
    factors = [(float(n.split("=", 1)[1]), n) for n in acc if n.startswith("size=")]
    return [n for f, n in factors if (f < 1.0 if side == "small" else f > 1.0)]


def size_bias(acc: Mapping[str, Tensor]) -> Tensor:
    """``1 − mean(acc over f < 1) / acc(f = 1)`` (NaN for a ladder without a factor below 1)."""
    names = _size_names(acc, "small")
    if not names:
        return torch.full_like(acc["size=1"], float("nan"))
    return _finite(1.0 - torch.stack([acc[n] for n in names]).mean(0) / acc["size=1"])


def size_bias_large(acc: Mapping[str, Tensor]) -> Tensor:
    """``1 − mean(acc over f > 1) / acc(f = 1)`` (negative: larger objects are recognised better)."""
    names = _size_names(acc, "large")
    if not names:
        return torch.full_like(acc["size=1"], float("nan"))
    return _finite(1.0 - torch.stack([acc[n] for n in names]).mean(0) / acc["size=1"])


HEADLINES: dict[str, Callable[[Mapping[str, Tensor]], Tensor]] = {
    "accuracy": lambda acc: acc["bg=orig"],
    "background_robustness": background_robustness,
    "background_robustness_orig": background_robustness_orig,
    "bg_gap": bg_gap,
    "center_bias": center_bias,
    "center_bias_corners": corner_bias,
    "center_bias_edges": edge_bias,
    "size_bias": size_bias,
    "size_bias_large": size_bias_large,
}


# ---------------------------------------------------------------- bootstrap


def _quantiles(values: Tensor) -> list[float]:
    v = values[torch.isfinite(values)].double()
    if v.numel() == 0:
        return [float("nan"), float("nan")]
    q = torch.quantile(v, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def paired_bootstrap(
    correct: Mapping[str, Tensor],
    stats: Mapping[str, Callable[[Mapping[str, Tensor]], Tensor]],
    *,
    resamples: int = 1000,
    generator: torch.Generator,
    chunk_elems: int = 4_000_000,
) -> dict[str, list[float]]:
    """Percentile 95% intervals of statistics of per-condition accuracies, resampling images jointly.

    Args:
        correct: ``{condition: (N,) bool}``, all over the same N items in the same order.
        stats: ``{name: f(acc)}`` where ``acc`` maps condition → ``(R,)`` resampled accuracies.
        resamples: Number of bootstrap resamples R.
        generator: Source of the resampling indices (CPU).
        chunk_elems: Bound on the index tensor's size (resamples are drawn in chunks).

    Returns:
        ``{name: [low, high]}`` (NaN where a statistic is undefined in every resample).
    """
    names = list(correct)
    mat = torch.stack([correct[n].double().cpu() for n in names])  # (C, N), float64 like the point estimates
    n = mat.shape[1]
    if n == 0:
        return {k: [float("nan"), float("nan")] for k in stats}
    per_chunk = max(1, min(resamples, chunk_elems // n))
    accs: list[Tensor] = []
    done = 0
    while done < resamples:
        r = min(per_chunk, resamples - done)
        idx = torch.randint(0, n, (r, n), generator=generator)
        # counts[r, i] = how often item i is in resample r; acc = counts @ correct / n
        counts = torch.zeros(r, n, dtype=torch.float64).scatter_add_(
            1, idx, torch.ones(r, n, dtype=torch.float64)
        )
        accs.append(counts @ mat.T / n)  # (r, C)
        done += r
    boot = torch.cat(accs)  # (R, C)
    acc = {name: boot[:, i] for i, name in enumerate(names)}
    return {k: _quantiles(f(acc)) for k, f in stats.items()}


def bootstrap_mean(values: Tensor, *, resamples: int = 1000, generator: torch.Generator) -> list[float]:
    """Percentile 95% interval of the mean of ``values`` (NaNs dropped first)."""
    v = values[torch.isfinite(values)].double().cpu()
    n = v.numel()
    if n == 0:
        return [float("nan"), float("nan")]
    means = []
    per_chunk = max(1, min(resamples, 4_000_000 // n))
    done = 0
    while done < resamples:
        r = min(per_chunk, resamples - done)
        idx = torch.randint(0, n, (r, n), generator=generator)
        means.append(v[idx].mean(1))
        done += r
    return _quantiles(torch.cat(means))
