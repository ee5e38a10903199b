"""``forcomp evaluate`` and ``forcomp compare`` in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from colour_cache import EVAL_SIZE

from forcomp.cli import main
from forcomp.metrics.cli import parse_class_indices

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


def _quick(cache: Path, out: Path, model: str, *extra: str, size: int | None = EVAL_SIZE) -> int:
    """A fast ``forcomp evaluate`` run: few images, one attribution method, no plots."""
    return main(
        [
            "evaluate",
            "--cache",
            str(cache),
            "--model",
            model,
            "--out",
            str(out),
            "--normalize",
            "none",
            "--limit",
            "8",
            "--batch-size",
            "8",
            "--bootstrap",
            "20",
            "--device",
            "cpu",
            "--methods",
            "input_x_gradient",
            "--no-plots",
            "--quiet",
            *(["--size", str(size)] if size is not None else []),
            *extra,
        ]
    )


def test_class_indices_flag_list_and_json(colour_cache: Path, tmp_path: Path, capsys) -> None:
    model = f"{MODELS}:padded"  # 10 outputs; the cache's 4 classes sit at outputs 7, 2, 5, 0
    assert _quick(colour_cache, tmp_path / "none", model) == 2
    assert "--class-indices" in capsys.readouterr().err  # the error names the CLI flag
    assert _quick(colour_cache, tmp_path / "l", model, "--class-indices", "7,2,5,0") == 0
    report = json.loads((tmp_path / "l" / "report.json").read_text())
    assert report["class_indices"] == [7, 2, 5, 0] and report["accuracy"] == 1.0
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"n00000004": 0, "n00000002": 2, "n00000001": 7, "n00000003": 5, "x": 9}))
    assert _quick(colour_cache, tmp_path / "j", model, "--class-indices", str(mapping)) == 0
    assert json.loads((tmp_path / "j" / "report.json").read_text())["class_indices"] == [7, 2, 5, 0]
    (tmp_path / "list.json").write_text("[7, 2, 5, 0]")
    assert _quick(colour_cache, tmp_path / "k", model, "--class-indices", str(tmp_path / "list.json")) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("7,2", "one model output index per cache class"),
        ("7,2,5,10", r"\[0, 10\)"),
        ("7,2,5,-1", r"\[0, 10\)"),
        ("7,2,7,0", "same output"),
        ("7,two,5,0", "comma-separated integers"),
        ("missing.json", "cannot read"),
    ],
)
def test_class_indices_flag_errors(
    colour_cache: Path, tmp_path: Path, value: str, match: str, capsys
) -> None:
    rc = _quick(
        colour_cache,
        tmp_path / "o",
        f"{MODELS}:padded",
        "--class-indices",
        str(tmp_path / value) if value.endswith(".json") else value,
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("forcomp evaluate: error:")
    assert re.search(match, err), err
    assert not (tmp_path / "o" / "report.json").exists()


def test_parse_class_indices_json_shapes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": "x"}')
    with pytest.raises(ValueError, match="--class-indices"):
        parse_class_indices(str(bad))
    bad.write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_class_indices(str(bad))
    assert parse_class_indices(" 3, 1 ,2") == [3, 1, 2]


def test_prediction_rule_is_reported(colour_cache: Path, tmp_path: Path) -> None:
    model = f"{MODELS}:padded"
    assert _quick(colour_cache, tmp_path / "p", model, "--class-indices", "7,2,5,0") == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["n_model_outputs"] == 10
    assert report["prediction"].startswith("argmax over the 4 outputs mapped to the cache's classes")
    header = (tmp_path / "p" / "report.md").read_text().split("## Headline")[0]
    assert "- prediction: argmax over the 4 outputs mapped to the cache's classes" in header


VIT_FACTORY = """
import timm
import torch


def vit():
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1, embed_dim=16, num_heads=1,
        num_classes=4,
    )
"""


def test_fixed_size_vit_uses_its_own_size_and_rejects_others(
    colour_cache: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("timm")
    f = tmp_path / "f.py"
    f.write_text(VIT_FACTORY)
    # its pretrained_cfg says 224, the module itself 64: the module wins
    assert _quick(colour_cache, tmp_path / "ok", f"{f}:vit", size=None) == 0
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["size"] == 64 and report["model"]["fixed_size"] == [64, 64]
    capsys.readouterr()
    assert _quick(colour_cache, tmp_path / "bad", f"{f}:vit", size=96) == 2
    err = capsys.readouterr().err
    assert err.startswith("forcomp evaluate: error:") and "only accepts 64 px" in err and "--size 64" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_constant_predictor_summary_warns_and_flags(colour_cache: Path, tmp_path: Path, capsys) -> None:
    assert (
        _quick(colour_cache, tmp_path / "c", f"{MODELS}:constant", "--limit", "32", "--batch-size", "32") == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("WARNING ") and "not clearly above chance" in out  # the CLI summary, at the top
    row = next(line for line in out.splitlines() if line.startswith("Background robustness")).split()
    assert row[-1] == "1.000*"  # not a bare, ideal-looking 1.000
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert list(report)[1] == "chance" and report["background_robustness"]["meaningful"] is False
    assert (tmp_path / "c" / "report.md").read_text().splitlines()[2].startswith("> **Warning: model not")


def test_compare_plot_only_with_out(colour_cache: Path, tmp_path: Path, capsys) -> None:
    assert _quick(colour_cache, tmp_path / "a", f"{MODELS}:factory") == 0
    before = sorted(tmp_path.rglob("*"))
    assert main(["compare", str(tmp_path / "a")]) == 0
    assert sorted(tmp_path.rglob("*")) == before  # the table only
    assert main(["compare", str(tmp_path / "a"), "--out", str(tmp_path / "cmp.png")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {tmp_path / 'cmp.png'}")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(tmp_path / "a"), "--out", str(tmp_path / "cmp")]) == 2
    assert "--out" in capsys.readouterr().err


def test_torchvision_training_checkpoint_via_cli(colour_cache: Path, tmp_path: Path, capsys) -> None:
    import argparse

    import torch
    from torchvision import models

    torch.manual_seed(0)
    net = models.squeezenet1_1(num_classes=4)
    ckpt = {"model": net.state_dict(), "epoch": 3, "args": argparse.Namespace(model="squeezenet1_1", lr=0.1)}
    ckpt["model_ema"] = {f"module.{k}": v for k, v in net.state_dict().items()}
    ckpt["model_ema"]["n_averaged"] = torch.tensor(5)
    torch.save(ckpt, tmp_path / "squeezenet1_1.pth")
    for key in (None, "model_ema"):
        out = tmp_path / f"r_{key}"
        extra = ["--weights", str(tmp_path), *(["--checkpoint-key", key] if key else [])]
        assert _quick(colour_cache, out, "squeezenet1_1", *extra, size=64) == 0, capsys.readouterr().err
        report = json.loads((out / "report.json").read_text())
        assert report["model"]["checkpoint_key"] == (key or "model")
        assert f"checkpoint entry `{key or 'model'}`" in (out / "report.md").read_text()
    capsys.readouterr()


def test_mapping_error_names_classes_and_prints_the_line(tmp_path: Path, capsys) -> None:
    from colour_cache import make_colour_cache

    cache = make_colour_cache(tmp_path / "c", per_class=2, classes=("n01440764", "n02084071"))
    f = tmp_path / "m.py"
    f.write_text(
        "import torch\n\ndef m():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 1000, 1), "
        "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
    )
    assert _quick(cache, tmp_path / "o", f"{f}:m") == 2
    err = capsys.readouterr().err
    assert "n02084071 (dog" in err and "\n  --class-indices 0,?\n" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "forcomp evaluate: error: device 'cuda' was requested but CUDA is not available here"),
        ("cuda:1", "forcomp evaluate: error: device 'cuda:1' was requested but CUDA is not available here"),
        ("cdua", "forcomp evaluate: error: device 'cdua' is not a device name; use one of cpu"),
    ],
)
def test_an_unavailable_or_misspelt_device_is_one_line_and_exit_2(
    colour_cache: Path, tmp_path: Path, device: str, message: str, capsys, monkeypatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "o"
    assert _quick(colour_cache, out, f"{MODELS}:factory", "--device", device) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()  # refused before any work


def test_flags_map_one_to_one_onto_the_options_in_the_report(
    colour_cache: Path, tmp_path: Path, monkeypatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no --device: CUDA if there, else cpu
    argv = ["--methods", "input_x_gradient", "--seed", "3", "--workers", "0"]
    argv += ["--mask-smoothing-sigma", "1.5", "--class-indices", "0,1,2,3", "--split", "val"]
    assert main(
        [
            "evaluate", "--cache", str(colour_cache), "--model", f"{MODELS}:factory", "--out",
            str(tmp_path / "o"), "--normalize", "none", "--limit", "4", "--batch-size", "3",
            "--bootstrap", "7", "--size", str(EVAL_SIZE), "--no-plots", "--quiet", "--weights", str(tmp_path),
            *argv,
        ]
    ) == 0  # fmt: skip
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["options"] == {
        "split": "val",
        "size": EVAL_SIZE,
        "normalize": None,
        "device": "cpu",
        "batch_size": 3,
        "seed": 3,
        "limit": 4,
        "methods": ["input_x_gradient"],
        "num_workers": 0,
        "progress": False,
        "bootstrap": 7,
        "ig_steps": 16,
        "gradcam_layer": None,
        "class_indices": [0, 1, 2, 3],
        "n_examples": 6,
        "weights_dir": str(tmp_path),
        "checkpoint_key": None,  # a factory loads its own weights (the flag is refused for it)
        "recombine": {"mask_smoothing_sigma": 1.5},
    }
    assert report["runtime"]["device"] == "cpu" and report["seed"] == 3
