"""Which backgrounds each foreground may be pasted on: ForNet's pruning, with a fallback per class.

Pools are index arrays (one for ``background="all"``, one concatenated array with per-class
offsets for ``"same"``), so a dataset of 1.28 M items holds a few arrays, not millions of Python
integers that every DataLoader worker would copy as it touches them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from forcomp.cache.reader import CacheReader
from forcomp.errors import CacheFormatError
from forcomp.recombine.config import RecombineConfig

log = logging.getLogger(__name__)


def group_by_label(labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: item indices grouped by label (stable), and where each label's group
    starts (``starts[c]:starts[c + 1]``)."""
    order = np.argsort(labels, kind="stable").astype(np.int64)
    starts = np.searchsorted(labels[order], np.arange(n_classes + 1)).astype(np.int64)
    return order, starts


@dataclass(frozen=True)
class Pools:
    """The backgrounds a foreground may draw.

    Attributes:
        all: background indices for ``background="all"``.
        by_class: background indices for ``"same"``, grouped by class.
        starts: ``(n_classes + 1,)`` offsets into ``by_class``.
    """

    all: np.ndarray
    by_class: np.ndarray
    starts: np.ndarray

    def of_class(self, label: int) -> np.ndarray:
        """The ``"same"`` pool of class ``label`` (a view)."""
        return self.by_class[self.starts[label] : self.starts[label + 1]]


def background_pools(reader: CacheReader, cfg: RecombineConfig, split: str) -> Pools:
    """The pools of ``reader``'s split under ``cfg``'s ``background`` and ``pruning_ratio``.

    Backgrounds whose object covered ``pruning_ratio`` or more (or that have no ratio) are left
    out; where that leaves none (of a class, or at all), the unpruned ones are used, with a warning.
    """
    n_bg, n_classes = len(reader.bg), len(reader.classes)
    if cfg.background == "orig":
        missing = np.flatnonzero(reader.fg_bg < 0)
        if len(missing):
            raise CacheFormatError(
                f"background='orig' but {len(missing)} foreground(s) have no background, "
                f"e.g. {reader.fg_key(int(missing[0]))}"
            )
    if not n_bg and cfg.background != "orig":
        raise CacheFormatError(f"the {split} split has no backgrounds")
    keep = np.where(reader.bg_has_ratio, reader.bg_ratio, 1.0) < cfg.pruning_ratio
    pool_all = np.flatnonzero(keep).astype(np.int64)
    if not len(pool_all):
        if n_bg:
            log.warning("pruning_ratio=%s removes every background; using all of them", cfg.pruning_ratio)
        pool_all = np.arange(n_bg, dtype=np.int64)
    order, starts = group_by_label(reader.bg.labels, n_classes)
    has_fg = np.zeros(n_classes, dtype=bool)
    has_fg[reader.fg.labels] = True
    parts: list[np.ndarray] = []
    for c in range(n_classes):
        members = order[starts[c] : starts[c + 1]]
        kept = members[keep[members]]
        if not len(kept):
            if has_fg[c] and cfg.background == "same":
                if not len(members):
                    raise CacheFormatError(
                        f"background='same' but class {reader.classes[c]!r} has no background "
                        f"in the {split} split"
                    )
                log.warning(
                    "class %s: every background pruned (pruning_ratio=%s); using its unpruned ones",
                    reader.classes[c],
                    cfg.pruning_ratio,
                )
            kept = members  # a class without objects: its backgrounds only serve "all"
        parts.append(kept)
    by_class = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(n_classes + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return Pools(pool_all, by_class, offsets)
