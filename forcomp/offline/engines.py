"""The local engine: batches through ``process_batch`` in this process or in a pool of CPU workers."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from forcomp.cache.index import IndexRecord, IndexWriter
from forcomp.cache.layout import CacheLayout
from forcomp.errors import ForcompError
from forcomp.offline.config import BuildConfig
from forcomp.offline.pipeline import Backends, BuildSummary, batched, process_batch
from forcomp.offline.sources import Item

log = logging.getLogger(__name__)


# Worker-process state: backends are built once per process by the pool initializer.
_WORKER: dict[str, Any] = {}


# How often a worker checks that the build process is still there (seconds).
PARENT_POLL_S = 1.0


def _exit_when_orphaned(parent_pid: int, poll_s: float) -> None:
    while True:
        if os.getppid() != parent_pid:  # re-parented: the build process is gone (SIGKILL, OOM killer)
            os._exit(1)
        time.sleep(poll_s)


def _watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """Exit this worker process within ``poll_s`` of the build process dying.

    A ProcessPoolExecutor worker whose parent was SIGKILLed would otherwise wait for work forever
    (it holds both ends of its task queue, so it never sees end-of-file). ``parent_pid`` is passed
    in, not read here: a parent that died before this worker started is noticed on the first check.
    """
    threading.Thread(
        target=_exit_when_orphaned, args=(parent_pid, poll_s), name="forcomp-parent-watch", daemon=True
    ).start()


def _init_worker(config: BuildConfig, layout: CacheLayout, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _watch_parent(parent_pid)
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER["backends"] = Backends.from_config(config)
    _WORKER["config"] = config
    _WORKER["layout"] = layout


def _work(batch: list[Item]) -> list[IndexRecord]:
    return process_batch(batch, _WORKER["backends"], _WORKER["config"], _WORKER["layout"])


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="img", desc=desc, dynamic_ncols=True, smoothing=0.1)


def _results(
    todo: Sequence[Item], config: BuildConfig, layout: CacheLayout, names: dict[str, str]
) -> Iterator[list[IndexRecord]]:
    batches = list(batched(todo, config.batch_size))
    if config.workers <= 1 or len(batches) <= 1:
        backends = Backends.from_config(config)
        names.update(segmenter=backends.segmenter.name, inpainter=backends.inpainter.name)
        for b in batches:
            yield process_batch(b, backends, config, layout)
        return
    # spawn, not fork: a forked child inherits OpenCV's/torch's thread pools in whatever state
    # they were and can deadlock (seen here with workers=2), and CUDA cannot be forked at all.
    # A ProcessPoolExecutor, not multiprocessing.Pool: when a worker dies while starting (a script
    # calling build_cache without the `if __name__ == "__main__":` guard that spawn needs), Pool
    # respawns it forever and the build hangs; the executor reports a broken pool.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        config.workers, mp_context=ctx, initializer=_init_worker, initargs=(config, layout, os.getpid())
    ) as pool:
        try:
            yield from pool.map(_work, batches)
        except BrokenProcessPool as e:
            raise ForcompError(
                f"the {config.workers} build worker processes could not start or died ({e}). Calling "
                "build_cache(..., workers>1) from a script? Put the call under "
                '`if __name__ == "__main__":` (worker processes re-import the script), or use workers=1.'
            ) from e


def run_local(
    todo: Sequence[Item],
    layout: CacheLayout,
    config: BuildConfig,
    summary: BuildSummary,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Process ``todo`` and append each record to this process's index file as soon as it is done.

    ``config`` names the backends to run (resolved by
    :func:`forcomp.offline.backends.resolve_backends`, not ``auto``).
    """
    names: dict[str, Any] = {"segmenter": config.segmenter, "inpainter": config.inpainter}
    if not todo:
        return names
    bar = progress_bar(len(todo), progress, f"build {layout.split}")
    with IndexWriter(layout, config.shard_tag) as index:
        for records in _results(todo, config, layout, names):
            index.append(records)
            for rec in records:
                summary.add(rec)
            bar.update(len(records))
            bar.set_postfix(ok=summary.ok, no_obj=summary.no_object, err=len(summary.errors), refresh=False)
    bar.close()
    return names
