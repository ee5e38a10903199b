"""SIGKILL at any moment, then resume: the cache equals an uninterrupted one; concurrent writers are safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scenes import make_imagefolder

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.verify import verify_cache
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache

pytestmark = pytest.mark.slow


def _snapshot(cache: Path) -> dict[str, bytes]:
    out = {
        str(p.relative_to(cache)): p.read_bytes() for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")
    }
    out["ratios"] = (cache / "fg_bg_ratios_train.json").read_bytes()
    return out


def _build_cmd(source: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "forcomp",
        "build",
        str(source),
        str(cache),
        "--quiet",
        "--batch-size",
        "1",
        *extra,
    ]


def _index_lines(cache: Path) -> int:
    d = cache / "train" / "index"
    return sum(p.read_bytes().count(b"\n") for p in d.glob("*.jsonl")) if d.is_dir() else 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    source = make_imagefolder(root / "src", per_class=8, size=(160, 120))
    clean = root / "clean"
    assert build_cache(source, clean, BuildConfig(split="train")).exit_code == 0
    return source, clean


def test_sigkill_at_several_points_then_resume(corpus, tmp_path):
    source, clean = corpus
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # kill before any output, then after 2, 5 and 6 more finished items (mid-build, mid-write likely)
    for kill_after in (0, 2, 5, 6):
        proc = subprocess.Popen(
            _build_cmd(source, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        start_lines = _index_lines(cache)
        while time.monotonic() < deadline and proc.poll() is None:
            if _index_lines(cache) - start_lines >= kill_after:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = len(read_index(CacheLayout(cache, "train")))
    assert 0 < done_before < 24, "the kills landed mid-build"
    rc = subprocess.run(_build_cmd(source, cache), env=env, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    assert f"{done_before} already done" in rc.stdout
    assert verify_cache(cache) == []
    assert _snapshot(cache) == _snapshot(clean)
    assert not any((cache / ".tmp").iterdir()), "leftover temporary files were cleaned up"
    assert len(read_index(CacheLayout(cache, "train"))) == 24


def test_two_processes_on_one_cache(corpus, tmp_path):
    source, clean = corpus
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            _build_cmd(source, cache, "--shard", s), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for s in ("0/2", "1/2")
    ] + [subprocess.Popen(_build_cmd(source, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    # the last finisher's ratios file may predate another's records: any later build completes it
    build_cache(source, cache, BuildConfig(split="train"))
    assert verify_cache(cache) == []
    assert _snapshot(cache) == _snapshot(clean)
