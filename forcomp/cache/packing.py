"""``forcomp pack``: write a split's packed form from its folders or zips, and check it against them.

See :mod:`forcomp.cache.pack` for the format. Packing is resumable: it checkpoints every ``chunk``
items, and a rerun continues where a killed one stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from forcomp.cache.pack import (
    FORMAT_VERSION,
    MISSING,
    decode_qoi,
    encode_qoi,
    load_packed,
    pack_dir,
    ratios_stamp,
    save_npz,
)
from forcomp.cache.problems import Problem
from forcomp.cache.reader import BadItemError, CacheReader
from forcomp.errors import ForcompError


@dataclass(frozen=True)
class PackSummary:
    """What ``forcomp pack`` did for one split."""

    split: str
    foregrounds: int
    backgrounds: int
    refused: list[Problem]
    data_bytes: int
    seconds: float
    resumed_from: int

    def format(self) -> str:
        head = (
            f"[{self.split}] packed {self.foregrounds} foregrounds and {self.backgrounds} backgrounds "
            f"into {self.data_bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        )
        if self.resumed_from:
            head += f" (resumed after {self.resumed_from} items)"
        lines = [head] + [f"  refused: {p}" for p in self.refused]
        return "\n".join(lines)


def pack_split(
    cache: str | os.PathLike[str],
    split: str,
    *,
    chunk: int = 2048,
    on_progress: Callable[[int, int], None] | None = None,
) -> PackSummary:
    """Write (or finish) the packed form of ``cache``'s ``split`` from its folders or zips.

    Every item is decoded as the loader decodes it; an item the loader would refuse is recorded as
    refused in the packed form too (the loader then replaces it, as it does reading the folders).

    Raises:
        CacheFormatError: the split cannot be read.
    """
    t0 = time.perf_counter()
    reader = CacheReader(cache, split, packed=False)
    layout = reader.layout
    out = pack_dir(layout)
    out.mkdir(parents=True, exist_ok=True)
    data_path, partial, progress_path = out / "data.bin", out / "data.bin.partial", out / "progress.npz"
    n_fg, n_bg = len(reader.fg), len(reader.bg)
    total = n_fg + n_bg
    stamp = ratios_stamp(layout)
    offsets = np.full(total, MISSING, dtype=np.int64)
    lengths = np.zeros(total, dtype=np.int64)
    done, size = 0, 0
    if progress_path.exists() and partial.exists():
        try:
            with np.load(progress_path) as prev:
                if [int(v) for v in prev["stamp"]] == stamp and int(prev["total"]) == total:
                    done, size = int(prev["done"]), int(prev["size"])
                    offsets[:done], lengths[:done] = prev["offsets"][:done], prev["lengths"][:done]
        except (OSError, ValueError, KeyError):
            done, size = 0, 0
    resumed_from = done
    refused: list[Problem] = []
    with open(partial, "r+b" if done and partial.exists() else "wb") as f:
        f.truncate(size)
        f.seek(size)
        for k in range(done, total):
            try:
                if k < n_fg:
                    payload = encode_qoi(reader.decode_fg(k))
                else:
                    reader.decode_bg(k - n_fg)  # validated as the loader does; stored as is
                    payload = reader.bg_bytes(k - n_fg)
            except BadItemError as e:
                refused.append(Problem(e.path, e.reason))
                payload = b""
            if payload:
                offsets[k], lengths[k] = size, len(payload)
                f.write(payload)
                size += len(payload)
            done = k + 1
            if done % chunk == 0 or done == total:
                f.flush()
                os.fsync(f.fileno())
                save_npz(progress_path, stamp=np.array(stamp), total=np.array(total), done=np.array(done),
                          size=np.array(size), offsets=offsets, lengths=lengths)  # fmt: skip
                if on_progress is not None:
                    on_progress(done, total)
    index = {
        "version": np.array(FORMAT_VERSION),
        "classes": np.array(json.dumps(reader.classes)),
        "stamp": np.array(stamp),
        "data_bytes": np.array(size),
        "fg_labels": reader.fg.labels,
        "fg_stems_buf": reader.fg.stems.buffer,
        "fg_stems_off": reader.fg.stems.offsets,
        "bg_labels": reader.bg.labels,
        "bg_stems_buf": reader.bg.stems.buffer,
        "bg_stems_off": reader.bg.stems.offsets,
        "fg_ratio": reader.fg_ratio,
        "fg_bg": reader.fg_bg,
        "bg_ratio": reader.bg_ratio,
        "bg_has_ratio": reader.bg_has_ratio,
        "offsets": offsets,
        "lengths": lengths,
        "problems": np.array(json.dumps([[p.path, p.message] for p in reader.problems + refused])),
    }
    os.replace(partial, data_path)
    save_npz(out / "index.npz", **index)
    progress_path.unlink(missing_ok=True)
    return PackSummary(split, n_fg, n_bg, refused, size, time.perf_counter() - t0, resumed_from)


def check_packed(reader: CacheReader) -> list[Problem]:
    """Differences between a split's packed form and its folders (what ``forcomp verify`` adds);
    ``reader`` reads the folders (``CacheReader(..., packed=False)``)."""
    packed = load_packed(reader.layout)
    if packed is None:
        return []
    where = str(pack_dir(reader.layout))
    if packed.classes != reader.classes:
        return [Problem(where, "classes differ from the cache's folders (rerun forcomp pack)")]
    same = (
        list(packed.fg.stems) == list(reader.fg.stems)
        and list(packed.bg.stems) == list(reader.bg.stems)
        and np.array_equal(packed.fg.labels, reader.fg.labels)
        and np.array_equal(packed.fg_ratio, reader.fg_ratio)
        and np.array_equal(packed.bg_ratio, reader.bg_ratio)
    )
    if not same:
        return [Problem(where, "items or ratios differ from the cache's folders (rerun forcomp pack)")]
    problems: list[Problem] = []
    n_fg = len(reader.fg)
    for k in range(n_fg + len(reader.bg)):
        blob = packed.payload(k)
        try:
            if k < n_fg:
                want = reader.decode_fg(k)
                got = None if blob is None else decode_qoi(blob, where, max_pixels=reader.max_pixels)
                ok = got is not None and torch.equal(got, want)
            else:
                ok = blob is not None and bytes(blob) == reader.bg_bytes(k - n_fg)
        except BadItemError:
            ok = blob is None
        except ForcompError:
            ok = False
        if not ok:
            name = reader.fg_name(k) if k < n_fg else reader.bg_name(k - n_fg)
            problems.append(Problem(where, f"{name}: the packed copy differs (rerun forcomp pack)"))
    return problems
