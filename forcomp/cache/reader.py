"""Read one split of a cache: forcomp caches and ForNet releases (folders, or the published zips).

Class names and stems come from the files (or zip members) and are validated with
:func:`safe_component`; zip members are read by name, never extracted, so no member can reach
outside the cache. Zip handles are opened lazily per process (DataLoader workers each get theirs).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from forcomp.cache.index import read_index
from forcomp.cache.layout import BG_EXT, FG_EXT, CacheLayout, safe_component
from forcomp.errors import CacheFormatError, UnsafePathError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One foreground or background file: ``cls/stem`` and where its bytes are."""

    cls: str
    stem: str

    @property
    def key(self) -> str:
        return f"{self.cls}/{self.stem}{BG_EXT}"


def _split_member(name: str, ext: str) -> Part | None:
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 2 or not parts[-1].endswith(ext):
        return None
    try:
        return Part(
            safe_component(parts[-2], what="class name"), safe_component(parts[-1][: -len(ext)], what="stem")
        )
    except UnsafePathError as e:
        log.warning("ignoring zip member %r: %s", name, e)
        return None


class CacheReader:
    """Lists and reads the foregrounds and backgrounds of ``root``'s ``split``.

    Attributes:
        mode: ``"folder"`` or ``"zip"``.
        foregrounds / backgrounds: sorted :class:`Part` lists.
        ratios: ``{"<cls>/<stem>.JPEG": mask_area / image_area}``.
        classes: sorted class names of the foregrounds (label = index, as torchvision ImageFolder).
        sources: ``{key: source image path}`` from forcomp's index (empty for ForNet releases).
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        self.layout = CacheLayout(Path(root), split)
        lay = self.layout
        if lay.root.exists() and not lay.root.is_dir():
            raise CacheFormatError(
                f"cache {lay.root} is a file, not a cache directory (pass the folder `forcomp build` wrote)"
            )
        if not lay.root.is_dir():
            raise CacheFormatError(f"cache {lay.root} does not exist")
        if lay.fg_dir.is_dir() and lay.bg_dir.is_dir():
            self.mode = "folder"
            self.foregrounds = self._list_dir(lay.fg_dir, FG_EXT)
            self.backgrounds = self._list_dir(lay.bg_dir, BG_EXT)
        elif lay.fg_zip.is_file() and lay.bg_zip.is_file():
            self.mode = "zip"
            with zipfile.ZipFile(lay.fg_zip) as z:
                fg = {p: n for n in z.namelist() if (p := _split_member(n, FG_EXT))}
            with zipfile.ZipFile(lay.bg_zip) as z:
                bg = {p: n for n in z.namelist() if (p := _split_member(n, BG_EXT))}
            self._members = {"fg": fg, "bg": bg}
            self.foregrounds, self.backgrounds = (
                sorted(fg, key=lambda p: p.key),
                sorted(bg, key=lambda p: p.key),
            )
        else:
            raise CacheFormatError(
                f"no {split} split in {lay.root}: expected {lay.fg_dir} and {lay.bg_dir}, or "
                f"{lay.fg_zip.name} and {lay.bg_zip.name} "
                f"(build it with: forcomp build SOURCE {lay.root} --split {split})"
            )
        if not self.foregrounds:
            raise CacheFormatError(f"the {split} split of {lay.root} has no foregrounds")
        try:
            raw = json.loads(lay.ratios_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CacheFormatError(
                f"{lay.ratios_path} is missing (rerun forcomp build to finish the split)"
            ) from None
        # ForNet's own script writes keys with a prefix; the last two components are the key.
        self.ratios = {"/".join(k.split("/")[-2:]): float(v) for k, v in raw.items()}
        missing = [p.key for p in self.foregrounds if p.key not in self.ratios]
        if missing:
            raise CacheFormatError(
                f"{lay.ratios_path} has no ratio for {len(missing)} foreground(s), e.g. {missing[0]}"
            )
        index = read_index(lay)
        # Every class the split knows, not only those with a foreground: a class whose images all
        # had no object keeps its place, so labels stay those of the source ImageFolder.
        self.classes = sorted(
            {p.cls for p in self.foregrounds}
            | {p.cls for p in self.backgrounds}
            | {r.cls for r in index.values()}
        )
        source_labels = {r.cls: r.label for r in index.values()}
        shifted = [c for i, c in enumerate(self.classes) if source_labels.get(c, i) != i]
        if shifted:
            c = shifted[0]
            log.warning(
                "%s: class %s is label %d in the source ImageFolder but %d here (the source has class "
                "folders without any image?); labels follow this cache's %d classes",
                lay.root,
                c,
                source_labels[c],
                self.classes.index(c),
                len(self.classes),
            )
        self.sources = {k: r.source for k, r in index.items() if r.status == "ok"}
        self._zips: dict[int, dict[str, zipfile.ZipFile]] = {}

    @staticmethod
    def _list_dir(d: Path, ext: str) -> list[Part]:
        out = []
        for c in sorted(os.scandir(d), key=lambda e: e.name):
            if c.is_dir() and not c.name.startswith("."):
                out += [
                    Part(c.name, f.name[: -len(ext)])
                    for f in sorted(os.scandir(c.path), key=lambda e: e.name)
                    if f.name.endswith(ext) and not f.name.startswith(".")
                ]
        return sorted(out, key=lambda p: p.key)

    def _zip(self, kind: str) -> zipfile.ZipFile:
        handles = self._zips.setdefault(os.getpid(), {})
        if kind not in handles:
            handles[kind] = zipfile.ZipFile(self.layout.fg_zip if kind == "fg" else self.layout.bg_zip)
        return handles[kind]

    def fg_bytes(self, part: Part) -> bytes:
        if self.mode == "zip":
            return self._zip("fg").read(self._members["fg"][part])
        return self.layout.fg_path(part.cls, part.stem).read_bytes()

    def bg_bytes(self, part: Part) -> bytes:
        if self.mode == "zip":
            return self._zip("bg").read(self._members["bg"][part])
        return self.layout.bg_path(part.cls, part.stem).read_bytes()

    def fg_name(self, part: Part) -> str:
        return (
            str(self.layout.fg_path(part.cls, part.stem))
            if self.mode == "folder"
            else f"{self.layout.fg_zip}:{self._members['fg'][part]}"
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zips"] = {}  # open zip handles never cross a process boundary
        return state
