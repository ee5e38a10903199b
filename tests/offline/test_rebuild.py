"""Rebuilds and resumes over an existing cache: stale and missing files, moved working directories,
other backends, and what the summary and provenance say about it."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from scenes import make_imagefolder

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.reader import CacheReader
from forcomp.cache.verify import verify_cache
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache
from forcomp.offline.pipeline import Backends, process_batch
from forcomp.offline.sources import list_items

CFG = dict(split="train", segmenter="classical", inpainter="telea")


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path, CacheLayout]:
    """(source, cache, layout): 3 classes x 2 images, built, all ok."""
    source = make_imagefolder(tmp_path / "src", per_class=2)
    cache = tmp_path / "cache"
    s = build_cache(source, cache, BuildConfig(**CFG))
    assert s.ok == 6, s.format()
    return source, cache, CacheLayout(cache, "train")


def _blank(path: Path) -> None:
    Image.new("RGB", (80, 60), (128, 128, 128)).save(path, "JPEG")


def test_rebuild_removes_files_of_items_no_longer_ok(small):
    """ok -> no_object and ok -> error on a rebuild: the old files go, readers and verify are happy."""
    source, cache, layout = small
    _blank(source / "n00000002" / "img0.jpg")  # now: no object
    (source / "n00000001" / "img0.jpg").write_bytes(b"garbage")  # now: error
    s = build_cache(source, cache, BuildConfig(**CFG, resume=False))
    assert (s.ok, s.no_object, len(s.errors)) == (4, 1, 1), s.format()
    index = read_index(layout)
    assert index["n00000002/img0.JPEG"].status == "no_object"
    assert index["n00000001/img0.JPEG"].status == "error", "the rebuild's error is the item's state"
    for cls in ("n00000001", "n00000002"):
        assert not layout.fg_path(cls, "img0").exists() and not layout.bg_path(cls, "img0").exists()
    assert verify_cache(cache) == []
    reader = CacheReader(cache, "train")  # every foreground left has its ratio
    assert len(reader.fg) == 4


def test_files_go_before_the_record_so_a_kill_in_between_is_harmless(small):
    """process_batch removes the stale files before its records reach the index. Killed right
    there, the index still says ok: readers skip the item, and the next resume redoes it."""
    source, cache, layout = small
    _blank(source / "n00000003" / "img0.jpg")
    config = BuildConfig(**CFG, resume=False)
    item = next(it for it in list_items(source.resolve()) if it.key == "n00000003/img0.JPEG")
    (rec,) = process_batch([item], Backends.from_config(config), config, layout)  # never indexed
    assert rec.status == "no_object" and not layout.fg_path("n00000003", "img0").exists()
    assert read_index(layout)["n00000003/img0.JPEG"].status == "ok"
    assert len(CacheReader(cache, "train").fg) == 5
    s = build_cache(source, cache, BuildConfig(**CFG))
    assert (s.skipped, s.no_object) == (5, 1), s.format()
    assert verify_cache(cache) == []


def test_resume_redoes_items_whose_files_are_missing_or_empty(small, caplog):
    source, cache, layout = small
    before = layout.fg_path("n00000001", "img0").read_bytes()
    layout.bg_path("n00000003", "img1").unlink()
    layout.fg_path("n00000001", "img0").write_bytes(b"")
    assert verify_cache(cache) != []
    with caplog.at_level(logging.WARNING, logger="forcomp"):
        s = build_cache(source, cache, BuildConfig(**CFG))
    assert (s.skipped, s.ok) == (4, 2), s.format()
    assert "2 item(s) already done miss a foreground or background file" in caplog.text
    assert verify_cache(cache) == []
    assert layout.fg_path("n00000001", "img0").read_bytes() == before, "redone byte for byte"
    assert build_cache(source, cache, BuildConfig(**CFG)).processed == 0


def test_resume_redoes_no_object_items_that_still_have_files(small):
    """A cache damaged by an earlier forcomp (no_object record, old files left) is repaired."""
    source, cache, layout = small
    keep = {
        p: p.read_bytes() for p in (layout.fg_path("n00000002", "img0"), layout.bg_path("n00000002", "img0"))
    }
    _blank(source / "n00000002" / "img0.jpg")
    build_cache(source, cache, BuildConfig(**CFG, resume=False))
    for p, data in keep.items():  # files of an earlier build that a no-object item must not keep
        p.write_bytes(data)
    s = build_cache(source, cache, BuildConfig(**CFG))
    assert (s.skipped, s.no_object) == (5, 1), s.format()
    assert not any(p.exists() for p in keep)
    assert verify_cache(cache) == []


def test_index_stores_absolute_source_paths(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "work" / "src", per_class=1)
    monkeypatch.chdir(tmp_path / "work")
    build_cache("src", "cache", BuildConfig(**CFG))
    index = read_index(CacheLayout(Path("cache"), "train"))
    for rec in index.values():
        assert Path(rec.source).is_absolute(), rec.source
        assert Path(rec.source) == (tmp_path / "work" / "src" / rec.cls / "img0.jpg").resolve()
    prov = json.loads(next(Path("cache/train/index").glob("build-*.json")).read_text())
    assert prov["source"] == str((tmp_path / "work" / "src").resolve())
    monkeypatch.chdir(tmp_path)  # another working directory: the sources are still found
    reader = CacheReader(tmp_path / "work" / "cache", "train")
    found = [reader.source_path(i) for i in range(len(reader.fg))]
    assert len(found) == 3 and all(p is not None and p.is_file() for p in found)


def test_resume_with_other_backends_warns_once_and_summary_says_what_was_kept(small, caplog):
    source, cache, _ = small
    with caplog.at_level(logging.WARNING, logger="forcomp"):
        s = build_cache(source, cache, BuildConfig(**{**CFG, "inpainter": "ns"}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "6 items already done with segmenter=classical inpainter=telea are kept; this run (inpainter=ns) "
        "applies to new items only; pass --no-resume (resume=False) to redo them"
    ]
    first = s.format().splitlines()[0]
    assert "processed 0 with segmenter=classical inpainter=ns" in first
    assert "6 already done, kept as they were (made with segmenter=classical inpainter=telea)" in first
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forcomp"):
        build_cache(source, cache, BuildConfig(**CFG))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "same backends: no warning"


def test_error_line_names_the_file_once(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=1)
    bad = source / "n00000001" / "a.jpg"
    bad.write_bytes(b"garbage")
    s = build_cache(source, tmp_path / "cache", BuildConfig(**CFG))
    (line,) = [ln for ln in s.format().splitlines() if "error:" in ln]
    assert line == f"  error: {bad.resolve()}: not a recognised image file"
    rec = read_index(CacheLayout(tmp_path / "cache", "train"))["n00000001/a.JPEG"]
    assert rec.message == "not a recognised image file"


def test_provenance_records_start_and_end(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=2)
    t_before = time.time()
    build_cache(source, tmp_path / "cache", BuildConfig(**CFG))
    layout = CacheLayout(tmp_path / "cache", "train")
    prov = json.loads(next(layout.index_dir.glob("build-*.json")).read_text())
    times = [r.time for r in read_index(layout).values()]
    assert t_before <= prov["started"] <= min(times) <= max(times) <= prov["finished"]


def test_cache_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    from forcomp.cli import main
    from forcomp.errors import ForcompError

    source = make_imagefolder(tmp_path / "src", per_class=1)
    some_file = tmp_path / "some_file.py"
    some_file.write_text("print()\n")
    with pytest.raises(ForcompError, match=f"{some_file}.*must be a directory"):
        build_cache(source, some_file)
    assert main(["build", str(source), str(some_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(some_file) in err and "must be a directory" in err and "Traceback" not in err
    assert some_file.read_text() == "print()\n"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train").write_text("")  # a file where the split's folder goes
    with pytest.raises(ForcompError, match="must be a directory"):
        build_cache(source, tmp_path / "c")


def test_source_errors_say_what_is_wrong(tmp_path):
    from forcomp.errors import ForcompError

    with pytest.raises(ForcompError, match="does not exist"):
        build_cache(tmp_path / "nope", tmp_path / "cache")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(make_imagefolder(tmp_path / "src", per_class=1) / "n00000001" / "img0.jpg", flat)
    with pytest.raises(
        ForcompError, match=r"1 image file\(s\) but no class sub-folders: put the images in SOURCE/<class>/"
    ):
        build_cache(flat, tmp_path / "cache")
    assert not (tmp_path / "cache").exists(), "nothing created before failing"
