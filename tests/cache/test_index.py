"""forcomp's index: merging records of several writers, records of older builds, and what a reader
does with lines a crash or another system left behind."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import forcomp
from forcomp.cache.index import IndexRecord, IndexWriter, iter_records, read_index, scan_index
from forcomp.cache.layout import CacheLayout


def _rec(status: str, t: float, source: str = "/data/src/a/x.jpg", key: str = "a/x.JPEG") -> IndexRecord:
    cls, name = key.split("/")
    return IndexRecord(
        key=key,
        cls=cls,
        stem=name.rsplit(".", 1)[0],
        label=0,
        source=source,
        status=status,
        time=t,  # type: ignore[arg-type]
    )


def _full_record() -> IndexRecord:
    return IndexRecord(
        key="café/ü 1.JPEG",
        cls="café",
        stem="ü 1",
        label=3,
        source="/data/src/café/ü 1.jpg",
        status="ok",
        source_size=(640, 480),
        bbox=(10, 20, 300, 400),
        ratio=0.25,
        score=0.9,
        segmenter="classical",
        segmenter_weights=None,
        inpainter="telea",
        inpainter_weights="weights/x.pt",
        message=None,
        time=123.5,
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


def test_on_equal_times_the_later_line_wins(tmp_path):
    """Clocks with coarse ticks (16 ms on Windows) give two attempts of one writer the same time."""
    layout = CacheLayout(tmp_path, "train")
    with IndexWriter(layout) as w:
        w.append([_rec("ok", 5.0)])
        w.append([_rec("error", 5.0)])
    assert read_index(layout)["a/x.JPEG"].status == "error"


def test_relative_source_of_an_old_build_is_read_back_unchanged(tmp_path):
    layout = CacheLayout(tmp_path, "val")
    with IndexWriter(layout) as w:
        w.append([_rec("ok", 1.0, source="src/a/x.jpg")])
    rec = read_index(layout)["a/x.JPEG"]
    assert rec.source == "src/a/x.jpg" and not Path(rec.source).is_absolute()


def test_a_record_reads_back_equal(tmp_path):
    layout = CacheLayout(tmp_path, "val")
    rec = _full_record()
    with IndexWriter(layout) as w:
        w.append([rec])
    back = read_index(layout)[rec.key]
    assert back == rec, "tuples come back as tuples, every field unchanged"
    assert isinstance(back.bbox, tuple) and isinstance(back.source_size, tuple)


def test_blank_and_broken_lines_are_skipped_not_fatal(tmp_path, caplog):
    """A writer killed mid-line leaves a broken last line; a broken line anywhere (a copied or
    repaired file) must not hide the records after it, and is reported by file and line."""
    layout = CacheLayout(tmp_path, "train")
    layout.index_dir.mkdir(parents=True)
    path = layout.index_dir / "old.jsonl"
    lines = [
        _rec("ok", 1.0, key="a/one.JPEG").to_json(),
        "",
        '{"key": "a/two.JPEG", "cls": "a", "stem": "tw',
        _rec("ok", 1.0, key="a/three.JPEG").to_json(),
        '["not", "a", "record"]',
        _rec("ok", 1.0, key="a/four.JPEG").to_json(),
        '{"key": "a/five.JPEG", "st',
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    with caplog.at_level(logging.DEBUG, logger="forcomp.cache.index"):
        found = [(p, n, r.key) for p, n, r in iter_records(layout)]
    assert found == [(path, 1, "a/one.JPEG"), (path, 4, "a/three.JPEG"), (path, 6, "a/four.JPEG")]
    records, problems = scan_index(layout)
    assert [(p, n) for p, n, _ in records] == [(path, 1), (path, 4), (path, 6)]
    # Mid-file damage is a problem named by file:line, at warning level; the torn last line of a
    # killed writer is expected and only logged at debug level.
    assert [p.path for p in problems] == [f"{path}:3", f"{path}:5"]
    assert "Unterminated string" in problems[0].message and "JSON list" in problems[1].message
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [str(p) for p in problems]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == [f"ignoring the torn last line {path}:7 (a writer was killed)"]
    assert set(read_index(layout)) == {"a/one.JPEG", "a/three.JPEG", "a/four.JPEG"}


def test_non_ascii_names_read_back_under_a_non_utf8_locale(tmp_path):
    """The index is UTF-8 whatever the locale of the process that reads it (Windows, ``LC_ALL=C``)."""
    layout = CacheLayout(tmp_path, "val")
    rec = _full_record()
    with IndexWriter(layout) as w:
        w.append([rec])
    assert read_index(layout)[rec.key] == rec
    pkg_root = str(Path(forcomp.__file__).resolve().parents[1])  # the forcomp under test, also under mutmut
    code = (
        "import sys\nfrom forcomp.cache.index import read_index\n"
        "from forcomp.cache.layout import CacheLayout\n"
        "idx = read_index(CacheLayout(sys.argv[1], 'val')); print(ascii(sorted(idx)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": pkg_root,
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        "LC_ALL": "C",
        "LANG": "C",
    }
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=pkg_root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ascii([rec.key])


def test_index_file_names_say_which_writer_made_them(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    assert IndexWriter(layout).path.name.startswith("local.")
    w = IndexWriter(layout, "shard 2/8:x-y_z")
    assert w.path.parent == layout.index_dir
    assert w.path.name.startswith("shard_2_8_x-y_z.") and w.path.name.endswith(".jsonl")
    assert IndexWriter(layout, "s").path != IndexWriter(layout, "s").path, "two writers never share a file"


def test_index_files_are_plain_data_files(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    with IndexWriter(layout) as w:
        w.append([_rec("ok", 1.0)])
    mode = stat.S_IMODE(os.stat(w.path).st_mode)
    assert mode & 0o111 == 0, f"index file must not be executable: {oct(mode)}"
    assert mode & 0o600 == 0o600


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
def test_close_releases_the_file_and_a_closed_writer_can_append_again(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    before = len(os.listdir("/proc/self/fd"))
    w = IndexWriter(layout)
    w.append([])  # nothing to write: no file either
    assert not w.path.exists()
    w.append([_rec("ok", 1.0)])
    w.close()
    assert len(os.listdir("/proc/self/fd")) == before
    w.close()  # twice is fine
    w.append([_rec("error", 2.0)])
    w.close()
    assert len(os.listdir("/proc/self/fd")) == before
    assert [r.status for _, _, r in iter_records(layout)] == ["ok", "error"]


def _record(**over):
    d = {"key": "n01/a b.JPEG", "cls": "n01", "stem": "a b", "label": 3, "source": "src/n01/a b.JPEG",
         "status": "ok", "time": 5.0}  # fmt: skip
    d.update(over)
    return d


def test_index_record_from_dict_reads_every_field_and_drops_unknown_ones():
    r = IndexRecord.from_dict(_record(
        source_size=[640, 480], bbox=[1, 2, 30, 40], ratio=0.25, score=1, segmenter="sam",
        segmenter_weights="w.pth", inpainter="lama", inpainter_weights="big", message="m", extra="x",
    ))  # fmt: skip
    assert r == IndexRecord(
        key="n01/a b.JPEG", cls="n01", stem="a b", label=3, source="src/n01/a b.JPEG", status="ok",
        source_size=(640, 480), bbox=(1, 2, 30, 40), ratio=0.25, score=1, segmenter="sam",
        segmenter_weights="w.pth", inpainter="lama", inpainter_weights="big", message="m", time=5.0,
    )  # fmt: skip
    assert isinstance(r.source_size, tuple) and isinstance(r.bbox, tuple)
    bare = IndexRecord.from_dict(_record(status="no_object", label=0))
    assert (
        bare.source_size is None and bare.bbox is None and bare.ratio is None and bare.status == "no_object"
    )
    assert IndexRecord.from_dict(_record(status="error")).status == "error"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"key": 5}, "'key' must be a string, got 5"),
        ({"cls": None}, "'cls' must be a string, got None"),
        ({"stem": ["a"]}, "'stem' must be a string, got ['a']"),
        ({"source": 1.5}, "'source' must be a string, got 1.5"),
        ({"status": 0}, "'status' must be a string, got 0"),
        ({"key": "n01/other.JPEG"}, "key 'n01/other.JPEG' does not match cls/stem ('n01', 'a b')"),
        ({"status": "done"}, "status 'done' is not one of ok, no_object, error"),
        ({"label": -1}, "label must be an int >= 0, got -1"),
        ({"label": True}, "label must be an int >= 0, got True"),
        ({"label": "3"}, "label must be an int >= 0, got '3'"),
        ({"label": None}, "label must be an int >= 0, got None"),
        ({"source_size": [640]}, "source_size must be a list of 2 ints, got [640]"),
        ({"source_size": [640, 4.5]}, "source_size must be a list of 2 ints, got [640, 4.5]"),
        ({"source_size": "640x480"}, "source_size must be a list of 2 ints, got '640x480'"),
        ({"bbox": [1, 2, 3]}, "bbox must be a list of 4 ints, got [1, 2, 3]"),
        ({"bbox": [1, 2, 3, True]}, "bbox must be a list of 4 ints, got [1, 2, 3, True]"),
        ({"ratio": float("nan")}, "ratio must be a finite number, got nan"),
        ({"ratio": "0.5"}, "ratio must be a finite number, got '0.5'"),
        ({"score": float("inf")}, "score must be a finite number, got inf"),
        ({"score": False}, "score must be a finite number, got False"),
        ({"time": None, "ratio": -float("inf")}, "ratio must be a finite number, got -inf"),
        ({"time": "now"}, "time must be a finite number, got 'now'"),
        ({"segmenter": 1}, "segmenter must be a string, got 1"),
        ({"segmenter_weights": 2}, "segmenter_weights must be a string, got 2"),
        ({"inpainter": 3}, "inpainter must be a string, got 3"),
        ({"inpainter_weights": 4}, "inpainter_weights must be a string, got 4"),
        ({"message": 5}, "message must be a string, got 5"),
    ],
)
def test_index_record_from_dict_names_the_field_and_the_value(over, message):
    with pytest.raises(ValueError) as e:
        IndexRecord.from_dict(_record(**over))
    assert str(e.value) == message


def test_index_record_from_dict_refuses_a_non_object_and_unsafe_names():
    from forcomp.errors import UnsafePathError

    with pytest.raises(ValueError, match="^a JSON list, expected an object$"):
        IndexRecord.from_dict([1])  # type: ignore[arg-type]
    with pytest.raises(UnsafePathError, match="class name"):
        IndexRecord.from_dict(_record(cls="..", key="../a b.JPEG"))
    with pytest.raises(UnsafePathError, match="stem"):
        IndexRecord.from_dict(_record(stem="x/y", key="n01/x/y.JPEG"))


def test_scan_index_reads_files_in_order_and_names_what_it_refuses(tmp_path):
    from forcomp.cache.layout import CacheLayout

    layout = CacheLayout(tmp_path / "cache", "train")
    assert scan_index(layout) == ([], [])  # no index folder: nothing, no error
    layout.index_dir.mkdir(parents=True)
    b, a = layout.index_dir / "b.jsonl", layout.index_dir / "a.jsonl"
    b.write_text(_rec("ok", 1.0, key="a/bee.JPEG").to_json() + "\n", encoding="utf-8")
    # a valid last line without its newline is kept; padding around a line is ignored
    a.write_text(
        "  "
        + _rec("ok", 2.0, key="a/ant.JPEG").to_json()
        + "  \n\n"
        + _rec("ok", 3.0, key="a/ape.JPEG").to_json()
    )
    (layout.index_dir / "notes.txt").write_text("not an index\n")
    bad = layout.index_dir / "c.jsonl"
    bad.write_bytes(b'{"key": 1}\n\xff\xfe\n' + _rec("ok", 4.0, key="a/cat.JPEG").to_json().encode() + b"\n")
    os.mkfifo(layout.index_dir / "d.jsonl")
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(_rec("ok", 5.0, key="a/eel.JPEG").to_json() + "\n")
    (layout.index_dir / "e.jsonl").symlink_to(outside)
    records, problems = scan_index(layout)
    assert [(p.name, n, r.key) for p, n, r in records] == [
        ("a.jsonl", 1, "a/ant.JPEG"), ("a.jsonl", 3, "a/ape.JPEG"), ("b.jsonl", 1, "a/bee.JPEG"),
        ("c.jsonl", 3, "a/cat.JPEG"),
    ]  # fmt: skip
    assert [str(p) for p in problems[:2]] == [
        f"{bad}:1: index line refused ('key' must be a string, got 1)",
        f"{bad}:2: index line refused (Expecting value: line 1 column 1 (char 0))",
    ]
    assert [(p.path, p.message.split(":")[0].split(" (")[0]) for p in problems[2:]] == [
        (str(layout.index_dir / "d.jsonl"), "not a regular file"),
        (str(layout.index_dir / "e.jsonl"), f"symbolic link to {outside}, outside {tmp_path / 'cache'}"),
    ]


def test_recorded_sources_lists_each_builds_source_newest_first_and_skips_broken_files(tmp_path):
    import json

    from forcomp.cache.index import recorded_sources

    layout = CacheLayout(tmp_path / "cache", "train")
    assert recorded_sources(layout) == []  # no index folder yet
    layout.index_dir.mkdir(parents=True)
    provs = {
        "build-1.json": {"started": 10.0, "finished": 30.0, "source": "/data/finished30"},
        "build-2.json": {"started": 20.0, "source": "/data/started20"},  # killed: only its start
        "build-3.json": {"started": 40.0, "finished": None, "source": "/data/started40"},
        "build-4.json": {"source": "/data/undated"},  # no time: oldest
        "build-5.json": {"finished": 50.0, "source": ""},  # no source: skipped
        "build-6.json": {"finished": 60.0, "source": ["/data/list"]},  # not a string: skipped
        "build-7.json": ["not", "an", "object"],
        "build-8.json": {"finished": "yesterday", "source": "/data/bad-time"},
        "other.json": {"finished": 99.0, "source": "/data/not-a-build-file"},
    }
    for name, prov in provs.items():
        (layout.index_dir / name).write_text(json.dumps(prov), encoding="utf-8")
    (layout.index_dir / "build-9.json").write_bytes(b"{\xff not json")
    os.mkfifo(layout.index_dir / "build-10.json")  # a special file is skipped, never waited on
    assert recorded_sources(layout) == [
        "/data/started40",
        "/data/finished30",
        "/data/started20",
        "/data/undated",
    ]


def test_index_writer_appends_whole_lines_or_nothing(tmp_path, monkeypatch):
    """A write that fails midway is cut back to the last whole line; a write that writes nothing
    is a full disk; a file that cannot be cut back refuses every later append (a partial line
    must never be followed by records)."""
    import errno

    layout = CacheLayout(tmp_path / "cache", "val")
    one, two = _rec("ok", 1.0, key="a/one.JPEG"), _rec("ok", 2.0, key="a/two.JPEG")
    real_write, real_fsync, real_truncate = os.write, os.fsync, os.ftruncate
    w = IndexWriter(layout)
    w.append([])  # nothing to write: no file either
    assert not w.path.exists()
    w.append([one, two])
    first = w.path.read_bytes()
    assert first == (one.to_json() + "\n" + two.to_json() + "\n").encode()
    assert stat.S_IMODE(os.stat(w.path).st_mode) == 0o644 & ~_umask()
    calls = []

    def partial(fd, data):
        calls.append(len(data))
        return real_write(fd, data[:7]) if len(calls) == 1 else real_write(fd, data)

    monkeypatch.setattr(os, "write", partial)
    w.append([one])  # a short write is continued with the rest, not repeated
    monkeypatch.undo()
    line = (one.to_json() + "\n").encode()
    assert calls == [len(line), len(line) - 7] and w.path.read_bytes() == first + line
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(OSError) as e:
        w.append([two])
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and "bytes not written" in str(e.value)
    assert w.path.read_bytes() == first + line  # nothing was written: nothing to cut
    fsyncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    w.append([two])
    monkeypatch.undo()
    assert len(fsyncs) == 1  # each append is on disk before it returns
    good = w.path.read_bytes()

    written = []

    def half_then_full(fd, data):
        if not written:
            written.append(20)
            return real_write(fd, data[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        w.append([one])
    monkeypatch.undo()
    assert w.path.read_bytes() == good  # the 20 bytes written are cut back
    written.clear()

    def no_truncate(fd, size):
        raise OSError(errno.EIO, "cannot truncate")

    monkeypatch.setattr(os, "write", half_then_full)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError, match="No space left"):
        w.append([one])
    monkeypatch.undo()
    assert w.path.read_bytes()[: len(good)] == good and len(w.path.read_bytes()) == len(good) + 20
    with pytest.raises(OSError, match="ends in a partial line that could not be removed") as e:
        w.append([two])  # refused: it would follow the partial line
    assert e.value.errno == errno.EIO
    w.close()
    assert real_truncate is os.ftruncate


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
