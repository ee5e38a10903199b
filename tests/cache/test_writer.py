"""The cache writer: an item's files are encoded as the format says, written atomically through
``CACHE/.tmp``, checked and removed as a pair."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from forcomp.cache import atomic
from forcomp.cache.atomic import TMP_DIRNAME
from forcomp.cache.layout import CacheLayout
from forcomp.cache.writer import (
    CacheWriter,
    encode_background,
    encode_foreground,
    item_files_state,
    mask_bbox,
)

DEFAULT_QUALITY = 95  # BuildConfig's jpeg_quality / webp_quality default


@pytest.fixture
def smooth_image() -> np.ndarray:
    """A (40, 50, 3) colour gradient: lossy codecs reproduce it within a few levels."""
    yy, xx = np.mgrid[:40, :50]
    return np.stack([xx * 5, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)


@pytest.fixture
def disc_mask() -> np.ndarray:
    yy, xx = np.mgrid[:40, :50]
    return ((yy - 20) ** 2 + (xx - 25) ** 2) < 150


def test_write_check_remove(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    writer = CacheWriter(layout)
    assert item_files_state(layout, "c", "s") == (False, False)
    assert writer.remove_item("c", "s") is False, "nothing to remove is not an error"
    writer.write_item("c", "s", b"fg", b"bg")
    assert layout.fg_path("c", "s").read_bytes() == b"fg" and layout.bg_path("c", "s").read_bytes() == b"bg"
    assert item_files_state(layout, "c", "s") == (True, True)
    layout.bg_path("c", "s").write_bytes(b"")
    assert item_files_state(layout, "c", "s") == (False, True), "an empty file is not a file"
    layout.bg_path("c", "s").unlink()
    assert item_files_state(layout, "c", "s") == (False, True)
    assert writer.remove_item("c", "s") is True
    assert item_files_state(layout, "c", "s") == (False, False)
    assert not any((tmp_path / ".tmp").iterdir())


def test_one_byte_files_are_complete_and_empty_files_are_present(tmp_path):
    layout = CacheLayout(tmp_path, "val")
    CacheWriter(layout).write_item("c", "s", b"f", b"b")
    assert item_files_state(layout, "c", "s") == (True, True)
    for path in (layout.fg_path("c", "s"), layout.bg_path("c", "s")):
        path.write_bytes(b"")
    assert item_files_state(layout, "c", "s") == (False, True), "empty files are there (to be redone)"


def test_temporaries_live_in_the_cache_tmp_folder(tmp_path, monkeypatch):
    """Temporaries in ``CACHE/.tmp`` never appear in a class folder a reader lists, and the build's
    stale clean-up (which only looks there) finds those of a killed writer."""
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst):  # noqa: ANN001
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    layout = CacheLayout(tmp_path, "train")
    CacheWriter(layout).write_item("c", "s", b"fg", b"bg")
    assert [dst for _, dst in renames] == [layout.bg_path("c", "s"), layout.fg_path("c", "s")], (
        "background first, foreground (what makes the item usable) last"
    )
    assert {src.parent for src, _ in renames} == {tmp_path / TMP_DIRNAME}


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_foreground_is_the_masked_object_cropped_to_its_box(smooth_image, disc_mask):
    data, box = encode_foreground(smooth_image, disc_mask)
    assert box == mask_bbox(disc_mask) == (13, 8, 38, 33)
    im = _decode(data)
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (25, 25)
    rgba = np.asarray(im)
    x0, y0, x1, y1 = box
    m = disc_mask[y0:y1, x0:x1]
    np.testing.assert_array_equal(rgba[..., 3], np.where(m, 255, 0), err_msg="alpha is the mask, losslessly")
    err = np.abs(rgba[..., :3].astype(int) - smooth_image[y0:y1, x0:x1])[m]
    assert err.mean() < 3 and err.max() < 40, "object colours survive the lossy encoding"


def test_foreground_quality_is_used_and_defaults_to_95(smooth_image, disc_mask):
    best, _ = encode_foreground(smooth_image, disc_mask, quality=DEFAULT_QUALITY)
    assert encode_foreground(smooth_image, disc_mask)[0] == best
    worse, _ = encode_foreground(smooth_image, disc_mask, quality=20)
    assert len(worse) < len(best)


def test_background_is_a_full_chroma_jpeg_of_the_image(smooth_image):
    im = _decode(encode_background(smooth_image))
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (50, 40)
    assert JpegImagePlugin.get_sampling(im) == 0, "4:4:4: no chroma subsampling at inpainted edges"
    err = np.abs(np.asarray(im).astype(int) - smooth_image)
    assert err.mean() < 1 and err.max() <= 4


def test_background_quality_is_used_and_defaults_to_95(smooth_image):
    best = encode_background(smooth_image, quality=DEFAULT_QUALITY)
    assert encode_background(smooth_image) == best
    assert len(encode_background(smooth_image, quality=20)) < len(best)


def test_background_huffman_tables_are_optimised(smooth_image):
    """Optimised tables: the same pixels in fewer bytes (~40 % fewer on this small image), which adds
    up over a million cached backgrounds."""
    data = encode_background(smooth_image)
    plain = io.BytesIO()
    Image.fromarray(smooth_image).save(plain, format="JPEG", quality=DEFAULT_QUALITY, subsampling=0)
    np.testing.assert_array_equal(np.asarray(_decode(data)), np.asarray(_decode(plain.getvalue())))
    assert len(data) < 0.9 * len(plain.getvalue())
