"""The packed form of a split (``forcomp pack``): one data file and an array index.

The ForNet-format cache stays the interchange form (the authors' loader reads it, ``forcomp
build`` writes it); the packed form sits beside it, is rebuilt from it, and gives the same pictures:

    CACHE/<split>/packed/data.bin    every foreground as QOI (lossless RGBA of the decoded WEBP:
                                     4x faster to decode), every background as its JPEG bytes
    CACHE/<split>/packed/index.npz   the reader's arrays (classes, labels, stems, ratios, own
                                     backgrounds) plus each payload's offset and length

Reading it needs no directory listing (start-up is loading a few arrays) and no per-file open:
the data file is memory-mapped once per process. The packed form records the ratios file it was
made from (size and modification time); a cache rebuilt since is read from its folders, with a
warning, until ``forcomp pack`` runs again. This module is the format (reading, QOI);
:mod:`forcomp.cache.packing` writes and checks it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forcomp.cache.atomic import atomic_write_bytes
from forcomp.cache.layout import CacheLayout
from forcomp.cache.problems import Problem
from forcomp.cache.table import PartTable, StringTable
from forcomp.errors import CacheFormatError

log = logging.getLogger(__name__)

PACK_DIRNAME = "packed"
FORMAT_VERSION = 1
MISSING = -1  # offset of an item that was refused when packing (read as a refused file)


def pack_dir(layout: CacheLayout) -> Path:
    return layout.split_dir / PACK_DIRNAME


def ratios_stamp(layout: CacheLayout) -> list[int]:
    """``[size, mtime_ns]`` of the ratios file: every build rewrites it, so it dates the cache."""
    st = layout.ratios_path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def encode_qoi(rgba: torch.Tensor) -> bytes:
    """``(4, h, w)`` uint8 RGBA → QOI bytes (lossless)."""
    import qoi

    return bytes(qoi.encode(np.ascontiguousarray(rgba.permute(1, 2, 0).numpy())))


def decode_qoi(data: bytes | memoryview, name: str, *, max_pixels: int) -> torch.Tensor:
    """QOI bytes → ``(4, h, w)`` uint8 RGBA; the header's size is checked before decoding."""
    import qoi

    raw = bytes(data[:14])
    if len(raw) < 14 or raw[:4] != b"qoif":
        raise CacheFormatError(f"{name}: not a QOI image")
    w, h = int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[8:12], "big")
    if w < 1 or h < 1 or w * h > max_pixels:
        raise CacheFormatError(f"{name}: QOI header declares {w}x{h} pixels (limit {max_pixels})")
    arr = qoi.decode(bytes(data))
    if arr.shape != (h, w, 4):
        raise CacheFormatError(f"{name}: decoded shape {arr.shape} != header {w}x{h} RGBA")
    return torch.from_numpy(arr).permute(2, 0, 1)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Packed:
    """A split's packed form, loaded: the reader's arrays and the memory-mapped payloads."""

    path: Path
    classes: list[str]
    fg: PartTable
    bg: PartTable
    fg_ratio: np.ndarray
    fg_bg: np.ndarray
    bg_ratio: np.ndarray
    bg_has_ratio: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    problems: list[Problem]
    data_bytes: int

    def payload(self, k: int) -> memoryview | None:
        """Item ``k``'s bytes (foregrounds first, then backgrounds), None if refused when packing."""
        off = int(self.offsets[k])
        if off == MISSING:
            return None
        return self._mmap()[off : off + int(self.lengths[k])]

    def _mmap(self) -> memoryview:
        maps = self.__dict__.setdefault("_maps", {})
        pid = os.getpid()
        if pid not in maps:  # one mapping per process (DataLoader workers map it themselves)
            import mmap

            with open(self.path / "data.bin", "rb") as f:
                maps[pid] = (
                    memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                    if self.data_bytes
                    else memoryview(b"")
                )
        return maps[pid]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_maps"}


def load_packed(layout: CacheLayout) -> Packed | None:
    """The packed form of ``layout``'s split if it exists and is as new as the cache, else None
    (a stale or damaged one is named in a warning)."""
    out = pack_dir(layout)
    index_path = out / "index.npz"
    if not index_path.is_file():
        return None
    try:
        with np.load(index_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if int(arrays["version"]) != FORMAT_VERSION:
            raise ValueError(f"format version {int(arrays['version'])}, expected {FORMAT_VERSION}")
        data_bytes = int(arrays["data_bytes"])
        if (out / "data.bin").stat().st_size != data_bytes:
            raise ValueError("data.bin does not have the size the index records")
        n_total = len(arrays["fg_labels"]) + len(arrays["bg_labels"])
        if len(arrays["offsets"]) != n_total or len(arrays["lengths"]) != n_total:
            raise ValueError("offsets do not cover every item")
        ends = arrays["offsets"] + arrays["lengths"]
        if ((arrays["offsets"] != MISSING) & ((arrays["offsets"] < 0) | (ends > data_bytes))).any():
            raise ValueError("an offset points outside data.bin")
        classes = json.loads(str(arrays["classes"]))
        problems = [Problem(p, m) for p, m in json.loads(str(arrays["problems"]))]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: packed form unreadable (%s); reading the folders (rerun forcomp pack)", out, e)
        return None
    try:
        current = ratios_stamp(layout)
    except OSError:
        current = None
    if current != [int(v) for v in arrays["stamp"]]:
        log.warning(
            "%s: the packed form is older than the cache's ratios file (rebuilt since?); reading the "
            "folders until `forcomp pack %s --split %s` runs again", out, layout.root, layout.split,
        )  # fmt: skip
        return None
    fg_stems = StringTable.from_arrays(arrays["fg_stems_buf"], arrays["fg_stems_off"])
    bg_stems = StringTable.from_arrays(arrays["bg_stems_buf"], arrays["bg_stems_off"])
    return Packed(
        out, classes, PartTable(arrays["fg_labels"], fg_stems), PartTable(arrays["bg_labels"], bg_stems),
        arrays["fg_ratio"], arrays["fg_bg"], arrays["bg_ratio"], arrays["bg_has_ratio"].astype(bool),
        arrays["offsets"], arrays["lengths"], problems, data_bytes,
    )  # fmt: skip
