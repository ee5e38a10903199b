"""Reading one item's files for training, with one policy for a file that is refused.

Foreground, background and source image alike: a file the cache reader refuses (unreadable, a
special file, a decompression bomb, damaged) is replaced — another foreground of the item's class
(of any class if the class has none left: the label always follows the picture), another background
of the same pool (of the same class with ``background="orig"``), the recombination instead of an
unreadable original — counted in :attr:`ItemFiles.failures`, and named in one warning per file and
process. Never a dead epoch, never a silent garbage picture.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np
import torch

from forcomp.cache.reader import BadItemError, CacheReader
from forcomp.errors import CacheFormatError, ImageDecodeError
from forcomp.recombine.config import RecombineConfig
from forcomp.recombine.pools import Pools, group_by_label

log = logging.getLogger(__name__)
MAX_RETRIES = 10


class ItemFiles:
    """The files of a split's items as training reads them (see the module docstring).

    Attributes:
        failures: files refused so far in this process (replaced).
    """

    def __init__(
        self, reader: CacheReader, config: RecombineConfig, pools: Pools, orig_root: Path | None
    ) -> None:
        self.reader, self.config, self.pools, self.orig_root = reader, config, pools, orig_root
        self.labels: np.ndarray = reader.fg.labels
        self.classes = reader.classes
        self.failures = 0
        self._fg_groups: tuple[np.ndarray, np.ndarray] | None = None
        self._bad: dict[str, set[int]] = {"fg": set(), "bg": set()}  # this process's refused items
        self._warned: set[str] = set()

    def _refused(self, kind: str, index: int, e: BadItemError | ImageDecodeError, instead: str) -> None:
        """Count a refused file, warn once per file and process, remember it for this process."""
        self.failures += 1
        if kind in self._bad:
            self._bad[kind].add(index)
        name = getattr(e, "path", None) or str(e)
        if name not in self._warned:
            self._warned.add(name)
            log.warning("%s; %s (counted in decode_failures)", e, instead)

    def _draw(self, pool: np.ndarray, g: torch.Generator, avoid: set[int]) -> int | None:
        """A member of ``pool`` drawn with ``g``, skipping ``avoid`` (None if nothing is left)."""
        for _ in range(MAX_RETRIES):
            if not len(pool):
                return None
            j = int(pool[int(torch.randint(len(pool), (1,), generator=g))])
            if j not in avoid:
                return j
        good = np.setdiff1d(pool, np.fromiter(avoid, dtype=np.int64, count=len(avoid)))
        return int(good[int(torch.randint(len(good), (1,), generator=g))]) if len(good) else None

    def _fg_of_class(self, label: int) -> np.ndarray:
        if self._fg_groups is None:
            self._fg_groups = group_by_label(self.labels, len(self.classes))
        order, starts = self._fg_groups
        return order[starts[label] : starts[label + 1]]

    def foreground(self, index: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
        """Foreground ``index``, or, if it is refused, another of its class (of any class if its
        class has none left: the label always follows the picture)."""
        i: int | None = index
        attempt = 0
        while i is not None and attempt < 2 * MAX_RETRIES:
            try:
                return self.reader.decode_fg(i), i
            except BadItemError as e:
                label = int(self.labels[i])
                self._refused("fg", i, e, f"using another foreground of class {self.classes[label]}")
                i = (
                    self._draw(self._fg_of_class(label), g, self._bad["fg"])
                    if attempt < MAX_RETRIES
                    else None
                )
                if i is None:
                    i = self._draw(np.arange(len(self.labels)), g, self._bad["fg"])
            attempt += 1
        raise CacheFormatError(
            f"{self.reader.layout.root}: no foreground of the {self.reader.split} split could be read "
            f"({self.failures} refused; run forcomp verify)"
        )

    def background(self, index: int, g: torch.Generator) -> tuple[torch.Tensor, float]:
        """The background for foreground ``index`` (its own with ``background="orig"``); one that is
        refused is replaced by another of the same pool (``orig``: of the same class)."""
        label, mode = int(self.labels[index]), self.config.background
        pool = self.pools.all if mode == "all" else self.pools.of_class(label)
        j: int | None = int(self.reader.fg_bg[index]) if mode == "orig" else self._draw(pool, g, set())
        for _ in range(2 * MAX_RETRIES):
            if j is None:
                break
            try:
                bg = self.reader.decode_bg(j)
                return bg, float(self.reader.bg_ratio[j])
            except BadItemError as e:
                instead = "drawing another of its class" if mode != "all" else "drawing another"
                self._refused("bg", j, e, instead)
                j = self._draw(pool, g, self._bad["bg"])
                if j is None and pool is not self.pools.all:
                    pool = self.pools.all
                    j = self._draw(pool, g, self._bad["bg"])
        raise CacheFormatError(
            f"{self.reader.layout.root}: no background for {self.reader.fg_key(index)} could be read "
            f"({self.failures} refused; run forcomp verify)"
        )

    def source_path(self, index: int) -> Path | None:
        roots = [self.orig_root] if self.orig_root is not None else []
        if self.reader.has_sources:
            src = self.reader.source_path(index, roots=roots)
            if src is not None:
                return src
        if self.orig_root is not None:
            cls, stem = self.classes[int(self.labels[index])], self.reader.fg.stems[index]
            hits = sorted((self.orig_root / cls).glob(glob.escape(stem) + ".*"))  # a stem is data
            return hits[0] if hits else None
        return None

    def original(self, index: int) -> torch.Tensor | None:
        """The untouched source image of item ``index``, or None (recombined instead) when it is
        missing, outside the source folder, or refused (counted as a decode failure)."""
        path = self.source_path(index)
        if path is None or not path.exists():
            name = f"source image of {self.reader.fg_key(index)}"
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s not found; recombining instead", name)
            return None
        from forcomp.decode import load_rgb

        try:
            return torch.from_numpy(load_rgb(path).copy()).permute(2, 0, 1)
        except ImageDecodeError as e:
            self._refused("orig", index, e, "recombining instead")
            return None
