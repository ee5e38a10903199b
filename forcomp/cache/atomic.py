"""Atomic file writes: write to a temporary file on the same filesystem, fsync, then rename.

A killed process never leaves a half-written file under a final name. Temporary files live in
``CACHE/.tmp/`` and carry the writer's host and pid, so a later build can remove the leftovers of
dead writers without touching those of a live one (two shards may share a cache).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent shards there may race on shared files
    fcntl = None  # type: ignore[assignment]

TMP_DIRNAME = ".tmp"
_MARK = ".forcomp-tmp."


def _tmp_name(final: Path) -> str:
    return f"{final.name}{_MARK}{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}"


def atomic_write_bytes(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (parents created). ``tmp_dir`` must be on the same filesystem."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tdir = Path(tmp_dir) if tmp_dir is not None else path.parent
    tdir.mkdir(parents=True, exist_ok=True)
    tmp = tdir / _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the ``with`` block.

    Processes that read-merge-write one shared file (two shards finishing at once) take this lock
    around the whole sequence, so the last one to finish writes the complete merge. The lock is
    released when the block ends or the process dies (the kernel drops ``flock`` locks with the
    file descriptor); the lock file itself stays and is empty. Without ``fcntl`` it does nothing.
    """
    if fcntl is None:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def iter_stale_tmp(tmp_dir: Path) -> Iterator[Path]:
    """Temporary files in ``tmp_dir`` left by dead processes of this host."""
    if not tmp_dir.is_dir():
        return
    host = socket.gethostname()
    for p in sorted(tmp_dir.iterdir()):  # sorted: the same order on every filesystem
        name = p.name
        if _MARK not in name:
            continue
        try:
            # The writer's suffix follows the last mark: the final name (a stem) may contain the mark too.
            t_host, t_pid, _ = name.rsplit(_MARK, 1)[1].rsplit(".", 2)
            pid = int(t_pid)
        except ValueError:
            continue
        if t_host == host and not _pid_alive(pid):
            yield p


def remove_stale_tmp(tmp_dir: Path) -> int:
    """Delete leftovers of dead writers; return how many were removed."""
    n = 0
    for p in iter_stale_tmp(tmp_dir):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n
