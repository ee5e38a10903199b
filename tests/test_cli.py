"""The command line, called in-process: exit codes and files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scenes import make_imagefolder

from forcomp.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert "forcomp 0.1.0" in capsys.readouterr().out


def test_build_info_verify_roundtrip(tmp_path, capsys):
    src = make_imagefolder(tmp_path / "src", per_class=1)
    cache = tmp_path / "cache"
    assert main(["build", str(src), str(cache), "--split", "val", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "segmenter=classical (auto)" in out.err and "ok: 3" in out.out
    assert main(["verify", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == "cache OK"
    assert main(["info", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["val"]["status"] == {"ok": 3}


def test_build_with_failed_file_exits_1(tmp_path, capsys):
    src = make_imagefolder(tmp_path / "src", per_class=1)
    (src / "n00000001" / "bad.jpg").write_bytes(b"garbage")
    assert main(["build", str(src), str(tmp_path / "c"), "--quiet"]) == 1
    assert "bad.jpg: not a recognised image file" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "c")]) == 0
    assert "bad.jpg" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "{tmp}/missing", "{tmp}/c"],
        ["build", "{src}", "{tmp}/c", "--shard", "2/2"],
        ["build", "{src}", "{tmp}/c", "--segmenter", "nope"],
        ["build", "{src}", "{tmp}/c", "--segmenter", "sam", "--weights", "{tmp}/empty"],
        ["build", "{src}", "{tmp}/c", "--inpainter", "lama", "--weights", "{tmp}/empty"],
        ["build", "{src}", "{tmp}/c", "--split", "test"],
        ["info", "{tmp}/missing"],
        ["info", "{tmp}/empty"],  # a folder that holds no cache
        ["info", "{src}/n00000001/img0.jpg"],  # a file
        ["verify", "{src}/n00000001/img0.jpg"],
    ],
)
def test_unusable_invocations_exit_2(tmp_path, argv, capsys):
    src = make_imagefolder(tmp_path / "src", per_class=1)
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, src=src) for a in argv]
    assert main(args) == 2
    assert not (tmp_path / "c" / "train" / "foregrounds").exists(), "nothing written before failing"


def test_missing_weights_message_names_expected_file(tmp_path, capsys):
    src = make_imagefolder(tmp_path / "src", per_class=1)
    (tmp_path / "w").mkdir()
    assert (
        main(
            ["build", str(src), str(tmp_path / "c"), "--inpainter", "lama", "--weights", str(tmp_path / "w")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(tmp_path / "w" / "big-lama.pt") in err and "weights/README.md" in err


def test_verify_broken_cache_exits_1(tmp_path, capsys):
    src = make_imagefolder(tmp_path / "src", per_class=1)
    cache = tmp_path / "cache"
    assert main(["build", str(src), str(cache), "--quiet"]) == 0
    next((cache / "train" / "backgrounds").rglob("*.JPEG")).unlink()
    assert main(["verify", str(cache)]) == 1
    assert "missing background file" in capsys.readouterr().out


def test_auto_backend_selection(tmp_path, capsys, monkeypatch):
    from forcomp.offline.inpainters import INPAINTERS
    from forcomp.offline.segmenters import SEGMENTERS

    w = tmp_path / "w"
    w.mkdir()
    assert SEGMENTERS.resolve("auto", w).name == "classical"
    assert INPAINTERS.resolve("auto", w).name == "telea"
    (w / "big-lama.pt").write_bytes(b"x")
    (w / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert INPAINTERS.resolve("auto", w).name == "lama"
    assert SEGMENTERS.resolve("auto", w).name == "sam"
    (w / "grounding-dino-tiny").mkdir()
    (w / "grounding-dino-tiny" / "config.json").write_text("{}")
    assert SEGMENTERS.resolve("auto", w).name == "sam", "a config without weights is not a detector"
    (w / "grounding-dino-tiny" / "model.safetensors").write_bytes(b"x")
    assert SEGMENTERS.resolve("auto", w).name == "grounded-sam"
    # $FORCOMP_WEIGHTS is used when --weights is not given, and `backends` says what auto picks
    monkeypatch.setenv("FORCOMP_WEIGHTS", str(w))
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "segmenters (auto -> grounded-sam)" in out and "inpainters (auto -> lama)" in out


def test_bad_arguments_exit_2(capsys):
    assert main(["build"]) == 2
    assert main(["frobnicate"]) == 2


def test_preview_picks_the_split_the_cache_has(tmp_path, capsys):
    """README's sequence: `forcomp build SRC CACHE` (train by default), then `forcomp preview CACHE`."""
    src = make_imagefolder(tmp_path / "src", per_class=1)
    cache = tmp_path / "cache"
    assert main(["build", str(src), str(cache), "--quiet"]) == 0
    out = tmp_path / "p.png"
    assert main(["preview", str(cache), "--out", str(out), "--rows", "2", "--recombinations", "1"]) == 0
    from PIL import Image

    from forcomp.preview import TILE

    grid = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # one row per item (2) below a 20 px header; source, foreground, background, 1 recombination
    assert grid.shape == (20 + 2 * TILE, 4 * TILE, 3)
    for r in range(2):
        tiles = [grid[20 + r * TILE : 20 + (r + 1) * TILE, c * TILE : (c + 1) * TILE] for c in range(4)]
        for c, t in enumerate(tiles):
            assert t.std() > 5, f"row {r}, column {c} is blank"
        # the inpainted background is not the source (the object was removed), the recombination
        # is not the background alone (an object was pasted)
        assert np.abs(tiles[0] - tiles[2]).mean() > 1 and np.abs(tiles[3] - tiles[2]).mean() > 1


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path):
    """`forcomp info CACHE | head` must not end in a BrokenPipeError traceback."""
    import subprocess
    import sys

    src = make_imagefolder(tmp_path / "src", per_class=1)
    cache = tmp_path / "cache"
    assert main(["build", str(src), str(cache), "--quiet"]) == 0
    code = "import sys; from forcomp.cli import main; sys.exit(main(['info', sys.argv[1], '--json']))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader goes away before the writer writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("device", "why"),
    [("cuda", "CUDA is not available here"), ("cdua", "'cdua' is not a device name")],
)
@pytest.mark.parametrize("command", ["build", "backends --check"])
def test_absent_or_misspelt_device_is_one_line_exit_2(tmp_path, capsys, monkeypatch, command, device, why):
    """Refused before any work, in one line; CUDA is hidden so the check means the same on a GPU machine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    if command == "build":
        src = make_imagefolder(tmp_path / "src", per_class=1)
        argv = ["build", str(src), str(out), "--segmenter", "classical", "--inpainter", "telea"]
    else:
        argv = ["backends", "--check", "--out", str(out), "--weights", str(tmp_path / "w")]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"forcomp {command.split()[0]}: error: ") and why in err[0]
    assert not out.exists(), "nothing was written"


def test_build_help_lists_the_registered_backends_and_defaults(capsys):
    from forcomp.offline.inpainters import INPAINTERS
    from forcomp.offline.segmenters import SEGMENTERS

    assert main(["build", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for reg in (SEGMENTERS, INPAINTERS):
        assert reg.help("auto") in text
        assert all(name in text for name in reg.names())
    assert "sam-score" in text and "(default: none" in text


def test_listing_backends_imports_no_torch():
    """``forcomp build --help`` and ``auto`` read the registries: the backends load torch only when built."""
    import subprocess
    import sys

    code = (
        "import sys; from forcomp.offline.segmenters import SEGMENTERS; "
        "from forcomp.offline.inpainters import INPAINTERS; SEGMENTERS.names(); INPAINTERS.names(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _subparsers() -> dict:
    import argparse

    from forcomp.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **sub.choices}


def test_every_option_has_help_that_shows_its_default():
    import argparse

    commands = _subparsers()
    assert {"build", "info", "verify", "preview", "demo", "backends", "evaluate", "compare"} <= set(commands)
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(
                action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
            ):
                continue
            where = f"forcomp {name} {action.option_strings or action.dest}"
            assert action.help and action.help.strip(), f"{where}: no help"
            text = formatter._expand_help(action)  # the help as printed, %(default)s filled in
            takes_value = action.nargs != 0
            if takes_value and action.option_strings and not action.required:
                assert "default" in text, f"{where}: help does not say its default: {text!r}"
                if action.default not in (None, [], ""):
                    shown = str(action.default)
                    assert shown in text, f"{where}: default {shown!r} not shown in {text!r}"


def test_help_texts_have_no_markup_and_name_no_missing_file():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name, parser in _subparsers().items():
        text = parser.format_help()
        assert "`" not in text, f"forcomp {name} --help shows markup: {text}"
        assert "%%" not in text and "%(" not in text, f"forcomp {name} --help shows a format escape: {text}"
        # documents (README.md, METRICS.md, docs/...), not the report.md that evaluate writes
        for ref in re.findall(r"\b(?:docs/[\w./-]+|[A-Z][A-Z_]+)\.md\b", text):
            assert (root / ref).is_file(), f"forcomp {name} --help points at {ref}, not in the repository"
    assert "docs/metrics.md" in _subparsers()["evaluate"].format_help()


def test_verify_of_a_split_the_cache_lacks_names_the_build_that_adds_it(built_cache, capsys):
    _, cache = built_cache  # a val split only
    assert main(["verify", str(cache), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert f"{cache}: no train split (it has only val)" in out
    assert f"forcomp build SOURCE_TRAIN {cache} --split train" in out
    assert "--split val" not in out  # rebuilding the val source would not add a train split
    assert main(["verify", str(cache), "--split", "val", "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("cache OK\n") and "no train split" in out
    assert main(["verify", str(cache), "--split", "val"]) == 0
