"""Read one split of a cache — a forcomp cache or a ForNet release (folders, or the published zips).

Everything read is untrusted and validated once, at load, into compact arrays
(:mod:`forcomp.cache.table`):

- **Classes come from the files**: the class folders under ``foregrounds/`` and ``backgrounds/``
  (empty ones too: a class whose images all had no object keeps its label), or the class
  components of the zip members. Never from the free text of index records.
- **Files**: only regular files inside the cache are listed (no FIFO, device, socket, or symbolic
  link leaving the cache); names are single safe path components; zip members are read by name,
  never extracted.
- **Ratios** (``fg_bg_ratios_<split>.json``): an object whose keys are ``<class>/<stem>.JPEG`` (or
  ForNet's ``<split>/backgrounds/<class>/<stem>.JPEG``) of listed items, and whose values are finite
  numbers in [0, 1] — in (0, 1] for an item with a foreground.

What does not pass is left out and recorded in :attr:`CacheReader.problems` (file and reason), so
that one bad file never stops an epoch and never becomes a silent garbage picture; ``forcomp
verify`` reports the same problems. Labels stay those of the sorted class folders.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from forcomp.cache.images import decode_background, decode_foreground, has_alpha_channel
from forcomp.cache.layout import BG_EXT, FG_EXT, CacheLayout
from forcomp.cache.listing import Listing, SplitLister
from forcomp.cache.pack import Packed, decode_qoi, load_packed
from forcomp.cache.problems import Problem
from forcomp.cache.table import PartTable, StringTable, release_free_memory
from forcomp.errors import CacheFormatError, ForcompError
from forcomp.safe_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    describe_os_error,
    is_within,
    max_file_bytes,
    read_regular_file,
)

log = logging.getLogger(__name__)
LARGE_SPLIT = 100_000  # items from which the memory freed after listing is handed back (a few ms)


class BadItemError(ForcompError):
    """A cache file that cannot be used (unreadable, refused, or does not decode).

    Attributes:
        path: the file (or ``zip:member``).
        reason: why, without the path.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class CacheReader:
    """Lists, validates and reads the foregrounds and backgrounds of ``root``'s ``split``.

    Attributes:
        mode: ``"folder"``, ``"zip"``, or ``"packed"`` (the split's packed form, see
            :mod:`forcomp.cache.pack`; ``packed=False`` reads the folders or zips even when one exists).
        classes: sorted class names (label = index, as torchvision's ``ImageFolder``).
        fg, bg: the usable foregrounds and backgrounds (:class:`~forcomp.cache.table.PartTable`),
            each sorted by key.
        fg_ratio: ``(N_fg,)`` float64 mask area / image area of each foreground's source image.
        bg_ratio: ``(N_bg,)`` float64 the same for each background (0 where the ratios file has none).
        bg_has_ratio: ``(N_bg,)`` bool, whether the ratios file lists the background.
        fg_bg: ``(N_fg,)`` int64 index of each foreground's own background in ``bg``, -1 if none.
        problems: what was left out at load, with file and reason.
        left_out_fg: keys of listed foregrounds left out for their ratio.
        max_pixels: images declaring more pixels are refused before decoding.

    A file that is listed but turns out to be a FIFO, a device, a link leaving the cache, too large
    or damaged is refused when it is read (:class:`BadItemError`), never blocking the reader.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        packed: bool = True,
    ) -> None:
        self.layout = CacheLayout(Path(root), split)
        self.split = split
        self.max_pixels = int(max_pixels)
        self.max_bytes = max_file_bytes(self.max_pixels)
        self.problems: list[Problem] = []
        self.left_out_fg: list[str] = []
        lay = self.layout
        if lay.root.exists() and not lay.root.is_dir():
            raise CacheFormatError(
                f"cache {lay.root} is a file, not a cache directory (pass the folder `forcomp build` wrote)"
            )
        if not lay.root.is_dir():
            raise CacheFormatError(f"cache {lay.root} does not exist")
        self._zips: dict[int, dict[str, zipfile.ZipFile]] = {}
        self._sources: dict[str, str] | None = None
        self._opaque_warned: set[str] = set()
        self._packed = load_packed(lay) if packed else None
        if self._packed is not None:
            self._use_packed(self._packed)
            return
        lister = SplitLister(lay, split, self.max_bytes)
        self.problems = lister.problems
        if lay.fg_dir.is_dir() and lay.bg_dir.is_dir():
            self.mode = "folder"
            fg = lister.list_dir(lay.fg_dir, FG_EXT)
            bg = lister.list_dir(lay.bg_dir, BG_EXT)
        elif lay.fg_zip.is_file() and lay.bg_zip.is_file():
            self.mode = "zip"
            fg = lister.list_zip(lay.fg_zip, FG_EXT)
            bg = lister.list_zip(lay.bg_zip, BG_EXT)
        else:
            raise CacheFormatError(
                f"no {split} split in {lay.root}: expected {lay.fg_dir} and {lay.bg_dir}, or "
                f"{lay.fg_zip.name} and {lay.bg_zip.name} "
                f"(build it with: forcomp build SOURCE {lay.root} --split {split})"
            )
        self.classes = sorted(fg.classes | bg.classes)
        if not any(fg.items.values()):
            raise CacheFormatError(
                f"the {split} split of {lay.root} has no foregrounds"
                + (f" ({len(self.problems)} problem(s), e.g. {self.problems[0]})" if self.problems else "")
            )
        ratios = lister.read_ratios()
        self._bad_ratio = lister.bad_ratio
        self._build_tables(fg, bg, ratios, lister)
        if not len(self.fg):
            raise CacheFormatError(
                f"the {split} split of {lay.root} has no usable foregrounds"
                + (f" ({len(self.problems)} problem(s), e.g. {self.problems[0]})" if self.problems else "")
            )
        if len(self.bg) + len(self.fg) >= LARGE_SPLIT:
            release_free_memory()

    def _use_packed(self, packed: Packed) -> None:
        """Take the split's arrays from its packed form (no listing, no per-file opens)."""
        self.mode = "packed"
        self.classes = packed.classes
        self.fg, self.bg = packed.fg, packed.bg
        self.fg_ratio, self.fg_bg = packed.fg_ratio, packed.fg_bg
        self.bg_ratio, self.bg_has_ratio = packed.bg_ratio, packed.bg_has_ratio
        self.problems = list(packed.problems)
        log.info(
            "%s: reading the packed form of the %s split (%s)", self.layout.root, self.split, packed.path
        )

    def _build_tables(self, fg: Listing, bg: Listing, ratios: dict[str, float], lister: SplitLister) -> None:
        """Arrays of the usable items, in key order; foregrounds without a valid ratio left out.

        The common case — every item has both files and a ratio — takes the fast path: the
        foregrounds share the backgrounds' tables (one copy in memory), no per-item matching.
        """
        label_of = {c: i for i, c in enumerate(self.classes)}
        order = sorted(set(fg.items) | set(bg.items), key=lambda c: c + "/")  # = key order
        used = 0  # ratio keys that name a listed item; fewer than the keys: some name nothing
        b_labels: list[np.ndarray] = []
        b_ratio: list[np.ndarray] = []
        b_has: list[np.ndarray] = []
        b_stems: list[str] = []
        b_members: list[str] = []
        f_labels: list[np.ndarray] = []
        f_ratio: list[np.ndarray] = []
        f_pos: list[np.ndarray] = []
        f_stems: list[str] = []
        f_members: list[str] = []
        shared = True  # foregrounds identical to backgrounds so far
        start = 0
        for cls in order:
            label, head = label_of[cls], cls + "/"
            stems_b = bg.items.get(cls, [])
            keys = [head + s + BG_EXT for s in stems_b]
            vals = list(map(ratios.get, keys))
            if None in vals:
                has = np.array([v is not None for v in vals], dtype=bool)
                arr = np.array([0.0 if v is None else v for v in vals], dtype=np.float64)
            else:
                has, arr = np.ones(len(vals), dtype=bool), np.array(vals, dtype=np.float64)
            used += int(has.sum())
            b_labels.append(np.full(len(stems_b), label, dtype=np.int32))
            b_ratio.append(arr)
            b_has.append(has)
            b_stems += stems_b
            if bg.members is not None:
                b_members += bg.members[cls]
            stems_f = fg.items.get(cls, [])
            if stems_f == stems_b:
                good = has & (arr > 0)
                f_arr, pos, f_keys = arr, np.arange(start, start + len(stems_b)), keys
            else:
                shared = False
                f_keys = [head + s + BG_EXT for s in stems_f]
                f_vals = list(map(ratios.get, f_keys))
                where = {s: start + i for i, s in enumerate(stems_b)}
                pos = np.array([where.get(s, -1) for s in stems_f], dtype=np.int64)
                used += sum(1 for p, v in zip(pos.tolist(), f_vals, strict=True) if p < 0 and v is not None)
                good = np.array([v is not None and v > 0.0 for v in f_vals], dtype=bool)
                f_arr = np.array([0.0 if v is None else v for v in f_vals], dtype=np.float64)
            if not good.all():
                shared = False
                self._report_fg_ratios([f_keys[i] for i in np.flatnonzero(~good)], ratios)
            idx = np.flatnonzero(good)
            f_labels.append(np.full(len(idx), label, dtype=np.int32))
            f_ratio.append(f_arr[idx])
            f_pos.append(pos[idx])
            f_stems += stems_f if len(idx) == len(stems_f) else [stems_f[i] for i in idx.tolist()]
            if fg.members is not None:
                f_members += [fg.members[cls][i] for i in idx.tolist()]
            start += len(stems_b)
        if used < len(ratios):
            lister.report_unknown_keys(ratios, fg, bg)

        def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        zipped = self.mode == "zip"
        self.bg = PartTable(
            cat(b_labels, np.int32), StringTable(b_stems), StringTable(b_members) if zipped else None
        )
        self.bg_ratio = cat(b_ratio, np.float64)
        self.bg_has_ratio = cat(b_has, bool)
        if shared and not zipped:
            self.fg = PartTable(self.bg.labels, self.bg.stems, None)
        else:
            self.fg = PartTable(
                cat(f_labels, np.int32), StringTable(f_stems), StringTable(f_members) if zipped else None
            )
        self.fg_ratio = cat(f_ratio, np.float64)
        self.fg_bg = cat(f_pos, np.int64)

    def _report_fg_ratios(self, keys: list[str], ratios: dict[str, float]) -> None:
        """Name the foregrounds left out for a missing or zero ratio."""
        path = str(self.layout.ratios_path)
        for key in keys:
            r = ratios.get(key)
            self.left_out_fg.append(key)
            if r is not None:
                self.problems.append(
                    Problem(
                        path,
                        f"{key}: ratio {r!r} for an item with a foreground (must be in (0, 1]): "
                        "foreground left out",
                    )  # fmt: skip
                )
            elif key not in self._bad_ratio:
                self.problems.append(Problem(path, f"no ratio for {key}: foreground left out"))

    # ---- items ---------------------------------------------------------------------------------
    def fg_key(self, i: int) -> str:
        return f"{self.classes[int(self.fg.labels[i])]}/{self.fg.stems[i]}{BG_EXT}"

    def bg_key(self, i: int) -> str:
        return f"{self.classes[int(self.bg.labels[i])]}/{self.bg.stems[i]}{BG_EXT}"

    def fg_class(self, i: int) -> str:
        return self.classes[int(self.fg.labels[i])]

    def fg_name(self, i: int) -> str:
        """Where foreground ``i`` is, for messages: its path, or ``zip:member``."""
        if self.fg.members is not None:
            return f"{self.layout.fg_zip}:{self.fg.members[i]}"
        return str(self.layout.fg_path(self.fg_class(i), self.fg.stems[i]))

    def bg_name(self, i: int) -> str:
        if self.bg.members is not None:
            return f"{self.layout.bg_zip}:{self.bg.members[i]}"
        return str(self.layout.bg_path(self.classes[int(self.bg.labels[i])], self.bg.stems[i]))

    def _zip(self, kind: str) -> zipfile.ZipFile:
        handles = self._zips.setdefault(os.getpid(), {})
        if kind not in handles:
            handles[kind] = zipfile.ZipFile(self.layout.fg_zip if kind == "fg" else self.layout.bg_zip)
        return handles[kind]

    def _read(self, kind: str, i: int) -> bytes:
        table = self.fg if kind == "fg" else self.bg
        name = self.fg_name(i) if kind == "fg" else self.bg_name(i)
        if self._packed is not None:
            blob = self._packed.payload(i if kind == "fg" else len(self.fg) + i)
            if blob is None:
                raise BadItemError(name, "refused when the split was packed (forcomp verify says why)")
            return bytes(blob)
        try:
            if table.members is not None:
                return self._zip(kind).read(table.members[i])
            return read_regular_file(name, max_bytes=self.max_bytes, root=self.layout.root)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as e:
            reason = describe_os_error(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
            raise BadItemError(name, f"cannot read ({reason})") from None

    def fg_bytes(self, i: int) -> bytes:
        """The raw bytes of foreground ``i`` (a regular file of the cache, size-checked)."""
        return self._read("fg", i)

    def bg_bytes(self, i: int) -> bytes:
        return self._read("bg", i)

    def decode_fg(self, i: int) -> torch.Tensor:
        """Foreground ``i`` as ``(4, h, w)`` uint8 RGBA, or :class:`BadItemError` naming it and why."""
        name = self.fg_name(i)
        data = self.fg_bytes(i)
        if self._packed is not None:  # lossless QOI of the decoded foreground
            try:
                return decode_qoi(data, name, max_pixels=self.max_pixels)
            except ForcompError as e:
                raise BadItemError(name, str(e).removeprefix(f"{name}: ")) from None
        try:
            out = decode_foreground(data, name, max_pixels=self.max_pixels)
        except ForcompError as e:
            raise BadItemError(name, str(e).removeprefix(f"{name}: ")) from None
        if not has_alpha_channel(data) and name not in self._opaque_warned:
            self._opaque_warned.add(name)
            log.warning(
                "%s: foreground has no alpha channel: pasted as an opaque rectangle (an RGB file, or "
                "a mask that fills its whole box)", name,
            )  # fmt: skip
        return out

    def decode_bg(self, i: int) -> torch.Tensor:
        """Background ``i`` as ``(3, H, W)`` uint8 RGB, or :class:`BadItemError` naming it and why."""
        name = self.bg_name(i)
        data = self.bg_bytes(i)
        try:
            return decode_background(data, name, max_pixels=self.max_pixels)
        except ForcompError as e:
            raise BadItemError(name, str(e).removeprefix(f"{name}: ")) from None

    # ---- sources (forcomp's index) -----------------------------------------------------------------
    @property
    def has_sources(self) -> bool:
        """Whether the split has forcomp's index (which knows each item's source image)."""
        return self.layout.index_dir.is_dir() and any(self.layout.index_dir.glob("*.jsonl"))

    def source_path(self, i: int, *, roots: list[Path] | None = None) -> Path | None:
        """The source image of foreground ``i`` from forcomp's index, if it lies inside a source root
        a build of this split read (or inside one of ``roots``); None otherwise (logged once)."""
        if self._sources is None:
            from forcomp.cache.index import read_index, recorded_sources

            index = read_index(self.layout)
            self._sources = {k: r.source for k, r in index.items() if r.status == "ok"}
            self._source_roots = [Path(s) for s in recorded_sources(self.layout)]
        src = self._sources.get(self.fg_key(i))
        if not src:
            return None
        allowed = self._source_roots + list(roots or [])
        if not any(is_within(src, r) for r in allowed):
            log.warning(
                "%s: index source %s lies outside the build's source folder(s) %s; not opened",
                self.fg_key(i), src, [str(r) for r in allowed] or "(none recorded)",
            )  # fmt: skip
            return None
        return Path(src)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zips"] = {}  # open zip handles (and the packed form's mappings) stay in their process
        return state
