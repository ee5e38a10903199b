"""One rule for every file forcomp reads from a cache or a source folder it did not write.

A file is read only if it is a *regular* file *inside the root it belongs to*: no FIFO (opening one
blocks forever), no device (``/dev/zero`` never ends), no symbolic link that leaves the root. Its
size is checked before it is read, and an image's declared pixel count before it is decoded (the
build's ``--max-image-pixels`` limit), so a 747-byte JPEG that claims 65500x65500 pixels costs a
header parse, not 19 GiB.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from forcomp.errors import ForcompError

# Pillow's own default limit (~0.25 GiB of RGBA); the build's --max-image-pixels defaults to it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_file_bytes(max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> int:
    """Largest file accepted for an image of at most ``max_pixels``: 4 bytes a pixel (uncompressed
    RGBA, more than any of our formats needs) plus 1 MiB of metadata."""
    return 4 * int(max_pixels) + (1 << 20)


class UnsafeFileError(ForcompError, OSError):
    """A file that forcomp refuses to read: not a regular file, outside its root, or too large."""


def file_kind(mode: int) -> str:
    """A file type's name for messages (``st_mode`` → "FIFO", "character device", ...)."""
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (resolved, symbolic links followed) lies inside ``root`` (resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_entry(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """Why the directory entry ``path`` may not be read as a file of ``root`` (None: it may).

    A symbolic link is followed only if its target stays inside ``root`` and is a regular file.
    """
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot stat ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        if not is_within(path, root):
            return f"symbolic link to {os.path.realpath(path)}, outside {root}"
        try:
            st = os.stat(path)
        except OSError as e:
            return f"broken symbolic link ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file: a {file_kind(st.st_mode)}"
    return None


def read_regular_file(
    path: str | os.PathLike[str], *, max_bytes: int, root: str | os.PathLike[str] | None = None
) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``.

    Opened non-blocking, so a FIFO put in a file's place cannot hang the reader, and checked with
    ``fstat`` on the opened descriptor (what is read is what was checked). With ``root``, a symbolic
    link is followed only if it stays inside ``root`` (the common case, a plain file, costs no
    extra system call).

    Raises:
        UnsafeFileError: not a regular file, larger than ``max_bytes``, or shorter than its size.
        OSError: the file cannot be opened or read (missing, permission denied, I/O error).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    nofollow = getattr(os, "O_NOFOLLOW", 0) if root is not None else 0
    try:
        fd = os.open(path, flags | nofollow)
    except OSError as e:
        if not nofollow or e.errno != errno.ELOOP:
            raise
        why = check_entry(path, root)  # type: ignore[arg-type]
        if why is not None:
            raise UnsafeFileError(f"{path}: {why}") from None
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path}: not a regular file: a {file_kind(st.st_mode)}")
        if st.st_size > max_bytes:
            raise UnsafeFileError(f"{path}: {st.st_size} bytes, more than the limit of {max_bytes}")
        chunks, left = [], st.st_size
        while left > 0:
            try:
                chunk = os.read(fd, left)
            except BlockingIOError:  # pragma: no cover - regular files do not block
                raise UnsafeFileError(f"{path}: read would block") from None
            if not chunk:
                raise UnsafeFileError(f"{path}: file shrank while being read ({left} bytes missing)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe_os_error(e: OSError) -> str:
    """A short reason for an ``OSError`` (``ENOENT`` → "missing file")."""
    if isinstance(e, UnsafeFileError):
        return str(e).split(": ", 1)[-1]
    if e.errno == errno.ENOENT:
        return "missing file"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or type(e).__name__


def source_within(path: str | os.PathLike[str], roots: list[Path]) -> bool:
    """Whether a source image path lies inside one of ``roots`` (the folders a build read)."""
    return any(is_within(path, r) for r in roots)
