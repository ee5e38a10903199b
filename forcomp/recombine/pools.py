"""Which backgrounds each foreground may be pasted on: ForNet's pruning, with a fallback per class."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from forcomp.cache.reader import CacheReader, Part
from forcomp.errors import CacheFormatError
from forcomp.recombine.config import RecombineConfig

log = logging.getLogger(__name__)


def indices_by_class(parts: Sequence[Part], among: Sequence[int] | None = None) -> dict[str, list[int]]:
    """``{class: [index, ...]}`` of ``parts`` (only the indices in ``among`` when given), one pass."""
    out: dict[str, list[int]] = {}
    for i in range(len(parts)) if among is None else among:
        out.setdefault(parts[i].cls, []).append(i)
    return out


def background_pools(
    reader: CacheReader, foregrounds: Sequence[Part], classes: Sequence[str], cfg: RecombineConfig, split: str
) -> tuple[dict[str, int], list[int], dict[str, list[int]]]:
    """``(bg_index, pool_all, pool_class)``: each background key's index, the backgrounds
    ``background="all"`` draws from, and those ``"same"`` draws from per class.

    Backgrounds whose object covered ``pruning_ratio`` or more are left out; where that leaves
    none (of a class, or at all), the unpruned ones are used, with a warning.
    """
    keys = [p.key for p in foregrounds]
    bgs = reader.backgrounds
    ratios = reader.ratios
    bg_index = {p.key: i for i, p in enumerate(bgs)}
    keep = [i for i, p in enumerate(bgs) if ratios.get(p.key, 1.0) < cfg.pruning_ratio]
    if cfg.background == "orig":
        missing = [k for k in keys if k not in bg_index]
        if missing:
            raise CacheFormatError(
                f"background='orig' but {len(missing)} foreground(s) have no background, e.g. {missing[0]}"
            )
    if not bgs and cfg.background != "orig":
        raise CacheFormatError(f"the {split} split has no backgrounds")
    pool_all = keep or list(range(len(bgs)))
    if not keep and bgs:
        log.warning("pruning_ratio=%s removes every background; using all of them", cfg.pruning_ratio)
    # One pass over the backgrounds (a per-class scan would cost classes x backgrounds: ~10^9
    # steps for ImageNet).
    all_by_class = indices_by_class(bgs)
    kept_by_class = indices_by_class(bgs, keep)
    pool_class: dict[str, list[int]] = {}
    fg_classes = {p.cls for p in foregrounds}
    for c in classes:
        kept = kept_by_class.get(c, [])
        if c not in fg_classes:  # a class without objects: its backgrounds only serve "all"
            pool_class[c] = kept or all_by_class.get(c, [])
            continue
        if not kept:
            kept = all_by_class.get(c, [])
            if cfg.background == "same":
                if not kept:
                    raise CacheFormatError(
                        f"background='same' but class {c!r} has no background in the {split} split"
                    )
                log.warning(
                    "class %s: every background pruned (pruning_ratio=%s); using its unpruned ones",
                    c,
                    cfg.pruning_ratio,
                )
        pool_class[c] = kept
    return bg_index, pool_all, pool_class
