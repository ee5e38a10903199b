"""The offline build's entry point: plan the work, run an engine, finish the cache.

``build_cache`` lists the sources of this shard, skips what a previous run finished (resume),
hands the rest to an engine (:mod:`forcomp.offline.engines` or :mod:`forcomp.offline.ray_engine`,
which run :func:`forcomp.offline.pipeline.process_batch`), then writes the ratios JSON and the
run's provenance. Imports flow one way: entry → engines → pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forcomp.cache.atomic import TMP_DIRNAME, atomic_write_bytes, exclusive_lock, remove_stale_tmp
from forcomp.cache.index import FINISHED, IndexRecord, read_index
from forcomp.cache.layout import CacheLayout, safe_component
from forcomp.cache.writer import item_files_state
from forcomp.errors import ForcompError, UnsafePathError
from forcomp.offline.backends import resolve_backends
from forcomp.offline.config import BuildConfig
from forcomp.offline.engines import run_local
from forcomp.offline.pipeline import BuildSummary, backends_label
from forcomp.offline.sources import (
    Item,
    check_has_images,
    check_not_split_root,
    find_classes,
    list_items,
    select_shard,
)
from forcomp.safe_files import describe_os_error

log = logging.getLogger(__name__)


def write_ratios(layout: CacheLayout) -> dict[str, float]:
    """(Re)write ``fg_bg_ratios_<split>.json`` from the merged index, atomically, under a lock.

    Shards share one ratios file: each reads the whole index and rewrites the file. The lock makes
    read-merge-write one step, so the last shard to finish writes the complete merge (without it a
    shard that read the index before another's last records could overwrite that shard's file).
    """
    with exclusive_lock(layout.index_dir / RATIOS_LOCK):
        index = read_index(layout)
        ratios = {
            k: float(r.ratio) for k, r in sorted(index.items()) if r.status == "ok" and r.ratio is not None
        }
        data = json.dumps(ratios, indent=0, ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(layout.ratios_path, data, tmp_dir=layout.root / TMP_DIRNAME)
    return ratios


# Lock file beside the index files (readers take only ``*.jsonl`` and ``build-*.json`` there).
RATIOS_LOCK = ".ratios.lock"


def make_class_dirs(layout: CacheLayout, classes: Sequence[str]) -> None:
    """Create ``foregrounds/<class>/`` and ``backgrounds/<class>/`` for every class of the source.

    Readers take the classes (and labels) from these folders, so a class whose images all had no
    object keeps its label. Idempotent; names that are unsafe are left out (their items fail).
    """
    for cls in classes:
        try:
            safe_component(cls, what="class name")
        except UnsafePathError:
            continue
        for parent in (layout.fg_dir, layout.bg_dir):
            (parent / cls).mkdir(parents=True, exist_ok=True)


def _write_provenance(
    layout: CacheLayout, config: BuildConfig, source: Path, backends_names: dict[str, Any], started: float
) -> None:
    from forcomp.version import __version__

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
    all_items = list_items(source)
    check_has_images(source, find_classes(source), all_items)
    items = select_shard(all_items, config.shard)
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
        made = f"{total} {items} already done with {backends_label(*next(iter(other)))}"
    else:
        groups = " and ".join(f"{n} with {backends_label(*b)}" for b, n in other.most_common())
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


def check_device(config: BuildConfig) -> None:
    """Refuse a device this machine lacks before any work, in one line (:class:`DeviceError`).

    With the Ray engine the device is the actors' and only a malformed name is refused here: the
    process that starts a build on a cluster may have no GPU of its own.
    """
    if config.device is None:
        return
    from forcomp.models.devices import DeviceError, resolve_device

    if config.engine == "local":
        resolve_device(config.device)
        return
    import torch

    try:
        torch.device(config.device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {config.device!r} is not a device name (cpu, cuda, cuda:N)") from None


def build_cache(
    source: str | os.PathLike[str],
    cache: str | os.PathLike[str],
    config: BuildConfig | None = None,
    *,
    progress: bool = False,
    backends: Mapping[str, str] | None = None,
) -> BuildSummary:
    """Build (or resume) one split of a cache from an ImageFolder-style ``source``.

    Args:
        source: ``SOURCE/<class>/<image>`` folder.
        cache: cache root; created if missing. Other splits and shards in it are left alone.
        config: what to run (backends, shard, workers, engine...); defaults to :class:`BuildConfig`.
        progress: show a progress bar (count, rate, ETA) on stderr.
        backends: ``{"segmenter": name, "inpainter": name}`` as
            :func:`~forcomp.offline.backends.resolve_backends` returned it for ``config`` (the CLI
            resolves them to say which it chose); None resolves them here.

    Returns:
        A :class:`BuildSummary`; ``summary.errors`` lists every file that failed, with its reason;
        ``summary.stopped`` says why a build stopped early (index not writable, a worker process
        died) and ``summary.problems`` which files of the whole build could not be written.
        ``summary.exit_code`` is 1 in each of these cases; rerunning the build finishes the work.

    Raises:
        ForcompError: the build cannot run (source missing, without images, or a dataset root
            holding split folders; cache not writable; device missing), before any item is done.

    Example:
        >>> summary = build_cache("imagenet/val", "cache", BuildConfig(split="val"))  # doctest: +SKIP
    """
    config = config or BuildConfig()
    check_device(config)
    source, cache = Path(source), Path(cache)
    t0, started = time.perf_counter(), time.time()
    lay = CacheLayout(cache, config.split)
    _check_paths(source, cache, (lay.split_dir, lay.fg_dir, lay.bg_dir, lay.index_dir, cache / TMP_DIRNAME))
    classes = find_classes(source)
    check_not_split_root(source, classes, config.split, cache)
    # Absolute source paths in the index: ForComp(orig_img_prob=...) and preview find the images
    # from any working directory.
    source = source.resolve()
    layout, items, todo, kept = _plan(source, cache, config)
    chosen = dict(backends) if backends is not None else resolve_backends(config)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        make_class_dirs(layout, classes)
    except OSError as e:
        raise ForcompError(f"cannot create the cache folders in {cache}: {describe_os_error(e)}") from e
    removed = remove_stale_tmp(cache / TMP_DIRNAME)
    if removed:
        log.info("removed %d temporary files left by an interrupted build", removed)
    summary = BuildSummary(split=config.split, total=len(items), skipped=len(items) - len(todo))
    summary.kept_backends = dict(
        Counter(backends_label(r.segmenter, r.inpainter) for r in kept if r.segmenter)
    )
    if kept:
        _warn_kept_backends(kept, (chosen["segmenter"], chosen["inpainter"]))
    run_config = dataclasses.replace(config, segmenter=chosen["segmenter"], inpainter=chosen["inpainter"])
    if config.engine == "ray":
        from forcomp.offline.ray_engine import run_ray  # Ray is an optional extra: import on use

        names = run_ray(todo, layout, run_config, summary, progress=progress)
    else:
        names = run_local(todo, layout, run_config, summary, progress=progress)
    summary.segmenter, summary.inpainter = names.get("segmenter"), names.get("inpainter")
    _finish(layout, config, source, names, started, summary)
    summary.elapsed_s = time.perf_counter() - t0
    if summary.stopped:
        log.error("build stopped early: %s; rerun the same command to finish", summary.stopped)
    log.info("%s", summary.format())
    return summary


def _finish(
    layout: CacheLayout,
    config: BuildConfig,
    source: Path,
    names: dict[str, Any],
    started: float,
    summary: BuildSummary,
) -> None:
    """Write the ratios JSON and the run's provenance; a failed write is a problem of the summary."""
    try:
        write_ratios(layout)
    except OSError as e:
        summary.problems.append(
            f"cannot write {layout.ratios_path} ({describe_os_error(e)}); the previous file is kept: "
            "free space (or raise the file-size limit) and rerun the same command to rewrite it"
        )
    try:
        _write_provenance(layout, config, source, names, started)
    except OSError as e:
        summary.problems.append(
            f"cannot write the build's provenance record in {layout.index_dir} ({describe_os_error(e)})"
        )
