"""forcomp's index: merging records of several writers, and records of older builds."""

from __future__ import annotations

from pathlib import Path

from forcomp.cache.index import IndexRecord, IndexWriter, read_index
from forcomp.cache.layout import CacheLayout


def _rec(status: str, t: float, source: str = "/data/src/a/x.jpg") -> IndexRecord:
    return IndexRecord(
        key="a/x.JPEG",
        cls="a",
        stem="x",
        label=0,
        source=source,
        status=status,
        time=t,  # type: ignore[arg-type]
    )


def test_newest_record_wins_whatever_its_status(tmp_path):
    """A rebuild's error (or no_object) replaces the older ok record: the build has removed the
    files that record described, so keeping it would promise files that are gone."""
    layout = CacheLayout(tmp_path, "train")
    with IndexWriter(layout, "one") as w:
        w.append([_rec("ok", 1.0)])
    with IndexWriter(layout, "two") as w:
        w.append([_rec("error", 2.0)])
    assert read_index(layout)["a/x.JPEG"].status == "error"
    with IndexWriter(layout, "three") as w:
        w.append([_rec("ok", 3.0), _rec("no_object", 0.5)])  # an older line read later loses
    assert read_index(layout)["a/x.JPEG"].status == "ok"


def test_relative_source_of_an_old_build_is_read_back_unchanged(tmp_path):
    layout = CacheLayout(tmp_path, "val")
    with IndexWriter(layout) as w:
        w.append([_rec("ok", 1.0, source="src/a/x.jpg")])
    rec = read_index(layout)["a/x.JPEG"]
    assert rec.source == "src/a/x.jpg" and not Path(rec.source).is_absolute()
