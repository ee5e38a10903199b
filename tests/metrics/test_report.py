"""report.json / report.md / plots / compare, from a report built without the recombination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_results import fake_results

from forcomp.metrics.bias import AttributionExamples
from forcomp.metrics.grids import EvaluationGrid
from forcomp.metrics.output import compare, write_report
from forcomp.metrics.report import ReportNotFoundError, format_markdown, load_report
from forcomp.metrics.summary import build_report as _build_report


def fake_report(shift: float = 0.0) -> dict:
    correct = fake_results()
    if shift:
        correct["bg=all"] = correct["bg=same"].clone()
    r = _build_report(
        correct=correct,
        focus={"input_x_gradient": torch.tensor([1.5, 2.5, float("nan")])},
        methods=("input_x_gradient",),
        unavailable={},
        grid=EvaluationGrid.default(),
        seed=0,
        bootstrap=100,
    )
    r.update({"n_images": 200, "seed": 0, "split": "val", "model": {"spec": "fake"}, "cache": {"path": "/c"}})
    return r


def fake_examples(n: int = 3) -> AttributionExamples:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 32, 32)
    masks[:, 8:24, 8:24] = 1
    maps = {"input_x_gradient": torch.rand(n, 32, 32, generator=g), "gradcam": masks * 2}
    return AttributionExamples(
        torch.rand(n, 3, 32, 32, generator=g),
        torch.arange(n),
        masks,
        maps,
        {k: torch.full((n,), 1.5) for k in maps},
        ["a", "b", "c"],
    )


def _png_ok(p: Path) -> None:
    assert p.is_file() and p.stat().st_size > 1000
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_files(tmp_path: Path) -> None:
    report = fake_report()
    report["center_bias"]["score"] = float("nan")  # undefined scores are written as null
    paths = write_report(report, tmp_path / "r", fake_examples())
    assert {"json", "markdown", "center_bias", "size_curve", "background", "attribution"} <= set(paths)
    data = json.loads(paths["json"].read_text())
    assert data["center_bias"]["score"] is None
    assert data["size_bias"]["curve"]["1"] == pytest.approx(report["size_bias"]["curve"]["1"])
    md = paths["markdown"].read_text()
    assert "Background robustness" in md and "center_bias.png" in md and "| top |" in md
    for key in ("center_bias", "size_curve", "background", "attribution"):
        _png_ok(paths[key])


def test_markdown_from_loaded_json(tmp_path: Path) -> None:
    paths = write_report(fake_report(), tmp_path, plots=False)
    assert set(paths) == {"json", "markdown"}
    assert "n/a" not in format_markdown(load_report(tmp_path)).split("## Foreground")[0].replace(
        "| n/a |", ""
    )


def test_compare_table_and_plot(tmp_path: Path) -> None:
    write_report(fake_report(), tmp_path / "plain", plots=False)
    write_report(fake_report(shift=1.0), tmp_path / "forcomp", plots=False)
    table = compare([tmp_path / "plain", tmp_path / "forcomp"], out=tmp_path / "cmp.png")
    lines = table.splitlines()
    assert "plain" in lines[0] and "forcomp" in lines[0]
    row = next(line for line in lines if line.startswith("Background robustness"))
    assert row.split()[-1] == "1.000"  # acc(all) == acc(same) in the second report
    _png_ok(tmp_path / "cmp.png")
    with pytest.raises(ReportNotFoundError, match="report.json"):
        compare([tmp_path / "missing"])


def test_comparison_plot_does_not_blow_up_rounding_noise(tmp_path: Path, monkeypatch) -> None:
    import forcomp.metrics.plots as plots

    a, b = fake_report(), fake_report()
    a["center_bias"].update(score=-1.19e-10, ci95=[-1e-10, 1e-10])
    b["center_bias"].update(score=3e-10, ci95=[-1e-10, 5e-10])
    figures = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, **kw: figures.append(fig) or real_save(fig, path, **kw)
    )
    compare_dir = [tmp_path / "a", tmp_path / "b"]
    write_report(a, compare_dir[0], plots=False)
    write_report(b, compare_dir[1], plots=False)
    compare(compare_dir, out=tmp_path / "cmp.png")
    (fig,) = figures
    ax = next(ax for ax in fig.axes if ax.get_title().startswith("Center bias"))
    assert [p.get_height() for p in ax.patches] == [0.0, 0.0]
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.1  # not a 1e-10 axis
    assert "-0.000" not in format_markdown(a)


# ---------------------------------------------------------------- chance level


def _report(correct: dict, n_classes: int = 4, label_counts: list[int] | None = None) -> dict:
    r = _build_report(
        correct=correct,
        focus={"input_x_gradient": torch.tensor([1.5, 2.5, 1.0])},
        methods=("input_x_gradient",),
        unavailable={},
        grid=EvaluationGrid.default(),
        seed=0,
        bootstrap=200,
        n_classes=n_classes,
        label_counts=label_counts,
    )
    r.update({"n_images": 200, "n_classes": n_classes, "model": {"spec": "m"}, "cache": {"path": "/c"}})
    return r


def constant_predictor_correct(n: int = 200) -> dict:
    """Per-image hits of a model that always answers class 0 on 4 balanced classes: every condition
    has the same hits (labels 0 of 0,1,2,3,0,1,...), accuracy exactly 1/4."""
    hits = torch.arange(n) % 4 == 0
    return {c.name: hits.clone() for c in EvaluationGrid.default()}


def test_constant_predictor_is_flagged_not_perfect(tmp_path: Path) -> None:
    r = _report(constant_predictor_correct())
    br = r["background_robustness"]
    assert br["score"] == 1.0 and r["center_bias"]["score"] == 0.0  # the numbers are kept ...
    assert br["meaningful"] is False and "acc(same)" in br["not_meaningful"]  # ... and flagged
    for key in ("bg_gap", "foreground_focus", "center_bias", "size_bias"):
        assert r[key]["meaningful"] is False, key
    assert r["accuracy_at_chance"] is True and list(r)[:2] == ["schema", "chance"]  # at the top
    chance = r["chance"]
    assert chance["level"] == 0.25 and len(chance["conditions_at_chance"]) == 20
    assert "not clearly above chance" in chance["warning"]

    paths = write_report(r, tmp_path / "const", plots=True)
    data = json.loads(paths["json"].read_text())
    assert (
        data["chance"]["warning"] == chance["warning"]
        and data["background_robustness"]["meaningful"] is False
    )
    md = paths["markdown"].read_text()
    head = md.split("## Headline")[0]
    assert "**Warning: model not clearly above chance" in head
    row = next(line for line in md.splitlines() if line.startswith("| Background robustness |"))
    assert "| 1.000 (not meaningful) |" in row
    assert "| 0.250 (at chance) |" in next(line for line in md.splitlines() if line.startswith("| Accuracy"))

    write_report(fake_report(), tmp_path / "good", plots=False)
    table = compare([tmp_path / "const", tmp_path / "good"], names=["const", "good"])
    lines = table.splitlines()
    assert lines[0].startswith("WARNING const: model not clearly above chance")
    assert not any(line.startswith("WARNING good") for line in lines)
    row = next(line for line in lines if line.startswith("Background robustness")).split()
    assert row[-2] == "1.000*" and not row[-1].endswith("*")
    assert lines[-1].startswith("* at chance (accuracy) or not meaningful")


def test_good_model_gets_no_warning(tmp_path: Path) -> None:
    r = _report(fake_results())  # 0.4 to 0.8 on 200 images, all above 1/4
    assert r["chance"]["warning"] is None and r["chance"]["not_meaningful"] == {}
    assert all(r[k]["meaningful"] for k in ("background_robustness", "bg_gap", "center_bias", "size_bias"))
    md = format_markdown(r)
    assert "Warning" not in md and "not meaningful" not in md
    write_report(r, tmp_path / "g", plots=False)
    table = compare([tmp_path / "g"])
    assert "WARNING" not in table and "*" not in table


def test_chance_uses_the_evaluated_classes_and_majority_share() -> None:
    correct = fake_results()
    correct["size=1"] = torch.arange(200) % 2 == 0  # 0.5
    assert _report(correct, n_classes=4)["size_bias"]["meaningful"] is True  # 0.5 > 1/4
    assert _report(correct, n_classes=2)["size_bias"]["meaningful"] is False  # 0.5 = 1/2
    # 4 classes, but one holds 60% of the images: always answering it scores 0.6
    skewed = _report(correct, n_classes=4, label_counts=[120, 40, 20, 20])
    assert skewed["chance"]["level"] == 0.6 and skewed["chance"]["majority_share"] == 0.6
    assert skewed["size_bias"]["meaningful"] is False


def test_old_reports_are_assessed_on_load(tmp_path: Path) -> None:
    """A report.json written before the chance check (no ``chance`` block) still gets the warning."""
    r = _report(constant_predictor_correct())
    del r["chance"]
    for key in ("background_robustness", "bg_gap", "foreground_focus", "center_bias", "size_bias"):
        r[key].pop("meaningful"), r[key].pop("not_meaningful")
    write_report(r, tmp_path / "old", plots=False)
    assert "chance" not in json.loads((tmp_path / "old" / "report.json").read_text())
    assert compare([tmp_path / "old"]).startswith("WARNING old: model not clearly above chance")


# ---------------------------------------------------------------- compare figure and attribution titles


def _png_size(p: Path) -> tuple[int, int]:
    import struct

    w, h = struct.unpack(">II", p.read_bytes()[16:24])  # IHDR
    return w, h


def test_compare_writes_a_plot_only_with_out_and_lays_it_out_for_a_laptop(
    tmp_path: Path, monkeypatch
) -> None:
    import forcomp.metrics.plots as plots

    write_report(_report(constant_predictor_correct()), tmp_path / "const", plots=False)
    write_report(fake_report(), tmp_path / "good", plots=False)
    before = sorted(p for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    compare([tmp_path / "const", tmp_path / "good"])
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no --out: nothing written anywhere

    figures = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, **kw: figures.append(fig) or real_save(fig, path, **kw)
    )
    compare([tmp_path / "const", tmp_path / "good"], out=tmp_path / "cmp.png")
    w, h = _png_size(tmp_path / "cmp.png")
    assert 1400 <= w <= 1600 and 500 <= h <= 900, (w, h)  # 2 rows, not a 1991 x 339 strip
    (fig,) = figures
    rows = {round(ax.get_position().y0, 2) for ax in fig.axes}
    assert len(rows) == 2
    size_ax = next(ax for ax in fig.axes if ax.get_title() == "accuracy vs object size")
    labels = [t.get_text() for t in size_ax.get_xticklabels()]
    assert labels == ["0.1", "0.2", "0.3", "0.5", "0.7", "1", "1.5", "2"]
    br_ax = next(ax for ax in fig.axes if ax.get_title().startswith("Background robustness"))
    assert [t.get_text() for t in br_ax.texts] == ["n.m."]  # the constant model's 1.0 is marked
    compare([tmp_path / "good"], out=tmp_path)  # a directory gets compare.png
    _png_ok(tmp_path / "compare.png")
    with pytest.raises(ValueError, match=r"--out .*\.png"):
        compare([tmp_path / "good"], out=tmp_path / "cmp.txt")


def test_attribution_titles_name_the_class(tmp_path: Path, monkeypatch) -> None:
    import forcomp.metrics.plots as plots

    figures = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, **kw: figures.append(fig) or real_save(fig, path, **kw)
    )
    plots.plot_attribution_examples(fake_examples(), tmp_path / "a.png", ["n01440764", "n02085620", "c"])
    titles = [ax.get_title() for ax in figures[0].axes]
    assert "image\nn01440764 tench" in titles and "n02085620 Chihuahua" in titles
    assert "c" in titles  # a folder name that is no wnid stays as it is


def test_refresh_report_adds_the_chance_check_to_an_old_report(tmp_path: Path) -> None:
    from forcomp.metrics.output import refresh_report

    r = _report(constant_predictor_correct())
    del r["chance"], r["accuracy_at_chance"]
    for key in ("background_robustness", "bg_gap", "foreground_focus", "center_bias", "size_bias"):
        del r[key]["meaningful"], r[key]["not_meaningful"]
    write_report(r, tmp_path, fake_examples())
    strip = (tmp_path / "attribution_examples.png").read_bytes()
    paths = refresh_report(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert list(data)[1] == "chance" and data["background_robustness"]["meaningful"] is False
    assert data["center_bias"]["score"] == 0.0  # numbers unchanged
    md = paths["markdown"].read_text()
    assert "**Warning: model not clearly above chance" in md
    assert "attribution_examples.png" in md and (tmp_path / "attribution_examples.png").read_bytes() == strip


# ---------------------------------------------------------------- plots and the caller's matplotlib


def test_plots_leave_the_callers_backend_and_pyplot_alone(tmp_path: Path, monkeypatch) -> None:
    """A notebook's backend (inline, widget, a window) must survive writing the report's plots."""
    import matplotlib
    import matplotlib.pyplot as plt

    from forcomp.metrics import render_report_plots

    (tmp_path / "fc_user_backend.py").write_text(
        "from matplotlib.backend_bases import FigureManagerBase as FigureManager\n"
        "from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    before = matplotlib.get_backend()
    plt.switch_backend("module://fc_user_backend")
    try:
        user_fig = plt.figure()
        calls: list = []
        monkeypatch.setattr(matplotlib, "use", lambda *a, **k: calls.append((a, k)))
        paths = render_report_plots(fake_report(), tmp_path, fake_examples())
        assert set(paths) == {"center_bias", "size_curve", "background", "attribution"}
        for p in paths.values():
            _png_ok(p)
        assert calls == []
        assert matplotlib.get_backend() == "module://fc_user_backend"
        assert plt.get_fignums() == [user_fig.number]  # no figure left open, the user's still current
        assert plt.gcf() is user_fig
    finally:
        plt.close("all")
        monkeypatch.undo()
        plt.switch_backend(before)


def _figures(monkeypatch) -> list:
    import forcomp.metrics.plots as plots

    figures: list = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, **kw: figures.append(fig) or real_save(fig, path, **kw)
    )
    return figures


def test_center_and_size_plots_mark_chance_as_the_background_plot(tmp_path: Path, monkeypatch) -> None:
    import forcomp.metrics.plots as plots

    report = _report(constant_predictor_correct())
    level = report["chance"]["level"]
    figures = _figures(monkeypatch)
    plots.plot_background(report, tmp_path / "bg.png")
    plots.plot_size_curve(report, tmp_path / "size.png")
    plots.plot_center_bias(report, tmp_path / "center.png")
    bg, size, center = figures

    def dotted_levels(ax) -> list[float]:
        return [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"]

    assert dotted_levels(bg.axes[0]) == [pytest.approx(level)]
    assert dotted_levels(size.axes[0]) == [pytest.approx(level)]
    assert "chance" in [t.get_text() for t in size.axes[0].texts]
    heat, colorbar = center.axes
    assert dotted_levels(colorbar) == [pytest.approx(level)]
    assert "chance" in heat.get_xlabel()


def test_compare_size_curves_of_equal_models_stay_distinguishable(tmp_path: Path, monkeypatch) -> None:
    write_report(fake_report(), tmp_path / "a", plots=False)
    write_report(fake_report(), tmp_path / "b", plots=False)  # the same curve twice
    figures = _figures(monkeypatch)
    compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "cmp.png")
    (fig,) = figures
    size_ax = next(ax for ax in fig.axes if ax.get_title() == "accuracy vs object size")
    curves = [line for line in size_ax.lines if line.get_label() in ("a", "b")]
    assert len(curves) == 2
    a, b = curves
    assert (a.get_marker(), a.get_linestyle()) != (b.get_marker(), b.get_linestyle())
    assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
    assert all((line.get_alpha() or 1.0) < 1.0 for line in curves)  # the one below shows through
