"""Compact in-memory tables for a cache's items: arrays, not one Python object per item.

A DataLoader worker that touches a Python object writes to its reference count, so the page
holding it is copied into the worker (copy-on-read): per-item objects make every worker's memory
grow to a copy of the whole index over an epoch. Strings here live in one ``uint8`` buffer with an
offsets array, labels and ratios in NumPy arrays: a few large objects, whatever the item count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterable, Iterator, Sequence

import numpy as np


class StringTable(Sequence[str]):
    """An immutable sequence of strings stored as UTF-8 in one buffer plus an offsets array."""

    __slots__ = ("_buf", "_off")

    def __init__(self, strings: Iterable[str] = ()) -> None:
        items = strings if isinstance(strings, list) else list(strings)
        self._off = np.zeros(len(items) + 1, dtype=np.int64)
        joined = "".join(items)
        if joined.isascii():  # one byte a character: lengths from the str objects, one encode
            data = joined.encode("ascii")
            lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        else:
            encoded = [s.encode("utf-8", "surrogateescape") for s in items]
            data = b"".join(encoded)
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(items))
        np.cumsum(lengths, out=self._off[1:])
        self._buf = np.frombuffer(data, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._off) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        i = i + n if i < 0 else i
        return self._buf[self._off[i] : self._off[i + 1]].tobytes().decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[str]:
        data = self._buf.tobytes()
        off = self._off.tolist()
        for a, b in zip(off[:-1], off[1:], strict=True):
            yield data[a:b].decode("utf-8", "surrogateescape")

    @classmethod
    def from_arrays(cls, buffer: np.ndarray, offsets: np.ndarray) -> StringTable:
        """A table from :attr:`buffer` and :attr:`offsets` as saved (checked: offsets increase
        from 0 to the buffer's length)."""
        buf, off = np.asarray(buffer, dtype=np.uint8), np.asarray(offsets, dtype=np.int64)
        if off.ndim != 1 or not len(off) or off[0] != 0 or off[-1] != len(buf) or (np.diff(off) < 0).any():
            raise ValueError("string table offsets do not describe the buffer")
        table = cls.__new__(cls)
        table._buf, table._off = buf, off
        return table

    @property
    def buffer(self) -> np.ndarray:
        """The UTF-8 bytes of all strings, one after the other."""
        return self._buf

    @property
    def offsets(self) -> np.ndarray:
        """``(N + 1,)`` where each string starts (and the last ends) in :attr:`buffer`."""
        return self._off

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes + self._off.nbytes)

    def __repr__(self) -> str:
        return f"StringTable({len(self)} strings, {self.nbytes} bytes)"


class PartTable:
    """The foregrounds (or backgrounds) of a split, sorted by key ``"<class>/<stem>.JPEG"``.

    Attributes:
        labels: ``(N,)`` int32 class index of each item (into the reader's sorted ``classes``).
        stems: the items' stems.
        members: zip member names (a release in zips), else None.
    """

    __slots__ = ("labels", "stems", "members")

    def __init__(self, labels: np.ndarray, stems: StringTable, members: StringTable | None = None) -> None:
        self.labels = labels
        self.stems = stems
        self.members = members

    def __len__(self) -> int:
        return len(self.stems)

    def subset(self, keep: np.ndarray) -> PartTable:
        """The items where ``keep`` (a boolean mask) is true, in order."""
        idx = np.flatnonzero(keep)
        return PartTable(
            self.labels[idx],
            StringTable(self.stems[int(i)] for i in idx),
            None if self.members is None else StringTable(self.members[int(i)] for i in idx),
        )


def release_free_memory() -> None:
    """Return the memory freed after building large tables to the operating system.

    Listing a split makes millions of short-lived strings; their freed pages stay in the process's
    heap, and a forked DataLoader worker that allocates into them copies each page (copy-on-write):
    measured on 1.28 M items, a worker's private memory grew from 6 to 93 MB over 100k samples
    without this, and stayed at 12 MB with it (``benchmarks/index_scale.py``). glibc only; a no-op
    elsewhere.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
