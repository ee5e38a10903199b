"""report.json / report.md / plots / compare, from a report built without the recombination."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_formulas import _fake_results

from forcomp.metrics.bias import AttributionExamples
from forcomp.metrics.grids import EvaluationGrid
from forcomp.metrics.output import compare, write_report
from forcomp.metrics.report import ReportNotFoundError, format_markdown, load_report
from forcomp.metrics.summary import build_report as _build_report


def fake_report(shift: float = 0.0) -> dict:
    correct = _fake_results()
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
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or real_save(fig, path))
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
