"""Headline formulas of METRICS.md and the paired bootstrap, on hand-made per-image results."""

from __future__ import annotations

import math

import pytest
import torch

from forcomp.metrics.grids import SIZE_FACTORS, EvaluationGrid, size_conditions
from forcomp.metrics.scores import (
    HEADLINES,
    background_robustness,
    bg_gap,
    bootstrap_mean,
    center_bias,
    paired_bootstrap,
    size_bias,
    size_bias_large,
)
from forcomp.metrics.summary import build_report as _build_report


def t(v: float) -> torch.Tensor:
    return torch.tensor(v)


def test_grid_is_the_metrics_md_grid() -> None:
    g = EvaluationGrid.default()
    assert [c.background for c in g.background] == ["orig", "same", "all"]
    assert [c.nonant for c in g.nonant] == list(range(9)) and {c.background for c in g.nonant} == {"same"}
    assert [c.size_factor for c in g.size] == list(SIZE_FACTORS) and {c.background for c in g.size} == {
        "same"
    }
    assert g.focus.name == "bg=all" and g.focus.nonant is None and g.focus.size_factor == 1.0
    assert len(g) == 20 and len(set(g.names())) == 20
    with pytest.raises(ValueError, match="1.0"):
        size_conditions((0.5, 2.0))


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


def _correct(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _fake_results(n: int = 200) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    correct = {c.name: _correct(n, 0.8, g) for c in EvaluationGrid.default()}
    correct["bg=all"] = _correct(n, 0.5, g)
    for k in (0, 2, 6, 8):
        correct[f"nonant={k}"] = _correct(n, 0.4, g)
    return correct


def test_paired_bootstrap_contains_score_and_is_deterministic() -> None:
    correct = _fake_results()
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
    c = _correct(100, 0.7, torch.Generator().manual_seed(3))
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


def test_report_structure_from_fake_results() -> None:
    correct = _fake_results()
    focus = {"input_x_gradient": torch.tensor([2.0, 3.0, float("nan"), 4.0]), "gradcam": torch.zeros(0)}
    r = _build_report(
        correct=correct,
        focus=focus,
        methods=("input_x_gradient", "gradcam"),
        unavailable={"gradcam": "no conv"},
        grid=EvaluationGrid.default(),
        seed=0,
        bootstrap=200,
    )
    assert isinstance(r["accuracy"], float)
    for key in ("background_robustness", "foreground_focus", "center_bias", "size_bias", "bg_gap"):
        assert isinstance(r[key]["score"], float) and len(r[key]["ci95"]) == 2 and r[key]["n_images"] == 200
    assert len(r["center_bias"]["grid"]) == 3 and all(len(row) == 3 for row in r["center_bias"]["grid"])
    assert list(r["size_bias"]["curve"]) == ["0.1", "0.2", "0.3", "0.5", "0.7", "1", "1.5", "2"]
    assert r["foreground_focus"]["score"] == pytest.approx(3.0)
    assert r["foreground_focus"]["methods"]["input_x_gradient"]["n_valid"] == 3
    assert r["foreground_focus"]["methods"]["gradcam"]["unavailable"] == "no conv"
    assert set(r["background_robustness"]["accuracy"]) == {"orig", "same", "all"}


def test_scores_are_float64_exact_for_equal_conditions() -> None:
    # Every condition: the same 5 of 12 images right. float32 gave 0.4166666567 and center bias -1.19e-07.
    hits = torch.tensor([True] * 5 + [False] * 7)
    r = _build_report(
        correct={c.name: hits.clone() for c in EvaluationGrid.default()},
        focus={"input_x_gradient": torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)},
        methods=("input_x_gradient",),
        unavailable={},
        grid=EvaluationGrid.default(),
        seed=0,
        bootstrap=50,
    )
    assert r["accuracy"] == 5 / 12 and r["center_bias"]["grid"][0][0] == 5 / 12
    assert r["size_bias"]["curve"]["0.1"] == 5 / 12 and r["conditions"]["bg=all"]["accuracy"] == 5 / 12
    assert r["center_bias"]["score"] == 0.0 and r["size_bias"]["score"] == 0.0 and r["bg_gap"]["score"] == 0.0
    assert r["background_robustness"]["score"] == 1.0 and r["center_bias"]["corner_score"] == 0.0
    assert r["foreground_focus"]["score"] == 1.0
