"""The offline build: items → decode → segment → pick a mask → inpaint → write files → index.

``process_batch`` is the unit of work every engine runs (in this process, in worker processes or
in Ray actors). :mod:`forcomp.offline.entry` plans the work and runs an engine over it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from forcomp.cache.index import IndexRecord, Status
from forcomp.cache.layout import CacheLayout
from forcomp.cache.writer import CacheWriter, encode_background, encode_foreground
from forcomp.decode import load_rgb
from forcomp.errors import ImageDecodeError
from forcomp.offline.config import BuildConfig
from forcomp.offline.masks import feathered_blend, hole_mask
from forcomp.offline.segmenters.base import MaskCandidate
from forcomp.offline.sources import Item

log = logging.getLogger(__name__)


@dataclass
class Backends:
    """The models of one process, built once (lazily) and reused for every batch."""

    segmenter: Any
    inpainter: Any
    scorer: Any | None = None

    @classmethod
    def from_config(cls, config: BuildConfig) -> Backends:
        from forcomp.offline.inpainters import INPAINTERS
        from forcomp.offline.segmenters import SEGMENTERS

        wdir = config.weights_path()
        seg = SEGMENTERS.build(
            config.segmenter, weights_dir=wdir, device=config.device, **config.segmenter_options
        )
        inp = INPAINTERS.build(
            config.inpainter, weights_dir=wdir, device=config.device, **config.inpainter_options
        )
        scorer = None
        if config.scorer:
            from forcomp.offline.scoring import build_scorer

            scorer = build_scorer(
                config.scorer, weights_dir=wdir, device=config.device, **config.scorer_options
            )
        return cls(seg, inp, scorer)


@dataclass
class BuildSummary:
    """What a build did. ``errors`` lists ``(source file, reason)``; ``exit_code`` is the CLI's.

    ``stopped`` says why the build stopped before processing every item (the index could not be
    written, a worker process died); ``problems`` lists files of the whole build that could not be
    written (the ratios JSON, the provenance record). Either makes the exit code 1, as item errors do.

    ``ok``, ``no_object`` and ``errors`` count the items this run processed, with this run's
    ``segmenter`` / ``inpainter``; ``skipped`` items were already done and kept as they were, and
    ``kept_backends`` counts them by the backends that made them (``"segmenter=A inpainter=B"``).
    """

    split: str
    total: int = 0
    skipped: int = 0
    ok: int = 0
    no_object: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    segmenter: str | None = None
    inpainter: str | None = None
    kept_backends: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.ok + self.no_object + len(self.errors)

    @property
    def not_processed(self) -> int:
        """Items of this run's share that no worker got to (the build stopped early)."""
        return max(0, self.total - self.skipped - self.processed)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors or self.problems or self.stopped else 0

    def add_error(self, source: str, reason: str) -> None:
        """Count an item as failed in this run without a record of its own."""
        self.errors.append((source, reason))

    def add(self, rec: IndexRecord) -> None:
        if rec.status == "ok":
            self.ok += 1
        elif rec.status == "no_object":
            self.no_object += 1
        else:
            self.errors.append((rec.source, rec.message or "unknown error"))

    def format(self) -> str:
        rate = self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        first = (
            f"split {self.split}: {self.total} items: processed {self.processed} "
            f"with segmenter={self.segmenter} inpainter={self.inpainter} "
            f"in {self.elapsed_s:.1f}s ({rate:.2f} img/s)"
        )
        if self.skipped:
            first += f"; {self.skipped} already done, kept as they were"
            if self.kept_backends:
                made = ", ".join(
                    f"{b}: {n}" if len(self.kept_backends) > 1 else b
                    for b, n in sorted(self.kept_backends.items())
                )
                first += f" (made with {made})"
        lines = [first, f"  ok: {self.ok}   no object: {self.no_object}   errors: {len(self.errors)}"]
        lines += [f"  error: {src}: {_without_path(msg, src)}" for src, msg in self.errors]
        if self.stopped:
            left = f"; {self.not_processed} item(s) not started" if self.not_processed else ""
            lines.append(
                f"  stopped early: {self.stopped}{left}; rerun the same command to finish "
                "(it redoes the items that failed or were not processed)"
            )
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _without_path(message: str, path: str | os.PathLike[str]) -> str:
    """``message`` without a leading ``"<path>: "`` (decode errors name their file; lines name it once)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def backends_label(segmenter: str | None, inpainter: str | None) -> str:
    return f"segmenter={segmenter} inpainter={inpainter}"


def _record(item: Item, status: Status, **kw: Any) -> IndexRecord:
    return IndexRecord(
        key=item.key,
        cls=item.cls,
        stem=item.stem,
        label=item.label,
        source=os.path.abspath(item.path),  # absolute: readers find it from any working directory
        status=status,
        **kw,  # type: ignore[arg-type]
    )


def _choose(
    images: Sequence[np.ndarray], cands: list[list[MaskCandidate]], items: Sequence[Item], scorer: Any | None
) -> list[MaskCandidate | None]:
    if scorer is not None and any(len(c) > 1 for c in cands):
        idx = scorer.select(list(images), cands, [it.cls for it in items], [it.label for it in items])
        return [c[i] if c else None for c, i in zip(cands, idx, strict=True)]
    return [max(c, key=lambda m: m.score) if c else None for c in cands]


def process_batch(
    items: Sequence[Item], backends: Backends, config: BuildConfig, layout: CacheLayout
) -> list[IndexRecord]:
    """Run one batch end to end and write its files; one index record per item, never raises for an item."""
    records: dict[str, IndexRecord] = {}
    good: list[tuple[Item, np.ndarray]] = []
    for it in items:
        if it.problem:
            records[it.key] = _record(it, "error", message=it.problem)
            continue
        try:
            good.append((it, load_rgb(it.path, max_pixels=config.max_image_pixels)))
        except ImageDecodeError as e:
            records[it.key] = _record(it, "error", message=_without_path(str(e), it.path))
    seg, inp = backends.segmenter, backends.inpainter
    prov = dict(
        segmenter=seg.name,
        segmenter_weights=seg.weights_id,
        inpainter=inp.name,
        inpainter_weights=inp.weights_id,
    )
    if good:
        g_items = [g[0] for g in good]
        g_imgs = [g[1] for g in good]
        try:
            cands = seg.segment(g_imgs, [it.cls for it in g_items])
            chosen = _choose(g_imgs, cands, g_items, backends.scorer)
        except Exception as e:  # a backend failure fails the batch's items, not the build
            log.exception("segmenter failed on a batch")
            for it in g_items:
                records[it.key] = _record(it, "error", message=f"segmenter {seg.name} failed: {e}", **prov)
            chosen = []
        todo: list[tuple[Item, np.ndarray, MaskCandidate]] = []
        for it, img, cand in zip(g_items, g_imgs, chosen, strict=False):
            h, w = img.shape[:2]
            size = (w, h)
            if cand is None:
                records[it.key] = _record(
                    it, "no_object", source_size=size, message="no object found", **prov
                )
                continue
            ratio = float(cand.mask.sum()) / (h * w)
            if not config.min_area_ratio <= ratio <= config.max_area_ratio:
                msg = (
                    f"mask covers {ratio:.1%} of the image, outside "
                    f"[{config.min_area_ratio:.1%}, {config.max_area_ratio:.1%}]"
                )
                records[it.key] = _record(it, "no_object", source_size=size, ratio=ratio, message=msg, **prov)
                continue
            todo.append((it, img, cand))
        if todo:
            holes = [hole_mask(c.mask, config.dilate_px) for _, _, c in todo]
            try:
                filled = inp.inpaint([img for _, img, _ in todo], holes)
            except Exception as e:
                log.exception("inpainter failed on a batch")
                for it, _, _ in todo:
                    records[it.key] = _record(
                        it, "error", message=f"inpainter {inp.name} failed: {e}", **prov
                    )
                todo = []
                filled = []
            writer = CacheWriter(layout)
            for (it, img, cand), fill in zip(todo, filled, strict=True):
                h, w = img.shape[:2]
                try:
                    bg = feathered_blend(
                        img, fill, cand.mask, dilate_px=config.dilate_px, feather_px=config.feather_px
                    )
                    fg_bytes, bbox = encode_foreground(img, cand.mask, quality=config.webp_quality)
                    writer.write_item(
                        it.cls, it.stem, fg_bytes, encode_background(bg, quality=config.jpeg_quality)
                    )
                except OSError as e:
                    records[it.key] = _record(it, "error", message=f"cannot write cache files: {e}", **prov)
                    continue
                records[it.key] = _record(
                    it,
                    "ok",
                    source_size=(w, h),
                    bbox=bbox,
                    ratio=float(cand.mask.sum()) / (h * w),
                    score=float(cand.score),
                    **prov,
                )
    _remove_stale_files(items, records, layout)
    return [records[it.key] for it in items]


def _remove_stale_files(items: Sequence[Item], records: dict[str, IndexRecord], layout: CacheLayout) -> None:
    """Delete the files an earlier build left for items whose new record is not ok.

    This runs before the records reach the index: a build killed in between leaves the old ``ok``
    record with its files missing, which readers skip and a resumed build redoes (see :func:`plan`).
    """
    writer = CacheWriter(layout)
    for it in items:
        rec = records[it.key]
        if rec.status == "ok" or it.problem:  # an item with a problem has an unusable name: no files
            continue
        try:
            writer.remove_item(it.cls, it.stem)
        except OSError as e:
            records[it.key] = replace(
                rec,
                status="error",
                message=f"{rec.message}; and its files from an earlier build cannot be removed: {e}",
            )


def batched(items: Sequence[Item], size: int) -> Iterable[list[Item]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])
