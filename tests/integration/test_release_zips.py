"""A ForNet release as downloaded (the zips and the ratios file) works with every command, with the
folder form's numbers: info, verify, preview, evaluate and both loader paths."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import forcomp
from forcomp.cache.info import cache_info
from forcomp.cli import main as cli_main

SPLIT = "val"


def release_copy(cache: Path, dst: Path) -> Path:
    """The cache as ForNet publishes it: ``<kind>_<split>.zip`` with ``<split>/<kind>/<class>/<file>``
    members, the ratios JSON beside them, and no forcomp index."""
    dst.mkdir()
    for kind in ("foregrounds", "backgrounds"):
        with zipfile.ZipFile(dst / f"{kind}_{SPLIT}.zip", "w") as z:
            for f in sorted((cache / SPLIT / kind).rglob("*")):
                if f.is_file():
                    z.write(f, f"{SPLIT}/{kind}/{f.parent.name}/{f.name}")
    shutil.copy(cache / f"fg_bg_ratios_{SPLIT}.json", dst)
    return dst


@pytest.fixture(scope="module")
def forms(built_cache, tmp_path_factory) -> tuple[Path, Path]:
    """(folder form without forcomp's index, release zips) of the same cache."""
    root = tmp_path_factory.mktemp("forms")
    folders = root / "folders"
    shutil.copytree(built_cache[1], folders, ignore=shutil.ignore_patterns("index"))
    return folders, release_copy(folders, root / "release")


def test_info_counts_the_zips_as_the_folders(forms, capsys) -> None:
    folders, zips = forms
    a, b = cache_info(folders)["splits"][SPLIT], cache_info(zips)["splits"][SPLIT]
    assert b["form"] == "zip" and a["form"] == "folder"
    for k in ("items", "status", "classes", "foregrounds", "backgrounds"):
        assert a[k] == b[k], k
    assert b["items"] == 9 and len(b["classes"]) == 3
    assert cli_main(["info", str(zips)]) == 0
    out = capsys.readouterr().out
    assert "9 items" in out and "3 classes" in out and "a release in zips" in out


def test_verify_of_a_clean_release_exits_0(forms, capsys) -> None:
    assert cli_main(["verify", str(forms[1])]) == 0
    assert "cache OK" in capsys.readouterr().out


def test_preview_reads_the_zips(forms, tmp_path) -> None:
    from PIL import Image

    out = tmp_path / "p.png"
    assert (
        cli_main(["preview", str(forms[1]), "--out", str(out), "--rows", "3", "--recombinations", "2"]) == 0
    )
    assert Image.open(out).size[1] > 20


def test_both_loader_paths_give_the_folder_pictures(forms) -> None:
    folders, zips = forms
    for size in (32, None):
        a = forcomp.ForComp(folders, SPLIT, size=size, seed=0)
        b = forcomp.ForComp(zips, SPLIT, size=size, seed=0)
        for i in range(len(a)):
            x, y = a[i][0], b[i][0]
            if size is None:
                x, y = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
            assert torch.equal(x, y) and a[i][1] == b[i][1]


class _MeanColour(nn.Module):
    """A deterministic classifier of the image's mean colour (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)
        torch.manual_seed(0)
        nn.init.normal_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)))


def test_evaluate_gives_the_folder_numbers(forms) -> None:
    folders, zips = forms
    kw = dict(split=SPLIT, seed=0, normalize=None, size=32, bootstrap=20, methods=("input_x_gradient",))
    a = forcomp.evaluate(_MeanColour(), folders, **kw)
    b = forcomp.evaluate(_MeanColour(), zips, **kw)
    for key in ("accuracy", "n_images"):
        assert a[key] == b[key]
    for key in ("background_robustness", "bg_gap", "center_bias", "size_bias"):
        assert a[key]["score"] == b[key]["score"] or (a[key]["score"] != a[key]["score"])  # NaN == NaN
