"""forcomp's own index: one JSON record per item, append-only files, one file per writer process.

Why this shape: appending a whole line is the only write a killed process can interrupt, and a
reader skips a broken last line, so the index survives SIGKILL at any moment. Writers never share
a file, so shards (even running at once) merge by simply reading every ``index/*.jsonl``; when
a key appears more than once, the newest record wins: it is the latest attempt at the item, and
the item's files on disk follow it (the build removes the files of an item whose new record is
not ok before appending that record, so an older ``ok`` never outlives its files).

``source`` is an absolute path; records of older builds may hold a path relative to the directory
that build ran in, which readers accept (and resolve against their own current directory).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from forcomp.cache.layout import BG_EXT, CacheLayout, safe_component
from forcomp.cache.problems import Problem
from forcomp.errors import UnsafePathError
from forcomp.safe_files import check_entry, describe_os_error, read_regular_file

log = logging.getLogger(__name__)

Status = Literal["ok", "no_object", "error"]
FINISHED: frozenset[str] = frozenset({"ok", "no_object"})


@dataclass(frozen=True)
class IndexRecord:
    """What the index stores for one source image.

    ``bbox`` is the mask's bounding box in source pixels, XYXY with exclusive end.
    ``ratio`` is mask area / image area (the value written to ``fg_bg_ratios_<split>.json``).
    """

    key: str
    cls: str
    stem: str
    label: int
    source: str
    status: Status
    source_size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    bbox: tuple[int, int, int, int] | None = None
    ratio: float | None = None
    score: float | None = None
    segmenter: str | None = None
    segmenter_weights: str | None = None
    inpainter: str | None = None
    inpainter_weights: str | None = None
    message: str | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexRecord:
        """A validated record; ``ValueError`` naming the field when a value has the wrong type or form."""
        if not isinstance(d, dict):
            raise ValueError(f"a JSON {type(d).__name__}, expected an object")
        for name in ("key", "cls", "stem", "source", "status"):
            if not isinstance(d.get(name), str):
                raise ValueError(f"{name!r} must be a string, got {d.get(name)!r}")
        safe_component(d["cls"], what="class name")
        safe_component(d["stem"], what="stem")
        if d["key"] != f"{d['cls']}/{d['stem']}{BG_EXT}":
            raise ValueError(f"key {d['key']!r} does not match cls/stem ({d['cls']!r}, {d['stem']!r})")
        if d["status"] not in ("ok", "no_object", "error"):
            raise ValueError(f"status {d['status']!r} is not one of ok, no_object, error")
        label = d.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise ValueError(f"label must be an int >= 0, got {label!r}")
        out = dict(d)
        for name, n in (("source_size", 2), ("bbox", 4)):
            v = d.get(name)
            if v is None:
                continue
            if not isinstance(v, list) or len(v) != n or not all(_is_int(x) for x in v):
                raise ValueError(f"{name} must be a list of {n} ints, got {v!r}")
            out[name] = tuple(int(x) for x in v)
        for name in ("ratio", "score", "time"):
            v = d.get(name)
            if v is not None and not (_is_number(v) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        for name in ("segmenter", "segmenter_weights", "inpainter", "inpainter_weights", "message"):
            v = d.get(name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name} must be a string, got {v!r}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in out.items() if k in known})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _better(new: IndexRecord, old: IndexRecord) -> bool:
    # Newest wins, whatever the status. "A finished record beats an error" used to hide the error of
    # a rebuild (resume=False) behind the old ok record, whose files the rebuild has removed.
    return new.time >= old.time


def scan_index(layout: CacheLayout) -> tuple[list[tuple[Path, int, IndexRecord]], list[Problem]]:
    """Every valid record of every index file (with its file and line), and the lines refused.

    A line that is not JSON or not a valid record is a problem naming ``file:line``, except the
    last line of a file that has no newline: a writer killed mid-line leaves exactly that, and the
    item is redone by the next build.
    """
    records: list[tuple[Path, int, IndexRecord]] = []
    problems: list[Problem] = []
    if not layout.index_dir.is_dir():
        return records, problems
    for path in sorted(layout.index_dir.glob("*.jsonl")):
        why = check_entry(path, layout.root)
        if why is not None:
            problems.append(Problem(str(path), why))
            continue
        try:
            text = read_regular_file(path, max_bytes=1 << 34).decode("utf-8", "replace")
        except OSError as e:
            problems.append(Problem(str(path), f"cannot read ({describe_os_error(e)})"))
            continue
        lines = text.split("\n")
        torn_tail = not text.endswith("\n")
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = IndexRecord.from_dict(json.loads(line))
            except (ValueError, TypeError, UnsafePathError) as e:
                if torn_tail and lineno == len(lines):
                    log.debug("ignoring the torn last line %s:%d (a writer was killed)", path, lineno)
                else:
                    problems.append(Problem(f"{path}:{lineno}", f"index line refused ({e})"))
                continue
            records.append((path, lineno, rec))
    return records, problems


def iter_records(layout: CacheLayout) -> Iterator[tuple[Path, int, IndexRecord]]:
    """Every valid record of every index file, with its file and line number (refused lines are
    logged as warnings; :func:`scan_index` returns them)."""
    records, problems = scan_index(layout)
    for p in problems:
        log.warning("%s", p)
    yield from records


def merge_records(records: Iterable[tuple[Path, int, IndexRecord]]) -> dict[str, IndexRecord]:
    """``{key: record}``, the newest record of each key winning (see the module docstring)."""
    merged: dict[str, IndexRecord] = {}
    for _, _, rec in records:
        old = merged.get(rec.key)
        if old is None or _better(rec, old):
            merged[rec.key] = rec
    return merged


def read_index(layout: CacheLayout) -> dict[str, IndexRecord]:
    """Merge all index files of a split into ``{key: record}`` (see module docstring for precedence)."""
    return merge_records(iter_records(layout))


def recorded_sources(layout: CacheLayout) -> list[str]:
    """The source folders the builds of this split read, from their provenance files (newest first)."""
    found: list[tuple[float, str]] = []
    if layout.index_dir.is_dir():
        for p in layout.index_dir.glob("build-*.json"):
            try:
                prov = json.loads(read_regular_file(p, max_bytes=1 << 24).decode("utf-8"))
                when, src = float(prov.get("finished") or prov.get("started") or 0.0), prov.get("source")
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            if isinstance(src, str) and src:
                found.append((when, src))
    return [s for _, s in sorted(found, reverse=True)]


class IndexWriter:
    """Appends records to this process's own index file, one flushed and fsynced line each."""

    def __init__(self, layout: CacheLayout, tag: str = "local") -> None:
        layout.index_dir.mkdir(parents=True, exist_ok=True)
        safe_tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
        name = f"{safe_tag}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}.jsonl"
        self.path = layout.index_dir / name
        self._fd: int | None = None
        self._broken = False

    def append(self, records: Iterable[IndexRecord]) -> None:
        """Append whole lines or nothing: on a failed or short write (disk full, file-size limit)
        the file is cut back to where it was and the ``OSError`` propagates, so a partial line is
        never followed by more records (readers only forgive a torn last line)."""
        data = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
        if not data:
            return
        if self._broken:
            raise OSError(errno.EIO, f"{self.path} ends in a partial line that could not be removed")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        start = os.fstat(self._fd).st_size  # one writer per file: nobody else appends meanwhile
        done = 0
        try:
            while done < len(data):
                n = os.write(self._fd, data[done:] if done else data)
                if n <= 0:
                    raise OSError(errno.ENOSPC, f"short write, {len(data) - done} bytes not written")
                done += n
            os.fsync(self._fd)
        except OSError:
            if done:
                try:
                    os.ftruncate(self._fd, start)
                except OSError:  # cannot cut it back: the next line would follow a partial one
                    os.close(self._fd)
                    self._fd = None
                    self._broken = True
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
