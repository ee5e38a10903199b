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

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from forcomp.cache.layout import CacheLayout

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
        d = dict(d)
        for k in ("source_size", "bbox"):
            if d.get(k) is not None:
                d[k] = tuple(int(v) for v in d[k])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _better(new: IndexRecord, old: IndexRecord) -> bool:
    # Newest wins, whatever the status. "A finished record beats an error" used to hide the error of
    # a rebuild (resume=False) behind the old ok record, whose files the rebuild has removed.
    return new.time >= old.time


def iter_records(layout: CacheLayout) -> Iterator[tuple[Path, int, IndexRecord]]:
    """Every parseable record of every index file, with its file and line number."""
    if not layout.index_dir.is_dir():
        return
    for path in sorted(layout.index_dir.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = IndexRecord.from_dict(json.loads(line))
                except (ValueError, TypeError) as e:
                    # A writer killed mid-line leaves one broken last line; that is expected.
                    log.debug("skipping unreadable index line %s:%d (%s)", path, lineno, e)
                    continue
                yield path, lineno, rec


def read_index(layout: CacheLayout) -> dict[str, IndexRecord]:
    """Merge all index files of a split into ``{key: record}`` (see module docstring for precedence)."""
    merged: dict[str, IndexRecord] = {}
    for _, _, rec in iter_records(layout):
        old = merged.get(rec.key)
        if old is None or _better(rec, old):
            merged[rec.key] = rec
    return merged


class IndexWriter:
    """Appends records to this process's own index file, one flushed and fsynced line each."""

    def __init__(self, layout: CacheLayout, tag: str = "local") -> None:
        layout.index_dir.mkdir(parents=True, exist_ok=True)
        safe_tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
        name = f"{safe_tag}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}.jsonl"
        self.path = layout.index_dir / name
        self._fd: int | None = None

    def append(self, records: Iterable[IndexRecord]) -> None:
        data = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
        if not data:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
