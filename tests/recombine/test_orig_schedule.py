"""``orig_img_prob`` schedules over epochs through ``ds.epoch``, on a cache without forcomp's index
(a ForNet release) where the original images come from ``orig_root``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forcomp import ForComp
from forcomp.cache.layout import CacheLayout


@pytest.fixture(scope="module")
def release(built_cache: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The built cache without forcomp's index: only ForNet's files, so sources are unknown."""
    source, cache = built_cache
    copy = tmp_path_factory.mktemp("release") / "cache"
    shutil.copytree(cache, copy)
    shutil.rmtree(CacheLayout(copy, "val").index_dir)
    return source, copy


def _originals(ds: ForComp) -> list[bool]:
    """Which items came back as the untouched original (no pasted object: empty mask)."""
    return [bool(ds[i][2].sum() == 0) for i in range(len(ds))]


@pytest.mark.parametrize(("schedule", "first", "last"), [("linear", 0.0, 1.0), ("revlinear", 1.0, 0.0)])
def test_schedule_follows_the_epoch(
    release: tuple[Path, Path], schedule: str, first: float, last: float
) -> None:
    source, cache = release
    ds = ForComp(cache, "val", size=64, orig_img_prob=schedule, epochs=4, orig_root=source, seed=0,
                 return_masks=True, crop_scale=None, hflip_prob=0.0)  # fmt: skip
    shares = []
    for epoch in range(5):
        ds.epoch = epoch
        shares.append(float(np.mean(_originals(ds))))
    assert shares[0] == first and shares[4] == last  # p = 0 and p = 1 are exact
    assert 0.0 < shares[2] < 1.0 or len(ds) < 4  # halfway: some of each


def test_original_is_the_source_image_from_orig_root(release: tuple[Path, Path]) -> None:
    source, cache = release
    ds = ForComp(cache, "val", size=64, orig_img_prob=1.0, orig_root=source, seed=0, return_masks=True,
                 crop_scale=None, hflip_prob=0.0)  # fmt: skip
    for i in range(len(ds)):
        img, _, mask = ds[i]
        cls, stem = ds.classes[int(ds.labels[i])], ds.reader.fg.stems[i]
        src = next((source / cls).glob(stem + ".*"))
        pil = Image.open(src).convert("RGB")
        s = max(64 / pil.width, 64 / pil.height)
        w, h = round(pil.width * s), round(pil.height * s)
        ref = np.asarray(pil.resize((w, h), Image.BILINEAR), np.float32) / 255
        ref = ref[(h - 64) // 2 : (h - 64) // 2 + 64, (w - 64) // 2 : (w - 64) // 2 + 64]
        got = np.asarray(img).transpose(1, 2, 0)
        assert mask.sum() == 0
        assert np.abs(got - ref).mean() < 0.04, src.name


def test_a_release_without_orig_root_is_refused(release: tuple[Path, Path]) -> None:
    _, cache = release
    with pytest.raises(ValueError, match="orig_root"):
        ForComp(cache, "val", size=64, orig_img_prob="linear", epochs=4)
