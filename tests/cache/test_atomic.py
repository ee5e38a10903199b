"""Atomic writes and the clean-up of dead writers' temporary files (``forcomp.cache.atomic``)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from forcomp.cache import atomic
from forcomp.cache.atomic import _MARK, atomic_write_bytes, iter_stale_tmp, remove_stale_tmp


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen]:
    """A running process of this host that is not the test process (a live writer of another shard)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _tmp(tmp_dir: Path, final_name: str, host: str, pid: int | str) -> Path:
    path = tmp_dir / f"{final_name}{_MARK}{host}.{pid}.0a1b2c3d"
    path.write_bytes(b"partial")
    return path


def test_write_replaces_in_one_step_and_leaves_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "deep" / "er" / "item.WEBP"
    tmp_dir = tmp_path / "cache" / ".tmp"  # its parent does not exist yet either
    atomic_write_bytes(final, b"first", tmp_dir=tmp_dir)
    atomic_write_bytes(final, b"second", tmp_dir=tmp_dir)
    assert final.read_bytes() == b"second"
    assert list(tmp_dir.iterdir()) == []


def test_without_tmp_dir_the_temporary_lives_beside_the_file(tmp_path: Path, monkeypatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst):  # noqa: ANN001
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    final = tmp_path / "a" / "b.JPEG"
    atomic_write_bytes(final, b"data")
    assert final.read_bytes() == b"data"
    ((src, dst),) = renames
    assert dst == final and src.parent == final.parent and _MARK in src.name
    assert sorted(p.name for p in final.parent.iterdir()) == ["b.JPEG"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "x.JPEG"
    tmp_dir = tmp_path / ".tmp"
    atomic_write_bytes(final, b"old", tmp_dir=tmp_dir)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(final, b"new", tmp_dir=tmp_dir)
    assert final.read_bytes() == b"old"
    assert list(tmp_dir.iterdir()) == []


def test_a_write_that_fails_before_its_temporary_exists_reports_the_real_error(
    tmp_path: Path, monkeypatch
) -> None:
    """The clean-up must not replace the original error by a FileNotFoundError of its own."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(atomic, "open", refuse, raising=False)
    with pytest.raises(OSError) as exc:
        atomic_write_bytes(tmp_path / "x.JPEG", b"new", tmp_dir=tmp_path / ".tmp")
    assert exc.value.errno == errno.EMFILE


def test_only_dead_writers_of_this_host_are_stale(tmp_path: Path, dead_pid: int, live_child) -> None:
    host = socket.gethostname()
    tmp_dir = tmp_path / ".tmp"
    tmp_dir.mkdir()
    # Names sort in this order; entries that are skipped come before the stale ones.
    (tmp_dir / "a_unrelated.txt").write_bytes(b"")
    (tmp_dir / f"b_no_suffix{_MARK}garbage").write_bytes(b"")
    bad_pid = _tmp(tmp_dir, "c_bad_pid", host, "notapid")
    other_host = _tmp(tmp_dir, "d_other_host", host + "-elsewhere", dead_pid)
    live = _tmp(tmp_dir, "e_live", host, live_child.pid)
    stale = [
        _tmp(tmp_dir, "f_dead.WEBP", host, dead_pid),
        _tmp(tmp_dir, f"g_stem{_MARK}looks_like_a_temp.JPEG", host, dead_pid),
    ]
    assert sorted(iter_stale_tmp(tmp_dir)) == stale
    assert live_child.poll() is None, "checking a live writer must not signal it"
    assert remove_stale_tmp(tmp_dir) == 2
    left = sorted(p.name for p in tmp_dir.iterdir())
    assert left == ["a_unrelated.txt", f"b_no_suffix{_MARK}garbage", bad_pid.name, other_host.name, live.name]
    assert remove_stale_tmp(tmp_dir) == 0
    assert remove_stale_tmp(tmp_path / "missing") == 0


def test_dotted_host_names_are_parsed(tmp_path: Path, dead_pid: int, monkeypatch) -> None:
    """Cluster nodes are often called ``node1.cluster.local``: the host is everything before pid.token."""
    monkeypatch.setattr(atomic.socket, "gethostname", lambda: "node1.cluster.local")
    stale = _tmp(tmp_path, "x.WEBP", "node1.cluster.local", dead_pid)
    _tmp(tmp_path, "y.WEBP", "cluster.local", dead_pid)
    assert list(iter_stale_tmp(tmp_path)) == [stale]


def test_a_writer_of_another_user_counts_as_alive(tmp_path: Path, dead_pid: int, monkeypatch) -> None:
    """``kill(pid, 0)`` fails with EPERM for a live process we may not signal: keep its files."""

    def eperm(pid: int, sig: int) -> None:
        assert sig == 0, "only probe, never signal"
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "kill", eperm)
    _tmp(tmp_path, "x.WEBP", socket.gethostname(), dead_pid)
    assert list(iter_stale_tmp(tmp_path)) == []


def test_a_leftover_removed_by_a_concurrent_build_is_not_an_error(tmp_path: Path, monkeypatch) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"")
    monkeypatch.setattr(atomic, "iter_stale_tmp", lambda d: iter([tmp_path / "already_gone", present]))
    assert remove_stale_tmp(tmp_path) == 1
    assert not present.exists()
