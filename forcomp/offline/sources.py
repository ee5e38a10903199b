"""Walk an ImageFolder-style source (``SOURCE/<class>/**/<image>``) into sorted, shardable items."""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from forcomp.cache.layout import BG_EXT, safe_component
from forcomp.decode import IMAGE_EXTENSIONS, is_image_file
from forcomp.errors import ForcompError, UnsafePathError

log = logging.getLogger(__name__)


class SourceLayoutError(ForcompError):
    """A source that is not one split's ImageFolder (split folders inside it, no image at all)."""


# Folder names that mean a split, not a class: a source holding them is the dataset root.
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "dev"})


@dataclass(frozen=True)
class Item:
    """One source image. ``key`` (``"<class>/<stem>.JPEG"``) names it in the cache and index."""

    path: Path
    cls: str
    stem: str
    label: int
    problem: str | None = None  # set when the item cannot be processed at all (e.g. unsafe name)

    @property
    def key(self) -> str:
        return f"{self.cls}/{self.stem}{BG_EXT}"


def find_classes(source: Path) -> list[str]:
    """Class folder names, sorted as torchvision's ImageFolder sorts them (labels match)."""
    if not source.exists():
        raise ForcompError(f"source {source} does not exist (expected a folder SOURCE/<class>/<image>)")
    if not source.is_dir():
        raise ForcompError(f"source {source} is not a directory (expected a folder SOURCE/<class>/<image>)")
    try:
        entries = list(os.scandir(source))
    except OSError as e:
        raise ForcompError(f"cannot list source {source}: {e.strerror or e}") from e
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        images = sum(1 for e in entries if e.is_file() and is_image_file(Path(e.name)))
        if images:
            raise ForcompError(
                f"source {source} holds {images} image file(s) but no class sub-folders: put the images "
                f"in SOURCE/<class>/ (e.g. {source / 'my_class'}/), one folder per class, as "
                "torchvision's ImageFolder expects"
            )
        raise ForcompError(
            f"source {source} has no class sub-folders (expected SOURCE/<class>/<image> files)"
        )
    return classes


def check_not_split_root(
    source: Path, classes: list[str], split: str, cache: str | os.PathLike[str] = "CACHE"
) -> None:
    """Refuse a dataset root (``imgs/`` holding ``train/`` and ``val/``) passed as one split's source.

    Its split folders would become classes and every image would be labelled by its split. Refused
    when two or more class folders, or all of them, are named like splits (``train``, ``val``, ...).
    """
    splitlike = [c for c in classes if c.lower() in SPLIT_NAMES]
    if not splitlike or (len(splitlike) < 2 and len(splitlike) < len(classes)):
        return
    match = next((c for c in splitlike if c.lower() == split.lower()), splitlike[0])
    raise SourceLayoutError(
        f"source {source} holds split folders ({', '.join(splitlike)}), not class folders: pass one "
        f"split's folder as SOURCE, e.g. `forcomp build {source / match} {cache} --split {split}`"
    )


def check_has_images(source: Path, classes: list[str], items: list[Item]) -> None:
    """Refuse a source whose class folders hold no image file at all (a build would make nothing)."""
    if items:
        return
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    raise SourceLayoutError(
        f"source {source} has {len(classes)} class folder(s) ({', '.join(classes[:5])}"
        f"{', ...' if len(classes) > 5 else ''}) but no image file in them (looked for {exts}, "
        "any case, in sub-folders too): put the images in SOURCE/<class>/"
    )


def _walk_images(class_dir: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=lambda e: log.warning("skipping %s", e)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(Path(f)))
    return found


def _stem_for(class_dir: Path, path: Path) -> str:
    rel = path.relative_to(class_dir).with_suffix("")
    return "__".join(rel.parts)


def list_items(source: str | os.PathLike[str]) -> list[Item]:
    """All image items of ``source``, sorted by key; labels are indices into :func:`find_classes`.

    Two files whose stems collide (``a.jpg`` and ``a.png``) get the extension appended to the stem of
    every file but the first, so each item keeps a unique, deterministic key.
    """
    source = Path(source)
    items: list[Item] = []
    for label, cls in enumerate(find_classes(source)):
        class_dir = source / cls
        try:
            safe_component(cls, what="class name")
            cls_problem = None
        except UnsafePathError as e:
            cls_problem = str(e)
        seen: set[str] = set()
        n_before = len(items)
        for path in _walk_images(class_dir):
            stem = _stem_for(class_dir, path)
            if stem in seen:
                stem = f"{stem}_{path.suffix.lstrip('.').lower()}"
            seen.add(stem)
            problem = cls_problem
            if problem is None:
                try:
                    safe_component(stem, what="stem")
                except UnsafePathError as e:
                    problem = str(e)
            items.append(Item(path=path, cls=cls, stem=stem, label=label, problem=problem))
        if len(items) == n_before:
            log.warning(
                "class folder %s holds no image: the cache keeps the class (label %d) with no items "
                "(torchvision's ImageFolder refuses such a source); remove the folder or put its images in",
                class_dir,
                label,
            )
    items.sort(key=lambda it: it.key)
    return items


def shard_of(key: str, num_shards: int) -> int:
    """The shard an item belongs to: a stable hash of its key, independent of the file list."""
    return zlib.crc32(key.encode("utf-8")) % num_shards


def select_shard(items: list[Item], shard: tuple[int, int]) -> list[Item]:
    i, n = shard
    return items if n == 1 else [it for it in items if shard_of(it.key, n) == i]
