"""``forcomp evaluate`` and ``forcomp compare`` in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from colour_cache import EVAL_SIZE

from forcomp.cli import main

MODELS = Path(__file__).parent / "biased_models.py"


def _evaluate(cache: Path, out: Path, factory: str, *extra: str) -> int:
    return main(
        [
            "evaluate",
            "--cache",
            str(cache),
            "--model",
            f"{MODELS}:{factory}",
            "--out",
            str(out),
            "--normalize",
            "none",
            "--size",
            str(EVAL_SIZE),
            "--limit",
            "12",
            "--batch-size",
            "12",
            "--bootstrap",
            "100",
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_evaluate_writes_report_and_plots_then_compare(colour_cache: Path, tmp_path: Path, capsys) -> None:
    assert _evaluate(colour_cache, tmp_path / "inv", "factory", "--quiet") == 0
    assert _evaluate(colour_cache, tmp_path / "border", "border") == 0  # with a progress bar
    out = capsys.readouterr().out
    assert "Background robustness" in out and "wrote" in out
    files = {p.name for p in (tmp_path / "inv").iterdir()}
    assert {
        "report.json",
        "report.md",
        "center_bias.png",
        "size_curve.png",
        "background.png",
        "attribution_examples.png",
    } <= files
    for png in (tmp_path / "inv").glob("*.png"):
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "inv" / "report.json").read_text())
    assert report["n_images"] == 12 and report["model"]["source"] == "factory" and report["normalize"] is None

    assert (
        main(
            [
                "compare",
                str(tmp_path / "inv"),
                str(tmp_path / "border"),
                "--out",
                str(tmp_path / "cmp.png"),
                "--names",
                "invariant,border",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    header, *rows = table.splitlines()
    assert header.split()[-2:] == ["invariant", "border"]
    br = next(r for r in rows if r.startswith("Background robustness")).split()
    assert float(br[-2]) > float(br[-1]) + 0.3  # the background model is worse, side by side
    assert (tmp_path / "cmp.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "no/such/file.py:factory"],
        ["--model", "resnet18", "--weights", "/nonexistent-weights"],
        ["--model", f"{MODELS}:factory", "--batch-size", "0"],
        ["--model", f"{MODELS}:factory", "--limit", "0"],
        ["--model", f"{MODELS}:factory", "--normalize", "zscore"],
        ["--model", f"{MODELS}:factory", "--methods", "saliency"],
    ],
)
def test_evaluate_unusable_input_exits_2(colour_cache: Path, tmp_path: Path, argv: list[str], capsys) -> None:
    assert main(["evaluate", "--cache", str(colour_cache), "--out", str(tmp_path / "o"), *argv]) == 2
    assert not (tmp_path / "o" / "report.json").exists()


def test_evaluate_missing_cache_and_compare_missing_report(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--cache", str(tmp_path / "nope"), "--model", f"{MODELS}:factory"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "report.json" in capsys.readouterr().err
