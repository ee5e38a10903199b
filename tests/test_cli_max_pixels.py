"""``forcomp build --max-image-pixels``: the decompression-bomb guard, end to end through the CLI.

An image over the limit is refused before it is decoded and reported naming its file (summary,
index), the build goes on with the others and exits 1; an image of exactly the limit is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from scenes import CLASSES, make_imagefolder, synthetic_scene

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cli import main

BIG = (200, 150)  # 30_000 pixels; the other images are 96x72 = 6_912


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = make_imagefolder(tmp_path / "source")
    Image.fromarray(synthetic_scene(CLASSES[0], 7, BIG)).save(root / CLASSES[0] / "big.png")
    return root


def _build(source: Path, cache: Path, *extra: str) -> int:
    return main(
        [
            "build",
            str(source),
            str(cache),
            "--quiet",
            "--segmenter",
            "classical",
            "--inpainter",
            "telea",
            *extra,
        ]
    )


def test_an_image_over_the_limit_is_reported_by_name_and_the_rest_is_built(source, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _build(source, cache, "--max-image-pixels", str(BIG[0] * BIG[1] - 1)) == 1
    out = capsys.readouterr().out
    big = source / CLASSES[0] / "big.png"
    (line,) = [ln for ln in out.splitlines() if "error:" in ln]
    assert str(big) in line and "200x150 = 30000 pixels exceeds the limit of 29999" in line, out
    index = read_index(CacheLayout(cache, "train"))
    assert index[f"{CLASSES[0]}/big.JPEG"].status == "error"
    assert "exceeds the limit of 29999" in (index[f"{CLASSES[0]}/big.JPEG"].message or "")
    layout = CacheLayout(cache, "train")
    assert not layout.fg_path(CLASSES[0], "big").exists() and not layout.bg_path(CLASSES[0], "big").exists()
    built = {k for k, r in index.items() if r.status == "ok"}
    assert len(built) >= 6 and f"{CLASSES[0]}/big.JPEG" not in built, "the normal images were built"
    for key in built:
        cls, stem = key[: -len(".JPEG")].split("/")
        assert layout.fg_path(cls, stem).stat().st_size > 0 and layout.bg_path(cls, stem).stat().st_size > 0


def test_an_image_of_exactly_the_limit_is_built(source, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert _build(source, cache, "--max-image-pixels", str(BIG[0] * BIG[1])) == 0, capsys.readouterr().out
    rec = read_index(CacheLayout(cache, "train"))[f"{CLASSES[0]}/big.JPEG"]
    assert rec.status == "ok" and rec.source_size == BIG


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_limit_below_one_is_refused_before_any_work(source, tmp_path, capsys, value):
    cache = tmp_path / "cache"
    assert _build(source, cache, "--max-image-pixels", value) == 2
    err = capsys.readouterr().err
    assert "max_image_pixels" in err and value in err
    assert not (cache / "train").exists()
