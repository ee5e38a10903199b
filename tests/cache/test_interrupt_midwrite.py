"""SIGKILL *during* a write, not between writes: half of an item's file, or half of an index line, is
on disk when the build dies. Nothing partial may appear under a final name, the dead writer's
temporary file must be found and removed, and the rerun must give exactly the cache of an
uninterrupted build.

The child process runs a real build whose n-th file write (or n-th index append) writes half its
bytes, makes them durable, tells the parent and waits to be killed; the parent inspects the cache
while the writer is frozen mid-write, then kills it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scenes import make_imagefolder

import forcomp
from forcomp.cache.atomic import TMP_DIRNAME, iter_stale_tmp
from forcomp.cache.index import IndexRecord, read_index
from forcomp.cache.layout import CacheLayout
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache

CONFIG = {"split": "train", "segmenter": "classical", "inpainter": "telea", "batch_size": 2, "workers": 1}

# The child: a build whose n-th write of the chosen kind stops halfway.
CHILD = r"""
import json, os, sys, time
from pathlib import Path
import forcomp.cache.atomic as atomic
import forcomp.cache.index as index
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache

source, cache, kind = sys.argv[1:4]
nth, config = int(sys.argv[4]), json.loads(sys.argv[5])
calls = 0

def freeze(fd, written):
    os.fsync(fd)
    print("frozen", written, flush=True)
    time.sleep(60)
    os._exit(3)  # never reached when the parent kills us

class HalfFile:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()
    def write(self, data):
        global calls
        calls += 1
        if calls != nth:
            return self.f.write(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        freeze(self.f.fileno(), self.f.name)
    def __getattr__(self, name):
        return getattr(self.f, name)

class HalfLineOs:
    def write(self, fd, data):
        global calls
        calls += 1
        if calls != nth:
            return os.write(fd, data)
        first_end = data.index(b"\n") + 1  # cut inside the first record after the batch's start
        cut = first_end // 2
        os.write(fd, data[:cut])
        freeze(fd, cut)
    def __getattr__(self, name):
        return getattr(os, name)

if kind == "file":
    atomic.open = lambda path, mode="r", *a, **k: HalfFile(open(path, mode, *a, **k))
else:
    index.os = HalfLineOs()
build_cache(Path(source), Path(cache), BuildConfig(**config))
print("finished", flush=True)
"""


def _snapshot(cache: Path) -> dict[str, bytes]:
    files = {
        str(p.relative_to(cache)): p.read_bytes() for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")
    }
    files["ratios"] = (cache / "fg_bg_ratios_train.json").read_bytes()
    return files


def _content(rec: IndexRecord) -> tuple:
    """A record without the fields that differ between two runs of the same build."""
    return (
        rec.key,
        rec.status,
        rec.label,
        rec.source_size,
        rec.bbox,
        rec.ratio,
        rec.segmenter,
        rec.inpainter,
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("midwrite")
    source = make_imagefolder(root / "src")
    cache = root / "clean"
    assert build_cache(source, cache, BuildConfig(**CONFIG)).exit_code == 0  # type: ignore[arg-type]
    return source, cache


def _run_until_frozen(source: Path, cache: Path, kind: str, nth: int) -> tuple[subprocess.Popen, str]:
    pkg_root = str(Path(forcomp.__file__).resolve().parents[1])  # the forcomp under test (also under mutmut)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(source), str(cache), kind, str(nth), json.dumps(CONFIG)],
        cwd=pkg_root,
        env={**os.environ, "PYTHONPATH": pkg_root},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("frozen "):
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child build never reached write {nth} ({line!r}): {err}")
    return proc, line.split(" ", 1)[1].strip()


@pytest.mark.parametrize("nth", [3, 4, 8], ids=["background", "foreground", "later-foreground"])
def test_kill_mid_file_write(clean, tmp_path, nth):
    source, clean_cache = clean
    cache = tmp_path / "cache"
    proc, tmp_name = _run_until_frozen(source, cache, "file", nth)
    try:
        partial = Path(tmp_name)
        assert partial.parent == cache / TMP_DIRNAME, "half-written bytes live only in CACHE/.tmp"
        expected = _snapshot(clean_cache)
        present = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")}
        assert len(present) == nth - 1, (
            "every earlier write is complete under its final name, this one is not"
        )
        for rel in present:
            assert (cache / rel).read_bytes() == expected[rel], f"{rel} is incomplete"
        assert 0 < partial.stat().st_size < max(len(v) for v in expected.values())
    finally:
        proc.kill()
        proc.wait()
    assert list(iter_stale_tmp(cache / TMP_DIRNAME)) == [partial], "the dead writer's leftover is stale"

    summary = build_cache(source, cache, BuildConfig(**CONFIG))  # type: ignore[arg-type]
    assert summary.exit_code == 0, summary.format()
    assert _snapshot(cache) == _snapshot(clean_cache)
    assert list((cache / TMP_DIRNAME).iterdir()) == [], "the rerun removed the dead writer's temporary file"
    assert sorted(map(_content, read_index(CacheLayout(cache, "train")).values())) == sorted(
        map(_content, read_index(CacheLayout(clean_cache, "train")).values())
    )


@pytest.mark.parametrize("nth", [1, 3], ids=["first-append", "later-append"])
def test_kill_mid_index_line(clean, tmp_path, nth):
    source, clean_cache = clean
    cache = tmp_path / "cache"
    layout = CacheLayout(cache, "train")
    proc, cut = _run_until_frozen(source, cache, "index", nth)
    try:
        (index_file,) = layout.index_dir.glob("*.jsonl")
        data = index_file.read_bytes()
        assert not data.endswith(b"\n") and int(cut) > 0, "the last line is cut in the middle"
        complete = data.count(b"\n")
    finally:
        proc.kill()
        proc.wait()

    # The reader returns exactly the records of the complete lines, the broken one is skipped.
    clean_records = {k: _content(r) for k, r in read_index(CacheLayout(clean_cache, "train")).items()}
    survived = read_index(layout)
    assert len(survived) == complete < len(clean_records)
    assert complete >= nth - 1, "each earlier append left at least one complete line"
    assert {k: _content(r) for k, r in survived.items()} == {k: clean_records[k] for k in survived}

    summary = build_cache(source, cache, BuildConfig(**CONFIG))  # type: ignore[arg-type]
    assert summary.exit_code == 0, summary.format()
    assert {k: _content(r) for k, r in read_index(layout).items()} == clean_records
    assert _snapshot(cache) == _snapshot(clean_cache)
    assert list((cache / TMP_DIRNAME).iterdir()) == []
