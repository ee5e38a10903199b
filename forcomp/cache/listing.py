"""Listing one split of a cache — class folders or zip members, and the ratios file — with every
name, type and value validated; what does not pass goes to :attr:`SplitLister.problems`.

See :mod:`forcomp.cache.reader` for the rules; this module only lists and validates, the reader
turns the result into arrays.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from forcomp.cache.layout import BG_EXT, FG_EXT, UNSAFE_CHAR, CacheLayout, safe_component
from forcomp.cache.problems import Problem
from forcomp.errors import CacheFormatError, UnsafePathError
from forcomp.safe_files import check_entry, is_within, read_regular_file


@dataclass(frozen=True)
class Listing:
    classes: set[str]
    items: dict[str, list[str]]  # class -> its stems, sorted as their keys
    members: dict[str, list[str]] | None  # class -> zip member names (same order), None for folders


def parse_json(data: bytes) -> object:
    """JSON with orjson when installed (4x faster on an ImageNet-sized ratios file), else the
    standard library, which also reads the ``NaN``/``Infinity`` literals Python's json writes."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - depends on the environment
        return json.loads(data.decode("utf-8"))
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8"))


def all_in_unit(values: Iterable[object]) -> bool:
    """Whether every value is in [0, 1] (NaN fails, infinities fail)."""
    arr = np.fromiter(values, dtype=np.float64)
    return bool(((arr >= 0.0) & (arr <= 1.0)).all())


def key_sorted(names: list[str]) -> list[str]:
    """File names in the order of their keys ``<stem>.JPEG``: the same as by name, since every
    extension starts with the "." at which a stem and a longer one first differ."""
    return sorted(names)


class SplitLister:
    """Lists and validates the files and ratios of one split.

    Attributes:
        problems: what was left out, with file and reason.
        bad_ratio: keys whose ratio value was refused (reported once).
    """

    def __init__(self, layout: CacheLayout, split: str, max_bytes: int) -> None:
        self.layout, self.split, self.max_bytes = layout, split, max_bytes
        self.problems: list[Problem] = []
        self.bad_ratio: set[str] = set()

    def list_dir(self, d: Path, ext: str) -> Listing:
        root = self.layout.root
        classes: set[str] = set()
        items: dict[str, list[str]] = {}
        n_ext = len(ext)
        for c in sorted(os.scandir(d), key=lambda e: e.name):
            if c.name.startswith("."):
                continue
            try:
                cls = safe_component(c.name, what="class name")
            except UnsafePathError as e:
                self.problems.append(Problem(c.path, str(e)))
                continue
            if c.is_symlink() and not is_within(c.path, root):
                classes.add(cls)  # the class keeps its label; its files are not read
                self.problems.append(
                    Problem(
                        c.path,
                        f"class folder is a symbolic link to {os.path.realpath(c.path)}, "
                        "outside the cache: its files are not read",
                    )  # fmt: skip
                )
                continue
            if not c.is_dir():
                self.problems.append(Problem(c.path, "not a class folder (ignored)"))
                continue
            classes.add(cls)
            # Names only (no stat, no DirEntry per file): the file type is checked when it is read.
            names = os.listdir(c.path)
            names.sort()  # = key order, see _key_sorted
            joined = "/".join(names)  # "/" cannot occur in a file name: one scan per check
            if (joined.count(ext + "/") + joined.endswith(ext) != len(names)) or "/." in "/" + joined:
                names = [n for n in names if n.endswith(ext) and n[0] != "."]
                joined = "/".join(names)
            if UNSAFE_CHAR.search(joined.replace("/", "")):
                for n in [n for n in names if UNSAFE_CHAR.search(n)]:
                    self.problems.append(
                        Problem(os.path.join(c.path, n), "unsafe file name (control character)")
                    )
                names = [n for n in names if not UNSAFE_CHAR.search(n)]
            items[cls] = [n[:-n_ext] for n in names]
        return Listing(classes, items, None)

    def list_zip(self, path: Path, ext: str) -> Listing:
        classes: set[str] = set()
        found: dict[str, dict[str, str]] = {}
        # ForNet's members are "<split>/<kind>/<class>/<stem><ext>"; plain "<class>/<stem><ext>" too.
        kind = "foregrounds" if ext == FG_EXT else "backgrounds"
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
        except (OSError, zipfile.BadZipFile) as e:
            raise CacheFormatError(f"{path}: not a readable zip file ({e})") from None
        for info in infos:
            parts = info.filename.replace("\\", "/").split("/")
            is_dir = info.is_dir() or info.filename.endswith("/")
            if is_dir:
                parts = [p for p in parts if p]
            if is_dir:
                ok_prefix = len(parts) == 1 or (len(parts) == 3 and parts[:2] == [self.split, kind])
            else:
                ok_prefix = len(parts) == 2 or (len(parts) == 4 and parts[:2] == [self.split, kind])
            where = f"{path}:{info.filename}"
            if is_dir:
                if ok_prefix:
                    try:
                        classes.add(safe_component(parts[-1], what="class name"))
                    except UnsafePathError as e:
                        self.problems.append(Problem(where, str(e)))
                continue
            if not parts[-1].endswith(ext) or parts[-1].startswith("."):
                continue
            if not ok_prefix:
                self.problems.append(Problem(where, f"unexpected member path (expected <class>/<stem>{ext})"))
                continue
            mode = info.external_attr >> 16
            if mode and not stat.S_ISREG(mode):
                self.problems.append(
                    Problem(where, "zip member is not a regular file (a link or special file)")
                )
                continue
            if info.file_size > self.max_bytes:
                self.problems.append(
                    Problem(where, f"{info.file_size} bytes, more than the limit of {self.max_bytes}")
                )
                continue
            try:
                cls = safe_component(parts[-2], what="class name")
                stem = safe_component(parts[-1][: -len(ext)], what="stem")
            except UnsafePathError as e:
                self.problems.append(Problem(where, str(e)))
                continue
            classes.add(cls)
            stems = found.setdefault(cls, {})
            if stem in stems:
                self.problems.append(Problem(where, f"duplicate of member {stems[stem]!r} (ignored)"))
                continue
            stems[stem] = info.filename
        items = {c: key_sorted(list(m)) for c, m in found.items()}
        return Listing(classes, items, {c: [found[c][s] for s in items[c]] for c in items})

    def read_ratios(self) -> dict[str, float]:
        """``{key: ratio}`` with every value a finite number in [0, 1]; keys in ForNet's
        ``<split>/backgrounds/`` form are shortened. Bad values and clashing keys go to ``problems``."""
        path = self.layout.ratios_path
        why = check_entry(path, self.layout.root) if path.exists() or path.is_symlink() else None
        if why is not None:
            raise CacheFormatError(f"{path}: {why}")
        try:
            raw = parse_json(read_regular_file(path, max_bytes=1 << 31, root=self.layout.root))
        except FileNotFoundError:
            raise CacheFormatError(f"{path} is missing (rerun forcomp build to finish the split)") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CacheFormatError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(raw, dict):
            raise CacheFormatError(
                f'{path}: a JSON {type(raw).__name__}, expected an object {{"<class>/<stem>.JPEG": ratio}}'
            )
        prefix = f"{self.split}/backgrounds/"
        if any(map(str.startswith, raw, repeat(prefix))):
            norm: dict[str, object] = {}
            for k, v in raw.items():
                key = k[len(prefix) :] if k.startswith(prefix) else k
                if key in norm:
                    self.problems.append(
                        Problem(str(path), f"{k}: the same item as another key (item left out)")
                    )
                    self.bad_ratio.add(key)
                    norm[key] = None
                else:
                    norm[key] = v
            raw = norm
        if not set(map(type, raw.values())) <= {float, int} or not all_in_unit(raw.values()):
            bad = [k for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not math.isfinite(v) or not 0 <= v <= 1]  # fmt: skip
            for k in bad:
                if k not in self.bad_ratio:
                    self.problems.append(
                        Problem(str(path), f"{k}: ratio {raw[k]!r} is not a number in [0, 1] (item left out)")
                    )
                self.bad_ratio.add(k)
                del raw[k]
        return raw  # type: ignore[return-value]

    def report_unknown_keys(self, ratios: dict[str, float], fg: Listing, bg: Listing) -> None:
        """Name the ratio keys that are not ``<class>/<stem>.JPEG`` of a listed item."""
        path = self.layout.ratios_path
        known = {
            c: set(fg.items.get(c, [])) | set(bg.items.get(c, [])) for c in fg.items.keys() | bg.items.keys()
        }
        for k in ratios:
            cls, sep, name = k.partition("/")
            stem = name[: -len(BG_EXT)] if name.endswith(BG_EXT) else None
            if not sep or stem is None or "/" in name:
                self.problems.append(
                    Problem(str(path), f"key {k!r}: expected <class>/<stem>{BG_EXT} (ignored)")
                )
            elif stem not in known.get(cls, set()):
                self.problems.append(Problem(str(path), f"key {k!r} names no item of the split (ignored)"))
