"""Paths inside a cache, and the check that keeps class names and stems inside it.

Layout per split (ForNet-compatible, readable by the ForAug authors' ``ForNet`` loader)::

    CACHE/<split>/foregrounds/<class>/<stem>.WEBP   RGBA, cropped to the mask's bbox, alpha = mask
    CACHE/<split>/backgrounds/<class>/<stem>.JPEG   source-sized, object removed and inpainted
    CACHE/fg_bg_ratios_<split>.json                 {"<class>/<stem>.JPEG": mask_area / image_area}
    CACHE/<split>/index/*.jsonl                     forcomp's index (append-only, one file per writer)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from forcomp.errors import UnsafePathError

SPLITS = ("train", "val")
UNSAFE_CHAR = re.compile(r"[\x00-\x1f/\\]")  # separators, NUL and control characters
FG_EXT = ".WEBP"
BG_EXT = ".JPEG"


def safe_component(name: str, *, what: str = "name") -> str:
    """Return ``name`` if it is one harmless path component, else raise :class:`UnsafePathError`.

    Class names and stems are data: spaces and non-ASCII letters are fine, but separators,
    ``.``/``..``, NUL and control characters would let a name escape the cache directory.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"empty {what}: {name!r}")
    if name in (".", "..") or UNSAFE_CHAR.search(name):
        raise UnsafePathError(f"unsafe {what} {name!r}: it must be a single path component")
    if os.path.isabs(name) or (len(name) >= 2 and name[1] == ":"):
        raise UnsafePathError(f"unsafe {what} {name!r}: absolute paths are not allowed")
    return name


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class CacheLayout:
    """Paths of one split of a cache rooted at ``root``."""

    root: Path
    split: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        check_split(self.split)

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    @property
    def fg_dir(self) -> Path:
        return self.split_dir / "foregrounds"

    @property
    def bg_dir(self) -> Path:
        return self.split_dir / "backgrounds"

    @property
    def index_dir(self) -> Path:
        return self.split_dir / "index"

    @property
    def ratios_path(self) -> Path:
        return self.root / f"fg_bg_ratios_{self.split}.json"

    @property
    def fg_zip(self) -> Path:
        return self.root / f"foregrounds_{self.split}.zip"

    @property
    def bg_zip(self) -> Path:
        return self.root / f"backgrounds_{self.split}.zip"

    def fg_path(self, cls: str, stem: str) -> Path:
        return (
            self.fg_dir
            / safe_component(cls, what="class name")
            / (safe_component(stem, what="stem") + FG_EXT)
        )

    def bg_path(self, cls: str, stem: str) -> Path:
        return (
            self.bg_dir
            / safe_component(cls, what="class name")
            / (safe_component(stem, what="stem") + BG_EXT)
        )

    @staticmethod
    def ratio_key(cls: str, stem: str) -> str:
        """Key of ``fg_bg_ratios_<split>.json`` (and of the index): ``"<class>/<stem>.JPEG"``."""
        return f"{safe_component(cls, what='class name')}/{safe_component(stem, what='stem')}{BG_EXT}"
