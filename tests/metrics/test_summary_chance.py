"""The report dict (``summary.py``) and the chance check (``chance.py``) against values written out by hand.

Fast, pure tests (no model, no cache) that pin what ``report.json`` holds: every accuracy, grid cell,
curve point and headline recomputed here from the headline formulas on distinct numbers, the
bootstrap intervals drawn from the one seeded generator in the documented order, the fixed strings of
the schema, and the chance block's level, flags and messages word for word.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fake_results import fake_results

from forcomp.metrics.chance import REFERENCE, assess_chance, chance_level, chance_of, not_meaningful
from forcomp.metrics.grids import EvaluationGrid
from forcomp.metrics.scores import HEADLINES, bootstrap_mean, paired_bootstrap
from forcomp.metrics.summary import SCHEMA, _f, build_report, cache_identity, mark_chance

N = 20
GRID = EvaluationGrid.default()
# hits per condition out of N (all distinct, so a swapped condition changes a number)
HITS = {
    "bg=orig": 19, "bg=same": 17, "bg=all": 11,
    "nonant=0": 3, "nonant=1": 6, "nonant=2": 4, "nonant=3": 7, "nonant=4": 16,
    "nonant=5": 8, "nonant=6": 2, "nonant=7": 9, "nonant=8": 5,
    "size=0.1": 1, "size=0.2": 10, "size=0.3": 12, "size=0.5": 13, "size=0.7": 14,
    "size=1": 15, "size=1.5": 18, "size=2": 20,
}  # fmt: skip
FOCUS = {
    "input_x_gradient": torch.tensor([1.0, float("nan"), 3.0, 2.5, float("nan"), 0.5, 4.0]),
    "gradcam": torch.tensor([2.0, 1.0, 7.0]),
}


def _correct(hits: dict[str, int] = HITS, n: int = N) -> dict[str, torch.Tensor]:
    """Per-image hits: a different pattern per condition (the first ``h`` of a rotated order)."""
    out = {}
    for j, (name, h) in enumerate(hits.items()):
        row = torch.zeros(n, dtype=torch.bool)
        row[torch.roll(torch.arange(n), j)[:h]] = True
        out[name] = row
    return out


def _report(**kw) -> dict:
    args = dict(
        correct=_correct(),
        focus=dict(FOCUS),
        methods=("input_x_gradient", "gradcam"),
        unavailable={},
        grid=GRID,
        seed=7,
        bootstrap=60,
    )
    args.update(kw)
    return build_report(**args)


def test_every_number_of_the_report_equals_the_formulas_by_hand() -> None:
    r = _report()
    a = {k: v / N for k, v in HITS.items()}
    assert r["schema"] == SCHEMA == "forcomp.bias_report/1"
    assert r["accuracy"] == a["bg=orig"]
    br = r["background_robustness"]
    assert br["score"] == pytest.approx(a["bg=all"] / a["bg=same"], abs=1e-12)
    assert br["ratio_all_over_orig"] == pytest.approx(a["bg=all"] / a["bg=orig"], abs=1e-12)
    assert br["accuracy"] == {"orig": a["bg=orig"], "same": a["bg=same"], "all": a["bg=all"]}
    assert br["formula"] == "acc(all) / acc(same)" and br["n_images"] == N
    gap = r["bg_gap"]
    assert gap["score"] == pytest.approx(100 * (a["bg=same"] - a["bg=all"]), abs=1e-9)
    assert gap["accuracy"] == {"same": a["bg=same"], "all": a["bg=all"]} and gap["n_images"] == N
    assert gap["unit"] == "percentage points" and gap["formula"] == "100 * (acc(same) - acc(all))"

    cb = r["center_bias"]
    cells = [a[f"nonant={k}"] for k in range(9)]
    assert cb["grid"] == [cells[0:3], cells[3:6], cells[6:9]]
    assert cb["center"] == a["nonant=4"]
    outer = [cells[k] for k in range(9) if k != 4]
    assert cb["score"] == pytest.approx(1 - sum(outer) / 8 / cells[4], abs=1e-12)
    corners = sum(cells[k] for k in (0, 2, 6, 8)) / 4
    edges = sum(cells[k] for k in (1, 3, 5, 7)) / 4
    assert cb["corners"] == pytest.approx(corners, abs=1e-12)
    assert cb["edges"] == pytest.approx(edges, abs=1e-12)
    assert cb["corner_score"] == pytest.approx(1 - corners / cells[4], abs=1e-12)
    assert cb["edge_score"] == pytest.approx(1 - edges / cells[4], abs=1e-12)
    assert cb["formula"] == "1 - mean(acc over the 8 outer cells) / acc(center cell)"
    assert cb["background"] == "same" and cb["n_images"] == N

    sb = r["size_bias"]
    curve = {"0.1": 0.05, "0.2": 0.5, "0.3": 0.6, "0.5": 0.65, "0.7": 0.7, "1": 0.75, "1.5": 0.9, "2": 1.0}
    assert sb["curve"] == curve and list(sb["curve"]) == list(curve)
    small, large = (0.05 + 0.5 + 0.6 + 0.65 + 0.7) / 5, (0.9 + 1.0) / 2
    assert sb["reference"] == 0.75
    assert sb["small_mean"] == pytest.approx(small, abs=1e-12)
    assert sb["large_mean"] == pytest.approx(large, abs=1e-12)
    assert sb["score"] == pytest.approx(1 - small / 0.75, abs=1e-12)
    assert sb["large_score"] == pytest.approx(1 - large / 0.75, abs=1e-12)
    assert sb["formula"] == "1 - mean(acc over f < 1) / acc(f = 1)"
    assert sb["large_formula"] == "1 - mean(acc over f > 1) / acc(f = 1)"
    assert sb["background"] == "same" and sb["n_images"] == N

    assert list(r["conditions"]) == GRID.names()
    for c in GRID:
        entry = r["conditions"][c.name]
        assert entry == {**c.to_dict(), "accuracy": a[c.name], "ci95": entry["ci95"]}
    assert r["bootstrap"] == {"resamples": 60, "interval": "percentile 95%", "paired_over_images": True}
    # all floats, as JSON wants them (not 0-d tensors)
    assert all(type(v) is float for v in (r["accuracy"], br["score"], cb["corners"], sb["small_mean"]))


def test_focus_block_per_method_and_headline_is_the_first_method() -> None:
    r = _report()
    ff = r["foreground_focus"]
    valid = [1.0, 3.0, 2.5, 0.5, 4.0]
    ixg = ff["methods"]["input_x_gradient"]
    assert ixg["score"] == pytest.approx(sum(valid) / 5, abs=1e-12)
    assert ixg["median"] == 2.5 and ixg["n_valid"] == 5 and "unavailable" not in ixg
    gc = ff["methods"]["gradcam"]
    assert gc["score"] == pytest.approx(10 / 3, abs=1e-12) and gc["median"] == 2.0 and gc["n_valid"] == 3
    assert ff["method"] == "input_x_gradient" and ff["score"] == ixg["score"] and ff["ci95"] == ixg["ci95"]
    assert ff["condition"] == "bg=all" and ff["n_images"] == N
    assert ff["formula"] == "mean over images of (sum(A*M) / sum(A)) / (sum(M) / |image|)"
    swapped = _report(methods=("gradcam", "input_x_gradient"))["foreground_focus"]
    assert swapped["method"] == "gradcam" and swapped["score"] == pytest.approx(10 / 3, abs=1e-12)


def test_unavailable_and_empty_methods_are_nan_with_the_reason() -> None:
    focus = {"input_x_gradient": torch.tensor([float("nan"), float("nan")]), "gradcam": torch.tensor([1.0])}
    r = _report(focus=focus, unavailable={"gradcam": "no conv layer"})
    ms = r["foreground_focus"]["methods"]
    for m, reason, n_valid in (
        ("input_x_gradient", "no image had a non-zero attribution map", 0),
        ("gradcam", "no conv layer", 1),
    ):
        assert math.isnan(ms[m]["score"]) and all(math.isnan(v) for v in ms[m]["ci95"]), m
        assert len(ms[m]["ci95"]) == 2 and ms[m]["unavailable"] == reason and ms[m]["n_valid"] == n_valid
        assert "median" not in ms[m]
    assert math.isnan(r["foreground_focus"]["score"])
    missing = _report(focus={}, methods=("input_x_gradient",))["foreground_focus"]["methods"]
    assert missing["input_x_gradient"]["n_valid"] == 0  # a method with no values at all


def test_intervals_come_from_one_seeded_generator_in_order() -> None:
    """The paired bootstrap over all conditions and headlines first, then one bootstrap per method,
    all from ``Generator().manual_seed(seed)``: the report is reproducible and the intervals paired."""
    correct = _correct()
    r = _report(correct=correct)
    g = torch.Generator().manual_seed(7)
    ci = paired_bootstrap(
        correct, {**HEADLINES, **{n: (lambda acc, n=n: acc[n]) for n in correct}}, resamples=60, generator=g
    )
    ixg = bootstrap_mean(FOCUS["input_x_gradient"], resamples=60, generator=g)
    gc = bootstrap_mean(FOCUS["gradcam"], resamples=60, generator=g)
    assert r["accuracy_ci95"] == ci["accuracy"]
    assert r["background_robustness"]["ci95"] == ci["background_robustness"]
    assert r["background_robustness"]["ratio_all_over_orig_ci95"] == ci["background_robustness_orig"]
    assert r["bg_gap"]["ci95"] == ci["bg_gap"]
    assert r["center_bias"]["ci95"] == ci["center_bias"]
    assert r["center_bias"]["corner_score_ci95"] == ci["center_bias_corners"]
    assert r["center_bias"]["edge_score_ci95"] == ci["center_bias_edges"]
    assert r["size_bias"]["ci95"] == ci["size_bias"]
    assert r["size_bias"]["large_score_ci95"] == ci["size_bias_large"]
    assert all(r["conditions"][n]["ci95"] == ci[n] for n in correct)
    assert r["foreground_focus"]["methods"]["input_x_gradient"]["ci95"] == ixg
    assert r["foreground_focus"]["methods"]["gradcam"]["ci95"] == gc
    assert _report(correct=correct, seed=8)["bg_gap"]["ci95"] != ci["bg_gap"]  # the seed is used


def test_undefined_values_are_nan_not_inf_and_empty_conditions_are_nan() -> None:
    assert math.isnan(_f(torch.tensor(float("inf")))) and math.isnan(_f(float("-inf")))
    assert _f(torch.tensor(0.25, dtype=torch.float64)) == 0.25 and type(_f(torch.tensor(1))) is float
    hits = dict(HITS, **{"bg=same": 0, "nonant=4": 0})
    r = _report(correct=_correct(hits))
    assert math.isnan(r["background_robustness"]["score"]) and math.isnan(r["center_bias"]["score"])
    empty = {c.name: torch.zeros(0, dtype=torch.bool) for c in GRID}
    r = _report(correct=empty, focus={}, bootstrap=5)
    assert math.isnan(r["accuracy"]) and math.isnan(r["conditions"]["bg=all"]["accuracy"])
    assert r["bg_gap"]["n_images"] == 0


def test_a_ladder_without_larger_factors_has_an_undefined_large_side() -> None:
    grid = EvaluationGrid.default(size_factors=(0.5, 1.0))
    correct = {
        n: v for n, v in _correct().items() if not n.startswith("size=") or n in ("size=0.5", "size=1")
    }
    sb = _report(correct=correct, grid=grid)["size_bias"]
    assert sb["curve"] == {"0.5": 0.65, "1": 0.75} and sb["small_mean"] == 0.65
    assert math.isnan(sb["large_mean"]) and math.isnan(sb["large_score"])


def test_no_chance_block_without_n_classes() -> None:
    r = _report()
    assert "chance" not in r and "accuracy_at_chance" not in r
    assert all("meaningful" not in r[k] for k in REFERENCE if k != "accuracy")


def test_chance_block_first_and_headlines_flagged_from_their_reference_condition() -> None:
    # 4 classes, balanced: level 0.25. Low accuracy under size=1 only (3/20): size_bias is flagged.
    hits = dict(HITS, **{"size=1": 3})
    r = _report(correct=_correct(hits), n_classes=4, label_counts=[5, 5, 5, 5])
    assert list(r)[:2] == ["schema", "chance"]
    ch = r["chance"]
    assert ch["level"] == 0.25 and ch["n_classes"] == 4 and ch["majority_share"] == 0.25
    assert "size=1" in ch["conditions_at_chance"] and "bg=orig" not in ch["conditions_at_chance"]
    assert list(ch["not_meaningful"]) == ["size_bias"]
    assert r["accuracy_at_chance"] is False
    assert r["size_bias"]["meaningful"] is False
    assert r["size_bias"]["not_meaningful"] == ch["not_meaningful"]["size_bias"]
    for k in ("background_robustness", "bg_gap", "foreground_focus", "center_bias"):
        assert r[k]["meaningful"] is True and "not_meaningful" not in r[k], k
    # the same report re-marked with nothing flagged: the old reason goes
    mark_chance(r, {**ch, "not_meaningful": {}})
    assert r["size_bias"]["meaningful"] is True and "not_meaningful" not in r["size_bias"]
    assert list(r)[:2] == ["schema", "chance"] and r["chance"]["not_meaningful"] == {}


def test_mark_chance_flags_accuracy_and_skips_headlines_that_are_not_blocks() -> None:
    report = {"x": 1, "accuracy": 0.3, "bg_gap": {"score": 1.0}, "schema": "old", "chance": {"stale": 1}}
    chance = {"not_meaningful": {"accuracy": "why a", "bg_gap": "why b"}}
    mark_chance(report, chance)
    assert list(report) == ["schema", "chance", "x", "accuracy", "bg_gap", "accuracy_at_chance"]
    assert report["schema"] == SCHEMA and report["chance"] is chance
    assert report["accuracy"] == 0.3 and report["accuracy_at_chance"] is True
    assert report["bg_gap"] == {"score": 1.0, "meaningful": False, "not_meaningful": "why b"}


# ---------------------------------------------------------------- chance.py


def test_chance_level_and_majority_share() -> None:
    assert chance_level(4) == (0.25, None)
    assert chance_level(4, [0, 0, 0, 0]) == (0.25, None)
    assert chance_level(4, []) == (0.25, None)
    assert chance_level(4, [6, 1, 1, 0]) == (0.75, 0.75)
    assert chance_level(2, [1, 1, 1, 1]) == (0.5, 0.25)  # 1/n above the majority share
    assert chance_level(1) == (1.0, None)
    assert chance_level(4, [0, 1, 0, 0]) == (1.0, 1.0)  # one image is a majority too
    with pytest.raises(ValueError) as e:
        chance_level(0)
    assert str(e.value) == "n_classes must be >= 1, got 0"


def _cond(acc: object, ci: object) -> dict:
    return {"accuracy": acc, "ci95": ci}


def test_assess_chance_flags_and_words() -> None:
    conds = {
        "bg=orig": _cond(0.9, [0.8, 0.95]),
        "bg=same": _cond(0.3, [0.25, 0.4]),  # lower end == level: at chance
        "nonant=4": _cond(0.6, [0.2500001, 0.7]),  # just above: fine
        "size=1": _cond(float("nan"), [float("nan"), float("nan")]),
        "nonant=0": _cond(0.5, [0.3, 0.6]),
    }
    c = assess_chance(conds, 4, label_counts=[2, 2, 2, 2])
    assert c["level"] == 0.25 and c["n_classes"] == 4 and c["majority_share"] == 0.25
    assert c["conditions_at_chance"] == ["bg=same", "size=1"]
    assert c["rule"] == (
        "a condition is at chance when the lower end of its accuracy's 95% interval is <= level; "
        "level = max(1/n_classes, majority class share of the evaluated images)"
    )
    same = "acc(same) = 0.300 [0.250, 0.400] is not clearly above chance (0.250)"
    size = "acc(f=1) = n/a [n/a, n/a] is not clearly above chance (0.250)"
    assert c["not_meaningful"] == {
        "background_robustness": f"{same}: the score compares chance-level guesses",
        "bg_gap": f"{same}: the score compares chance-level guesses",
        "size_bias": f"{size}: the score compares chance-level guesses",
    }
    assert c["warning"] == (
        "model not clearly above chance (0.250: 1/4 classes) under 2 of 5 conditions, including "
        "acc(same) = 0.300 [0.250, 0.400], acc(f=1) = n/a [n/a, n/a]; "
        "not meaningful: background_robustness, bg_gap, size_bias"
    )


def test_assess_chance_accuracy_only_majority_and_malformed_intervals() -> None:
    conds = {
        "bg=orig": _cond(0.7, [0.5, 0.8]),  # below the majority share 0.6 → at chance
        "a": _cond(0.9, None),
        "b": _cond(0.9, [0.9]),
        "c": _cond(0.9, ["0.9", 1.0]),
        "d": _cond(0.9, [float("inf"), 1.0]),
        "e": _cond(0.9, [0.95, 1.0]),
        "f": {"accuracy": 0.9},
    }
    c = assess_chance(conds, 4, label_counts=[6, 2, 1, 1])
    assert c["level"] == 0.6 and c["majority_share"] == 0.6
    assert c["conditions_at_chance"] == ["bg=orig", "a", "b", "c", "d", "f"]
    reason = "acc(orig) = 0.700 [0.500, 0.800] is not clearly above chance (0.600)"
    assert c["not_meaningful"] == {
        "accuracy": reason,
        "foreground_focus": f"{reason}: the score compares chance-level guesses",
    }
    assert c["warning"] == (
        "model not clearly above chance (0.600: 1/4 classes, majority class 0.600) under 6 of 7 "
        "conditions, including acc(orig) = 0.700 [0.500, 0.800]; not meaningful: foreground_focus"
    )
    only_acc = assess_chance({"bg=orig": _cond(0.2, [0.1, 0.3])}, 4)
    assert list(only_acc["not_meaningful"]) == ["accuracy", "foreground_focus"]
    assert only_acc["majority_share"] is None
    assert only_acc["warning"] == (
        "model not clearly above chance (0.250: 1/4 classes) under 1 of 1 conditions, including "
        "acc(orig) = 0.200 [0.100, 0.300]; not meaningful: foreground_focus"
    )
    # a majority share above 1/n shows in the warning, however small the excess
    slight = assess_chance({"bg=orig": _cond(0.3, [0.2, 0.4])}, 4, label_counts=[3, 2, 2, 1])
    assert (
        slight["level"] == 0.375 and "(0.375: 1/4 classes, majority class 0.375) under" in slight["warning"]
    )
    # a reference condition that was not run is not flagged, and nothing at chance gives no warning
    ok = assess_chance({"x": _cond(0.9, [0.8, 1.0])}, 4)
    assert ok["conditions_at_chance"] == [] and ok["not_meaningful"] == {} and ok["warning"] is None


def test_chance_of_and_not_meaningful_for_new_and_old_reports() -> None:
    block = {"level": 0.5, "not_meaningful": {"bg_gap": "why"}}
    new = {"chance": block}
    got = chance_of(new)
    assert got == block and got is not block
    assert not_meaningful(new, "bg_gap") == "why" and not_meaningful(new, "center_bias") is None
    old = {"conditions": {"bg=same": _cond(0.3, [0.2, 0.4])}, "n_classes": 4, "chance": {"level": 1}}
    assessed = chance_of(old)  # a chance block without "not_meaningful": assessed again
    assert assessed == assess_chance(old["conditions"], 4)
    assert not_meaningful(old, "bg_gap") == assessed["not_meaningful"]["bg_gap"]
    for bad in (
        {},
        {"conditions": {}, "n_classes": 4},
        {"conditions": [1], "n_classes": 4},
        {"conditions": old["conditions"]},
        {"conditions": old["conditions"], "n_classes": "4"},
        {"conditions": old["conditions"], "n_classes": 0},
    ):
        assert chance_of(bad) is None, bad
        assert not_meaningful(bad, "bg_gap") is None
    assert chance_of({"conditions": old["conditions"], "n_classes": 1}) is not None


def test_cache_identity_without_ratios_and_with_many_classes(tmp_path: Path) -> None:
    class Items:
        def __init__(self, n_classes: int) -> None:
            self.classes = [f"c{i}" for i in range(n_classes)]

        def __len__(self) -> int:
            return 3

    assert cache_identity(tmp_path, "val", Items(51)) == {
        "path": str(tmp_path.resolve()),
        "split": "val",
        "n_items": 3,
        "n_classes": 51,
        "classes": None,
        "ratios_sha256_16": None,
    }
    assert cache_identity(tmp_path, "val", Items(50))["classes"] == Items(50).classes


def test_report_structure_fromfake_results() -> None:
    correct = fake_results()
    focus = {"input_x_gradient": torch.tensor([2.0, 3.0, float("nan"), 4.0]), "gradcam": torch.zeros(0)}
    r = build_report(
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
    r = build_report(
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


def test_report_records_file_paths_absolute(tmp_path: Path, monkeypatch) -> None:
    from forcomp.metrics.options import EvaluateOptions
    from forcomp.metrics.summary import describe_run

    monkeypatch.chdir(tmp_path)
    run = describe_run(
        EvaluateOptions(weights_dir="w"),
        n_images=1, n_classes=2, size=32, norm=None, gradcam_layer=None, class_indices=None,
        n_outputs=2, prediction="argmax", model={"spec": "resnet18", "weights": "w/resnet18.pth"},
        cache={"path": str(tmp_path / "c")}, seconds=0.0, device="cpu",
    )  # fmt: skip
    assert run["model"]["weights"] == str(tmp_path / "w" / "resnet18.pth")
    assert run["options"]["weights_dir"] == str(tmp_path / "w")
    assert describe_run(
        EvaluateOptions(),
        n_images=1, n_classes=2, size=32, norm=None, gradcam_layer=None, class_indices=None,
        n_outputs=2, prediction="argmax", model={"spec": "m", "weights": None}, cache={}, seconds=0.0,
        device="cpu",
    )["model"]["weights"] is None  # fmt: skip
    no_file = describe_run(
        EvaluateOptions(),
        n_images=1, n_classes=2, size=32, norm=None, gradcam_layer=None, class_indices=None,
        n_outputs=2, prediction="argmax", model={"spec": "m"}, cache={}, seconds=0.0, device="cpu",
    )  # fmt: skip
    assert no_file["model"] == {"spec": "m"}  # a model without a weights file gets no "weights" entry
