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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
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
from forcomp.cache.writer import CacheWriter, encode_background, encode_foreground, item_files_state
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
    """What a build did. ``errors`` lists ``(source file, reason)``; ``exit_code`` is the CLI's.

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
        return "\n".join(lines)


def _without_path(message: str, path: str | os.PathLike[str]) -> str:
    """``message`` without a leading ``"<path>: "`` (decode errors name their file; lines name it once)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _backends_label(segmenter: str | None, inpainter: str | None) -> str:
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


def write_ratios(layout: CacheLayout) -> dict[str, float]:
    """(Re)write ``fg_bg_ratios_<split>.json`` from the merged index, atomically."""
    index = read_index(layout)
    ratios = {k: float(r.ratio) for k, r in sorted(index.items()) if r.status == "ok" and r.ratio is not None}
    data = json.dumps(ratios, indent=0, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(layout.ratios_path, data, tmp_dir=layout.root / TMP_DIRNAME)
    return ratios


def _write_provenance(
    layout: CacheLayout, config: BuildConfig, source: Path, backends_names: dict[str, Any], started: float
) -> None:
    from forcomp import __version__

    prov = {
        "forcomp_version": __version__,
        "source": str(source),
        "config": config.to_dict(),
        "backends": backends_names,
        "host": socket.gethostname(),
        "started": started,
        "finished": time.time(),
    }
    name = f"build-{config.shard_tag}.{socket.gethostname()}.{os.getpid()}.json"
    atomic_write_bytes(
        layout.index_dir / name, json.dumps(prov, indent=1).encode(), tmp_dir=layout.root / TMP_DIRNAME
    )


def plan(source: Path, cache: Path, config: BuildConfig) -> tuple[CacheLayout, list[Item], list[Item]]:
    """The split's layout, this shard's items, and those still to do (resume skips finished ones)."""
    layout, items, todo, _ = _plan(source, cache, config)
    return layout, items, todo


def _plan(
    source: Path, cache: Path, config: BuildConfig
) -> tuple[CacheLayout, list[Item], list[Item], list[IndexRecord]]:
    """:func:`plan`, plus the index records of the items kept as they are.

    Resume keeps an item whose record is finished and whose files agree with it: an ``ok`` item
    needs a non-empty foreground and background, a ``no_object`` one must have none left over.
    Checking that costs one ``stat`` per file, no decoding; items that fail it are redone.
    """
    layout = CacheLayout(cache, config.split)
    items = select_shard(list_items(source), config.shard)
    if not config.resume:
        return layout, items, items, []
    index = read_index(layout)
    todo: list[Item] = []
    kept: list[IndexRecord] = []
    damaged = leftover = 0
    for it in items:
        rec = index.get(it.key)
        if rec is None or rec.status not in FINISHED or it.problem:
            todo.append(it)
            continue
        complete, present = item_files_state(layout, it.cls, it.stem)
        if rec.status == "ok" and not complete:
            damaged += 1
            todo.append(it)
        elif rec.status != "ok" and present:
            leftover += 1
            todo.append(it)
        else:
            kept.append(rec)
    if damaged:
        log.warning(
            "%d item(s) already done miss a foreground or background file (or it is empty): redoing them",
            damaged,
        )
    if leftover:
        log.warning(
            "%d item(s) without an object still have files of an earlier build: redoing them", leftover
        )
    return layout, items, todo, kept


def _warn_kept_backends(kept: Sequence[IndexRecord], run: tuple[str, str]) -> None:
    """One warning when items kept by resume were made with other backends than this run's."""
    other = Counter(
        (r.segmenter, r.inpainter)
        for r in kept
        if (r.segmenter or r.inpainter) and (r.segmenter, r.inpainter) != run
    )
    if not other:
        return
    total = sum(other.values())
    items = "item" if total == 1 else "items"
    if len(other) == 1:
        made = f"{total} {items} already done with {_backends_label(*next(iter(other)))}"
    else:
        groups = " and ".join(f"{n} with {_backends_label(*b)}" for b, n in other.most_common())
        made = f"{total} {items} already done ({groups})"
    differ = [
        f"{stage}={name}"
        for stage, name, j in (("segmenter", run[0], 0), ("inpainter", run[1], 1))
        if any(b[j] != name for b in other)
    ]
    log.warning(
        "%s %s kept; this run (%s) applies to new items only; pass --no-resume (resume=False) to redo them",
        made,
        "is" if total == 1 else "are",
        " ".join(differ),
    )


def _check_paths(source: Path, cache: Path, layout_dirs: Sequence[Path]) -> None:
    if not source.exists():
        raise ForcompError(f"source {source} does not exist (expected a folder SOURCE/<class>/<image>)")
    if not source.is_dir():
        raise ForcompError(f"source {source} is not a directory (expected a folder SOURCE/<class>/<image>)")
    for d in (cache, *layout_dirs):
        if d.exists() and not d.is_dir():
            what = "cache" if d == cache else "cache path"
            raise ForcompError(
                f"{what} {d} is a file; it must be a directory (forcomp build creates CACHE if it is missing)"
            )


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
    t0, started = time.perf_counter(), time.time()
    lay = CacheLayout(cache, config.split)
    _check_paths(source, cache, (lay.split_dir, lay.fg_dir, lay.bg_dir, lay.index_dir, cache / TMP_DIRNAME))
    # Absolute source paths in the index: ForComp(orig_img_prob=...) and preview find the images
    # from any working directory.
    source = source.resolve()
    layout, items, todo, kept = _plan(source, cache, config)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ForcompError(f"cannot create the cache directory {cache}: {e.strerror or e}") from e
    removed = remove_stale_tmp(cache / TMP_DIRNAME)
    if removed:
        log.info("removed %d temporary files left by an interrupted build", removed)
    summary = BuildSummary(split=config.split, total=len(items), skipped=len(items) - len(todo))
    summary.kept_backends = dict(
        Counter(_backends_label(r.segmenter, r.inpainter) for r in kept if r.segmenter)
    )
    if kept:
        from forcomp.build.engines import check_weights  # resolves `auto`, as both engines do next

        names = check_weights(config)
        _warn_kept_backends(kept, (names["segmenter"], names["inpainter"]))

    if config.engine == "ray":
        from forcomp.build.ray_engine import run_ray

        names = run_ray(todo, layout, config, summary, progress=progress)
    else:
        from forcomp.build.engines import run_local

        names = run_local(todo, layout, config, summary, progress=progress)
    summary.segmenter, summary.inpainter = names.get("segmenter"), names.get("inpainter")
    _write_provenance(layout, config, source, names, started)
    write_ratios(layout)
    summary.elapsed_s = time.perf_counter() - t0
    log.info("%s", summary.format())
    return summary
