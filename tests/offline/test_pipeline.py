"""The weight-free offline build: cache invariants, resume, shards, workers, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import make_imagefolder, synthetic_scene

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.verify import verify_cache
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache


def _files(cache: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and p.suffix in (".WEBP", ".JPEG")
    }


def test_layout_invariants(built_cache):
    source, cache = built_cache
    layout = CacheLayout(cache, "val")
    index = read_index(layout)
    ratios = json.loads(layout.ratios_path.read_text())
    assert len(index) == 9 and all(r.status == "ok" for r in index.values())
    assert set(ratios) == set(index)
    for key, rec in index.items():
        src = np.asarray(Image.open(rec.source).convert("RGB"))
        h, w = src.shape[:2]
        fg = Image.open(layout.fg_path(rec.cls, rec.stem))
        bg = Image.open(layout.bg_path(rec.cls, rec.stem))
        assert fg.mode == "RGBA" and bg.mode == "RGB"
        assert bg.size == (w, h) == tuple(rec.source_size)
        a = np.asarray(fg)[..., 3]
        assert set(np.unique(a)) <= {0, 255}, "alpha must be the binary mask"
        # tight crop: every border row/column of the crop touches the object
        m = a > 0
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
        x0, y0, x1, y1 = rec.bbox
        assert fg.size == (x1 - x0, y1 - y0)
        assert 0 < ratios[key] < 1
        assert ratios[key] == pytest.approx(m.sum() / (w * h), abs=1e-9)


def test_masks_match_the_synthetic_objects(built_cache):
    """The classical segmenter finds the ellipse: IoU with the true object > 0.8."""
    _, cache = built_cache
    layout = CacheLayout(cache, "val")
    for rec in read_index(layout).values():
        i = int(rec.stem[3:])
        truth = synthetic_scene(rec.cls, i)  # regenerate to get the true mask by colour distance
        w, h = rec.source_size
        full = np.zeros((h, w), bool)
        x0, y0, x1, y1 = rec.bbox
        full[y0:y1, x0:x1] = np.asarray(Image.open(layout.fg_path(rec.cls, rec.stem)))[..., 3] > 0
        colour = {"n00000001": (220, 40, 40), "n00000002": (40, 200, 60), "n00000003": (50, 70, 230)}[rec.cls]
        true_mask = np.abs(truth.astype(int) - np.array(colour)).sum(-1) < 60
        iou = (full & true_mask).sum() / (full | true_mask).sum()
        assert iou > 0.8, (rec.key, iou)


def test_background_has_object_removed(built_cache):
    _, cache = built_cache
    layout = CacheLayout(cache, "val")
    for rec in read_index(layout).values():
        src = np.asarray(Image.open(rec.source).convert("RGB")).astype(float)
        bg = np.asarray(Image.open(layout.bg_path(rec.cls, rec.stem))).astype(float)
        x0, y0, x1, y1 = rec.bbox
        m = np.zeros(src.shape[:2], bool)
        m[y0:y1, x0:x1] = np.asarray(Image.open(layout.fg_path(rec.cls, rec.stem)))[..., 3] > 0
        # inside the object the background now looks like the surroundings, not the object colour
        ring = np.zeros_like(m)
        ring[max(0, y0 - 6) : y1 + 6, max(0, x0 - 6) : x1 + 6] = True
        ring &= ~m
        assert np.abs(bg[m].mean(0) - src[ring].mean(0)).max() < 40
        assert np.abs(bg[m].mean(0) - src[m].mean(0)).max() > 40
        # far from the object the background is the source (up to JPEG error)
        far = ~ring & ~m
        assert np.abs(bg[far] - src[far]).mean() < 4


def test_resume_writes_no_image_file(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=2)
    cache = tmp_path / "cache"
    s1 = build_cache(source, cache, BuildConfig(split="train"))
    assert s1.ok == 6
    before = {
        p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")
    }
    s2 = build_cache(source, cache, BuildConfig(split="train"))
    assert s2.skipped == 6 and s2.processed == 0
    after = {
        p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")
    }
    assert before == after
    # a new image is picked up by the rerun, and only it is processed
    Image.fromarray(synthetic_scene("n00000001", 7)).save(source / "n00000001" / "new.jpg")
    s3 = build_cache(source, cache, BuildConfig(split="train"))
    assert s3.processed == 1 and s3.ok == 1
    assert verify_cache(cache) == []


def test_shards_combine_to_the_same_cache(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=3)
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    build_cache(source, one, BuildConfig(split="val"))
    counts = []
    for i in range(3):
        counts.append(build_cache(source, sharded, BuildConfig(split="val", shard=(i, 3))).processed)
    assert sum(counts) == 9 and max(counts) < 9, "each shard processes a strict subset"
    assert _files(one) == _files(sharded)
    assert json.loads((one / "fg_bg_ratios_val.json").read_text()) == json.loads(
        (sharded / "fg_bg_ratios_val.json").read_text()
    )
    assert verify_cache(sharded) == []


def test_workers_give_the_same_cache(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=3)
    build_cache(source, tmp_path / "w1", BuildConfig(split="val", workers=1, batch_size=2))
    s = build_cache(source, tmp_path / "w2", BuildConfig(split="val", workers=2, batch_size=2))
    assert s.ok == 9
    assert _files(tmp_path / "w1") == _files(tmp_path / "w2")


def test_bad_files_are_recorded_not_fatal(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=2)
    (source / "n00000001" / "empty.jpg").write_bytes(b"")
    (source / "n00000002" / "text.png").write_text("not an image")
    good = (source / "n00000003" / "img0.jpg").read_bytes()
    (source / "n00000003" / "trunc.jpg").write_bytes(good[: len(good) // 3])
    (source / "n00000003" / ".hidden.jpg").write_bytes(good)
    (source / "n00000003" / "notes.txt").write_text("skip me")
    s = build_cache(source, tmp_path / "cache", BuildConfig(split="train"))
    failed = {Path(src).name: msg for src, msg in s.errors}
    assert set(failed) >= {"empty.jpg", "text.png"}
    assert "0 bytes" in failed["empty.jpg"] and "not a recognised image" in failed["text.png"]
    assert s.ok == 6 and s.exit_code == 1
    assert s.total == 6 + 3  # hidden and non-image files are not items
    index = read_index(CacheLayout(tmp_path / "cache", "train"))
    assert index["n00000001/empty.JPEG"].status == "error"
    assert verify_cache(tmp_path / "cache") == []


def test_blank_image_is_no_object(tmp_path):
    src = tmp_path / "src" / "n00000001"
    src.mkdir(parents=True)
    Image.new("RGB", (80, 60), (128, 128, 128)).save(src / "blank.png")
    s = build_cache(tmp_path / "src", tmp_path / "cache", BuildConfig(split="train"))
    assert s.no_object == 1 and s.exit_code == 0
    assert not (tmp_path / "cache" / "train" / "foregrounds" / "n00000001" / "blank.WEBP").exists()
    assert json.loads((tmp_path / "cache" / "fg_bg_ratios_train.json").read_text()) == {}


def test_no_temporary_files_left(built_cache):
    _, cache = built_cache
    tmp = cache / ".tmp"
    assert not tmp.exists() or not any(tmp.iterdir())
    assert not [p for p in cache.rglob("*") if "forcomp-tmp" in p.name]


def test_missing_source_is_a_clear_error(tmp_path):
    from forcomp.errors import ForcompError

    with pytest.raises(ForcompError, match="does not exist"):
        build_cache(tmp_path / "nope", tmp_path / "cache")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ForcompError, match="not a directory"):
        build_cache(tmp_path / "file.jpg", tmp_path / "cache")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"split": "test"}, "split"),
        ({"shard": (3, 3)}, "shard"),
        ({"batch_size": 0}, "batch_size"),
        ({"min_area_ratio": 0.5, "max_area_ratio": 0.4}, "min_area_ratio"),
        ({"engine": "spark"}, "engine"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
    ],
)
def test_build_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        BuildConfig(**kw)


def test_index_survives_a_broken_last_line(built_cache, tmp_path):
    import shutil

    _, cache = built_cache
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    part = next((copy / "val" / "index").glob("*.jsonl"))
    with open(part, "a") as f:
        f.write('{"key": "n00000001/img0.JPEG", "status": "o')  # a writer killed mid-line
    assert len(read_index(CacheLayout(copy, "val"))) == 9
    assert verify_cache(copy) == []
    os.remove(part)


def test_odd_class_names_and_formats_build(tmp_path):
    """Spaces and non-ASCII in class names; grayscale, CMYK, palette+transparency, 16-bit, TIFF."""
    src = tmp_path / "src"
    scene = synthetic_scene("n00000001", 0, (120, 90))
    d1, d2 = src / "ç lass 猫", src / "plain"
    d1.mkdir(parents=True)
    d2.mkdir(parents=True)
    base = Image.fromarray(scene)
    base.save(d1 / "rgb.jpg", quality=95)
    base.convert("CMYK").save(d1 / "cmyk.jpg", quality=95)
    base.convert("L").save(d2 / "gray.png")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=32)
    pal.save(d2 / "pal.png", transparency=0)
    base.save(d2 / "img.TIFF")
    Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257).save(d2 / "g16.png")
    s = build_cache(src, tmp_path / "cache", BuildConfig(split="train"))
    assert s.errors == [] and s.ok + s.no_object == 6 and s.ok >= 4, s.format()
    assert (tmp_path / "cache" / "train" / "foregrounds" / "ç lass 猫" / "rgb.WEBP").exists()
    assert verify_cache(tmp_path / "cache") == []


def test_script_without_main_guard_fails_clearly_instead_of_hanging(tmp_path):
    """Worker processes start with spawn and re-import the calling script: without the
    ``if __name__ == "__main__":`` guard they cannot start. The build must stop with a message
    saying so (a multiprocessing.Pool respawns them forever and the build hangs)."""
    import subprocess
    import sys

    source = make_imagefolder(tmp_path / "src", per_class=2)
    script = tmp_path / "build_it.py"
    script.write_text(
        "from forcomp import BuildConfig, build_cache\n"
        f"build_cache({str(source)!r}, {str(tmp_path / 'cache')!r}, "
        "BuildConfig(split='val', workers=2, batch_size=1))\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert 'if __name__ == "__main__":' in run.stderr
