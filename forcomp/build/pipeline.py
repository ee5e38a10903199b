"""The offline build: items → decode → segment → pick a mask → inpaint → write files → index.

``process_batch`` is the unit of work every engine runs (in this process, in worker processes or
in Ray actors); ``build_cache`` plans the work (sources, shard, resume), runs an engine, and
finishes the cache (ratios JSON, provenance, summary).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forcomp.build.config import BuildConfig
from forcomp.build.decode import load_rgb
from forcomp.build.masks import feathered_blend, hole_mask
from forcomp.build.segmenters.base import MaskCandidate
from forcomp.build.sources import Item, list_items, select_shard
from forcomp.cache.atomic import TMP_DIRNAME, atomic_write_bytes, remove_stale_tmp
from forcomp.cache.index import FINISHED, IndexRecord, Status, read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.writer import CacheWriter, encode_background, encode_foreground
from forcomp.errors import ForcompError, ImageDecodeError

log = logging.getLogger(__name__)


@dataclass
class Backends:
    """The models of one process, built once (lazily) and reused for every batch."""

    segmenter: Any
    inpainter: Any
    scorer: Any | None = None

    @classmethod
    def from_config(cls, config: BuildConfig) -> Backends:
        from forcomp.build.inpainters import INPAINTERS
        from forcomp.build.segmenters import SEGMENTERS

        wdir = config.weights_path()
        seg = SEGMENTERS.build(
            config.segmenter, weights_dir=wdir, device=config.device, **config.segmenter_options
        )
        inp = INPAINTERS.build(
            config.inpainter, weights_dir=wdir, device=config.device, **config.inpainter_options
        )
        scorer = None
        if config.scorer:
            from forcomp.build.scoring import build_scorer

            scorer = build_scorer(
                config.scorer, weights_dir=wdir, device=config.device, **config.scorer_options
            )
        return cls(seg, inp, scorer)


@dataclass
class BuildSummary:
    """What a build did. ``errors`` lists ``(source file, reason)``; ``exit_code`` is the CLI's."""

    split: str
    total: int = 0
    skipped: int = 0
    ok: int = 0
    no_object: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    segmenter: str | None = None
    inpainter: str | None = None

    @property
    def processed(self) -> int:
        return self.ok + self.no_object + len(self.errors)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def add(self, rec: IndexRecord) -> None:
        if rec.status == "ok":
            self.ok += 1
        elif rec.status == "no_object":
            self.no_object += 1
        else:
            self.errors.append((rec.source, rec.message or "unknown error"))

    def format(self) -> str:
        rate = self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"split {self.split}: {self.total} items, {self.skipped} already done, "
            f"processed {self.processed} in {self.elapsed_s:.1f}s ({rate:.2f} img/s) "
            f"with segmenter={self.segmenter} inpainter={self.inpainter}",
            f"  ok: {self.ok}   no object: {self.no_object}   errors: {len(self.errors)}",
        ]
        lines += [f"  error: {src}: {msg}" for src, msg in self.errors]
        return "\n".join(lines)


def _record(item: Item, status: Status, **kw: Any) -> IndexRecord:
    return IndexRecord(
        key=item.key,
        cls=item.cls,
        stem=item.stem,
        label=item.label,
        source=str(item.path),
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
            records[it.key] = _record(it, "error", message=str(e))
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
    return [records[it.key] for it in items]


def batched(items: Sequence[Item], size: int) -> Iterable[list[Item]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def write_ratios(layout: CacheLayout) -> dict[str, float]:
    """(Re)write ``fg_bg_ratios_<split>.json`` from the merged index, atomically."""
    index = read_index(layout)
    ratios = {k: float(r.ratio) for k, r in sorted(index.items()) if r.status == "ok" and r.ratio is not None}
    data = json.dumps(ratios, indent=0, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(layout.ratios_path, data, tmp_dir=layout.root / TMP_DIRNAME)
    return ratios


def _write_provenance(
    layout: CacheLayout, config: BuildConfig, source: Path, backends_names: dict[str, Any]
) -> None:
    from forcomp import __version__

    prov = {
        "forcomp_version": __version__,
        "source": str(source),
        "config": config.to_dict(),
        "backends": backends_names,
        "host": socket.gethostname(),
        "started": time.time(),
    }
    name = f"build-{config.shard_tag}.{socket.gethostname()}.{os.getpid()}.json"
    atomic_write_bytes(
        layout.index_dir / name, json.dumps(prov, indent=1).encode(), tmp_dir=layout.root / TMP_DIRNAME
    )


def plan(source: Path, cache: Path, config: BuildConfig) -> tuple[CacheLayout, list[Item], list[Item]]:
    """The split's layout, this shard's items, and those still to do (resume skips finished ones)."""
    layout = CacheLayout(cache, config.split)
    items = select_shard(list_items(source), config.shard)
    if config.resume:
        done = {k for k, r in read_index(layout).items() if r.status in FINISHED}
        todo = [it for it in items if it.key not in done]
    else:
        todo = items
    return layout, items, todo


def build_cache(
    source: str | os.PathLike[str],
    cache: str | os.PathLike[str],
    config: BuildConfig | None = None,
    *,
    progress: bool = False,
) -> BuildSummary:
    """Build (or resume) one split of a cache from an ImageFolder-style ``source``.

    Args:
        source: ``SOURCE/<class>/<image>`` folder.
        cache: cache root; created if missing. Other splits and shards in it are left alone.
        config: what to run (backends, shard, workers, engine...); defaults to :class:`BuildConfig`.
        progress: show a progress bar (count, rate, ETA) on stderr.

    Returns:
        A :class:`BuildSummary`; ``summary.errors`` lists every file that failed, with its reason.

    Example:
        >>> summary = build_cache("imagenet/val", "cache", BuildConfig(split="val"))  # doctest: +SKIP
    """
    config = config or BuildConfig()
    source, cache = Path(source), Path(cache)
    t0 = time.perf_counter()
    if not source.is_dir():
        raise ForcompError(f"source {source} is not a directory (expected SOURCE/<class>/<image> files)")
    cache.mkdir(parents=True, exist_ok=True)
    layout, items, todo = plan(source, cache, config)
    removed = remove_stale_tmp(cache / TMP_DIRNAME)
    if removed:
        log.info("removed %d temporary files left by an interrupted build", removed)
    summary = BuildSummary(split=config.split, total=len(items), skipped=len(items) - len(todo))

    if config.engine == "ray":
        from forcomp.build.ray_engine import run_ray

        names = run_ray(todo, layout, config, summary, progress=progress)
    else:
        from forcomp.build.engines import run_local

        names = run_local(todo, layout, config, summary, progress=progress)
    summary.segmenter, summary.inpainter = names.get("segmenter"), names.get("inpainter")
    _write_provenance(layout, config, source, names)
    write_ratios(layout)
    summary.elapsed_s = time.perf_counter() - t0
    log.info("%s", summary.format())
    return summary
