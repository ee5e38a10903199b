"""``forcomp.metrics.scores``: every headline formula of the bias metrics, on hand-made accuracies and against
written-out references with distinct per-condition numbers, batched over bootstrap resamples; the paired
bootstrap and the mean bootstrap against one-shot re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fake_results import fake_results, random_hits

from forcomp.metrics.grids import EvaluationGrid
from forcomp.metrics.scores import (
    HEADLINES,
    background_robustness,
    background_robustness_orig,
    bg_gap,
    bootstrap_mean,
    center_bias,
    corner_bias,
    edge_bias,
    paired_bootstrap,
    size_bias,
    size_bias_large,
)

FACTORS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)  # the size ladder of the bias metrics


CORNERS, EDGES, CENTER = (0, 2, 6, 8), (1, 3, 5, 7), 4  # 3x3 row-major, as the report numbers the cells


def t(v: float) -> torch.Tensor:
    return torch.tensor(v)


def test_formulas() -> None:
    acc = {c.name: t(0.8) for c in EvaluationGrid.default()}
    acc.update({"bg=same": t(0.8), "bg=all": t(0.6)})
    assert background_robustness(acc).item() == pytest.approx(0.75)
    assert bg_gap(acc).item() == pytest.approx(20.0)
    acc.update({f"nonant={k}": t(0.4) for k in range(9)})
    acc["nonant=4"] = t(0.8)
    assert center_bias(acc).item() == pytest.approx(0.5)
    acc.update(
        {"size=0.1": t(0.0), "size=0.2": t(0.2), "size=0.3": t(0.4), "size=0.5": t(0.6), "size=0.7": t(0.8)}
    )
    acc.update({"size=1": t(1.0), "size=1.5": t(1.0), "size=2": t(0.9)})
    assert size_bias(acc).item() == pytest.approx(1 - 0.4)
    assert size_bias_large(acc).item() == pytest.approx(1 - 0.95)
    acc["size=1"] = t(0.0)
    assert math.isnan(size_bias(acc).item())  # undefined, not inf


def test_paired_bootstrap_contains_score_and_is_deterministic() -> None:
    correct = fake_results()
    acc = {k: v.float().mean() for k, v in correct.items()}
    ci1 = paired_bootstrap(correct, HEADLINES, resamples=500, generator=torch.Generator().manual_seed(0))
    ci2 = paired_bootstrap(correct, HEADLINES, resamples=500, generator=torch.Generator().manual_seed(0))
    assert ci1 == ci2
    for name, f in HEADLINES.items():
        lo, hi = ci1[name]
        assert lo <= float(f(acc)) <= hi, name
        assert hi > lo


def test_paired_bootstrap_pairs_conditions() -> None:
    # Two identical conditions: their ratio is exactly 1 in every resample (pairing), so the CI is [1, 1].
    c = random_hits(100, 0.7, torch.Generator().manual_seed(3))
    ci = paired_bootstrap(
        {"a": c, "b": c.clone()},
        {"r": lambda a: a["a"] / a["b"]},
        resamples=200,
        generator=torch.Generator().manual_seed(0),
    )
    assert ci["r"] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_bootstrap_mean_ignores_nan() -> None:
    v = torch.tensor([1.0, 2.0, float("nan"), 3.0])
    lo, hi = bootstrap_mean(v, resamples=300, generator=torch.Generator().manual_seed(0))
    assert 1.0 <= lo <= 2.0 <= hi <= 3.0


def _size_name(f: float) -> str:
    return f"size={f:g}"


def _accuracies(values: np.ndarray) -> dict[str, torch.Tensor]:
    """Conditions → accuracies from a ``(20, ...)`` array: orig, same, all, nonant 0..8, the ladder."""
    names = (
        ["bg=orig", "bg=same", "bg=all"] + [f"nonant={k}" for k in range(9)] + list(map(_size_name, FACTORS))
    )
    return {n: torch.as_tensor(v, dtype=torch.float64) for n, v in zip(names, values, strict=True)}


def _reference(v: np.ndarray) -> dict[str, float]:
    """The headline formulas written out on plain floats (row layout of :func:`_accuracies`)."""
    orig, same, all_, cells, sizes = v[0], v[1], v[2], v[3:12], dict(zip(FACTORS, v[12:], strict=True))
    outer = [cells[k] for k in range(9) if k != CENTER]
    return {
        "accuracy": orig,
        "background_robustness": all_ / same,
        "background_robustness_orig": all_ / orig,
        "bg_gap": 100 * (same - all_),
        "center_bias": 1 - sum(outer) / 8 / cells[CENTER],
        "center_bias_corners": 1 - sum(cells[k] for k in CORNERS) / 4 / cells[CENTER],
        "center_bias_edges": 1 - sum(cells[k] for k in EDGES) / 4 / cells[CENTER],
        "size_bias": 1 - np.mean([a for f, a in sizes.items() if f < 1]) / sizes[1.0],
        "size_bias_large": 1 - np.mean([a for f, a in sizes.items() if f > 1]) / sizes[1.0],
    }


def test_every_headline_matches_the_written_out_formula() -> None:
    v = np.linspace(0.31, 0.97, 20)[np.random.default_rng(5).permutation(20)]  # all distinct
    acc = _accuracies(v)
    ref = _reference(v)
    assert set(HEADLINES) == set(ref)
    for name, f in HEADLINES.items():
        assert float(f(acc)) == pytest.approx(ref[name], rel=1e-12), name


def test_headlines_are_computed_per_resample() -> None:
    """The bootstrap passes ``(R,)`` accuracies: each resample's score is that resample's formula."""
    rng = np.random.default_rng(0)
    v = rng.uniform(0.2, 1.0, size=(20, 7))
    acc = _accuracies(v)
    for name, f in HEADLINES.items():
        out = f(acc)
        assert out.shape == (7,) and out.dtype == torch.float64, name
        expected = [_reference(v[:, r])[name] for r in range(7)]
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, err_msg=name)


def test_undefined_scores_are_nan_not_inf() -> None:
    v = np.full(20, 0.5)
    v[1] = v[0] = 0.0  # acc(same) = acc(orig) = 0
    v[3 + CENTER] = 0.0
    acc = _accuracies(v)
    for f in (background_robustness, background_robustness_orig, center_bias, corner_bias, edge_bias):
        assert math.isnan(float(f(acc))), f.__name__


def test_size_bias_large_without_large_factors_is_nan_shaped_like_the_input() -> None:
    acc = {_size_name(f): torch.full((3,), 0.5, dtype=torch.float64) for f in (0.5, 1.0)}
    out = size_bias_large(acc)
    assert out.shape == (3,) and out.dtype == torch.float64 and torch.isnan(out).all()
    assert float(size_bias(acc)[0]) == 0.0


def _one_shot_paired(correct: dict[str, torch.Tensor], stat, resamples: int, seed: int) -> list[float]:
    """The paired bootstrap in its plainest form: one (R, N) draw of indices, then numpy quantiles."""
    n = next(iter(correct.values())).numel()
    idx = torch.randint(0, n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    acc = {k: v.double()[idx].mean(1) for k, v in correct.items()}
    values = stat(acc).numpy()
    values = values[np.isfinite(values)]
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def _results(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "bg=same": torch.rand(n, generator=g) < 0.8,
        "bg=all": torch.rand(n, generator=g) < 0.5,
    }


@pytest.mark.parametrize("chunk_elems", [4_000_000, 10, 3], ids=["one-chunk", "chunks-of-2", "chunks-of-1"])
def test_paired_bootstrap_equals_a_one_shot_reference(chunk_elems: int) -> None:
    """Resamples drawn in chunks (a memory bound) are the same resamples as one draw: chunking must
    neither change nor add nor drop any."""
    correct = _results(4)
    got = paired_bootstrap(
        correct,
        {"r": background_robustness},
        resamples=7,
        generator=torch.Generator().manual_seed(11),
        chunk_elems=chunk_elems,
    )
    assert got["r"] == pytest.approx(_one_shot_paired(correct, background_robustness, 7, 11), rel=1e-12)


def test_paired_bootstrap_defaults_to_1000_resamples() -> None:
    correct = _results(200)
    stats = {"r": background_robustness}
    default = paired_bootstrap(correct, stats, generator=torch.Generator().manual_seed(2))
    assert default["r"] == pytest.approx(_one_shot_paired(correct, background_robustness, 1000, 2), rel=1e-12)
    other = paired_bootstrap(correct, stats, resamples=1001, generator=torch.Generator().manual_seed(2))
    assert other != default, "the data must tell 1000 from 1001 resamples, or this test proves nothing"


def test_index_tensors_respect_chunk_elems(monkeypatch) -> None:
    """``chunk_elems`` bounds the ``(r, N)`` index tensor (one resample at least, whatever N)."""
    sizes: list[tuple[int, ...]] = []
    real = torch.randint

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        sizes.append(tuple(args[-1]))  # randint([low,] high, size)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", spy)
    correct = _results(4)
    paired_bootstrap(
        correct, {"r": background_robustness}, resamples=5, generator=torch.Generator(), chunk_elems=3
    )
    assert sizes == [(1, 4)] * 5
    sizes.clear()
    paired_bootstrap(
        correct, {"r": background_robustness}, resamples=5, generator=torch.Generator(), chunk_elems=9
    )
    assert sizes == [(2, 4), (2, 4), (1, 4)]


def test_bootstrap_mean_index_tensor_stays_under_4e6_elements(monkeypatch) -> None:
    sizes: list[tuple[int, ...]] = []
    real = torch.randint

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        sizes.append(tuple(args[-1]))  # randint([low,] high, size)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", spy)
    n = 2_500_000  # over half the bound: one resample per chunk
    bootstrap_mean(torch.ones(n, dtype=torch.float64), resamples=2, generator=torch.Generator())
    assert sizes == [(1, n), (1, n)]


def test_an_interval_of_one_finite_resample_or_of_none() -> None:
    """Resamples where a score is undefined are dropped; one defined resample gives a zero-width
    interval, none gives NaN (never an error)."""
    correct = {"bg=same": torch.tensor([True, False, True]), "bg=all": torch.tensor([True, True, False])}
    one = paired_bootstrap(correct, {"r": background_robustness}, resamples=1, generator=torch.Generator())
    assert one["r"][0] == one["r"][1] and math.isfinite(one["r"][0])
    never = {"bg=same": torch.zeros(3, dtype=torch.bool), "bg=all": torch.ones(3, dtype=torch.bool)}
    got = paired_bootstrap(never, {"r": background_robustness}, resamples=4, generator=torch.Generator())
    assert len(got["r"]) == 2 and all(math.isnan(x) for x in got["r"])


def test_paired_bootstrap_of_one_image_and_of_none() -> None:
    one = {"a": torch.tensor([True]), "b": torch.tensor([False])}
    stats = {"a": lambda x: x["a"], "b": lambda x: x["b"]}
    got = paired_bootstrap(one, stats, resamples=5, generator=torch.Generator().manual_seed(0))
    assert got == {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    empty = {"a": torch.zeros(0, dtype=torch.bool)}
    got = paired_bootstrap(empty, {"a": lambda x: x["a"]}, generator=torch.Generator().manual_seed(0))
    assert len(got["a"]) == 2 and all(math.isnan(x) for x in got["a"])


def _one_shot_mean(values: torch.Tensor, resamples: int, seed: int) -> list[float]:
    v = values[torch.isfinite(values)].double()
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=torch.Generator().manual_seed(seed))
    means = v[idx].mean(1).numpy()
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


@pytest.mark.parametrize("n", [6, 5000], ids=["one-chunk", "several-chunks"])
def test_bootstrap_mean_equals_a_one_shot_reference(n: int) -> None:
    """5000 values need several chunks (4e6 index elements each): the same resamples as one draw."""
    values = torch.linspace(0.0, 3.0, n, dtype=torch.float64) ** 2
    values[1] = float("nan")
    resamples = 1000 if n > 4000 else 9
    got = bootstrap_mean(values, resamples=resamples, generator=torch.Generator().manual_seed(4))
    assert got == pytest.approx(_one_shot_mean(values, resamples, 4), rel=1e-12)
    assert got[0] < got[1]


def test_bootstrap_mean_defaults_to_1000_resamples_and_handles_degenerate_input() -> None:
    values = torch.linspace(0.0, 1.0, 20, dtype=torch.float64) ** 3
    default = bootstrap_mean(values, generator=torch.Generator().manual_seed(3))
    assert default == pytest.approx(_one_shot_mean(values, 1000, 3), rel=1e-12)
    assert bootstrap_mean(values, resamples=1001, generator=torch.Generator().manual_seed(3)) != default
    assert bootstrap_mean(torch.tensor([0.3]), resamples=4, generator=torch.Generator()) == [
        pytest.approx(0.3),
        pytest.approx(0.3),
    ]
    nothing = bootstrap_mean(torch.tensor([float("nan"), float("inf")]), generator=torch.Generator())
    assert len(nothing) == 2 and all(math.isnan(x) for x in nothing)


def test_the_default_bound_is_4e6_index_elements_exactly(monkeypatch) -> None:
    """97,561 x 41 = 4,000,001: at this N one more resample per chunk would cross the bound by one."""
    sizes: list[tuple[int, ...]] = []
    real = torch.randint

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003
        sizes.append(tuple(args[-1]))  # randint([low,] high, size)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", spy)
    n = 97_561
    bootstrap_mean(torch.ones(n, dtype=torch.float64), resamples=41, generator=torch.Generator())
    assert sizes == [(40, n), (1, n)]
    sizes.clear()
    correct = {"a": torch.ones(n, dtype=torch.bool)}
    paired_bootstrap(correct, {"a": lambda a: a["a"]}, resamples=41, generator=torch.Generator())
    assert sizes == [(40, n), (1, n)]


def test_size_bias_of_a_ladder_without_small_factors_is_nan_not_a_crash() -> None:
    """``grids.size_conditions`` accepts any ladder containing 1; one with only f >= 1 has no small side."""
    acc = {"size=1": torch.tensor(0.8), "size=1.5": torch.tensor(0.9), "size=2": torch.tensor(0.85)}
    assert torch.isnan(size_bias(acc))
    assert not torch.isnan(size_bias_large(acc))
