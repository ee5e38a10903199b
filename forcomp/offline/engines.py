"""The local engine: batches through ``process_batch`` in this process or in a pool of CPU workers."""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from forcomp.cache.index import IndexRecord, IndexWriter
from forcomp.cache.layout import CacheLayout
from forcomp.errors import ForcompError
from forcomp.offline.config import BuildConfig
from forcomp.offline.pipeline import Backends, BuildSummary, batched, process_batch
from forcomp.offline.sources import Item
from forcomp.safe_files import describe_os_error

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


class WorkerDiedError(ForcompError):
    """A build worker process died mid-build; ``items`` were in flight and have no new record."""

    def __init__(self, message: str, items: Sequence[Item]) -> None:
        super().__init__(message)
        self.items = list(items)


def record_batch(index: IndexWriter, records: Sequence[IndexRecord], summary: BuildSummary, bar: Any) -> bool:
    """Append one batch's records to the index, count them and move the bar; False: stop the build.

    A record that cannot be written whole (disk full, file-size limit) makes its items errors of
    this run: they have no record, so the next build redoes them. Later batches would fail the same
    way, so the build stops rather than process items it cannot record.
    """
    try:
        index.append(records)
    except OSError as e:
        why = describe_os_error(e)
        for rec in records:
            summary.add_error(rec.source, f"its index record could not be written to {index.path}: {why}")
        summary.stopped = f"cannot write the index file {index.path} ({why})"
        return False
    for rec in records:
        summary.add(rec)
    # The postfix first: update() redraws the bar, which then shows the counts of this batch too.
    bar.set_postfix(ok=summary.ok, no_obj=summary.no_object, err=len(summary.errors), refresh=False)
    bar.update(len(records))
    return True


# Batches handed to the pool ahead of the one awaited: enough to keep every worker busy, few
# enough that a worker's death loses little and the summary can name the items in flight.
BATCHES_AHEAD_PER_WORKER = 2


def _results(
    todo: Sequence[Item], config: BuildConfig, layout: CacheLayout, names: dict[str, str]
) -> Generator[list[IndexRecord], None, None]:
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
    pool = ProcessPoolExecutor(
        config.workers, mp_context=ctx, initializer=_init_worker, initargs=(config, layout, os.getpid())
    )
    waiting = iter(batches)
    pending: deque[tuple[list[Item], Future[list[IndexRecord]]]] = deque()
    returned = False
    try:
        for b in itertools.islice(waiting, BATCHES_AHEAD_PER_WORKER * config.workers):
            pending.append((b, pool.submit(_work, b)))
        while pending:
            try:
                records = pending[0][1].result()
            except BrokenProcessPool as e:
                yield from _after_broken_pool(pending, returned, config.workers, e)
                return
            pending.popleft()
            nxt = next(waiting, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_work, nxt)))
            returned = True
            yield records
    finally:
        _quiet_resource_tracker()
        # Also when the consumer stops early: drop the batches not started, wait for the others.
        pool.shutdown(wait=True, cancel_futures=True)


def _quiet_resource_tracker() -> None:
    """Relaunch multiprocessing's resource tracker, if it died, with its stderr on ``/dev/null``.

    Killing a build's processes (``pkill -P``) can take the tracker too; the pool's clean-up then
    starts a new one that prints a ``KeyError`` traceback for every semaphore the old one knew.
    The clean-up unlinks those semaphores itself, so the tracebacks only hide the real message.
    """
    from multiprocessing import resource_tracker

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "resource_tracker: process died unexpectedly, relaunching"
            resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _after_broken_pool(
    pending: deque[tuple[list[Item], Future[list[IndexRecord]]]], returned: bool, workers: int, e: Exception
) -> Iterator[list[IndexRecord]]:
    """Yield the results that came back before a worker died, then raise :class:`WorkerDiedError`."""
    lost: list[Item] = []
    for b, fut in pending:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            returned = True
            yield fut.result()
        else:
            lost.extend(b)
    if not returned:
        raise ForcompError(
            f"the {workers} build worker processes could not start or died before finishing a batch "
            f"({e}). Calling build_cache(..., workers>1) from a script? Put the call under "
            '`if __name__ == "__main__":` (worker processes re-import the script), or use workers=1. '
            "Otherwise a worker was killed (out of memory?): rerun the same command to resume."
        ) from e
    raise WorkerDiedError(
        "a build worker process died (killed by a signal, or out of memory) with "
        f"{len(lost)} item(s) in flight",
        lost,
    )


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
    :func:`forcomp.offline.backends.resolve_backends`, not ``auto``). When the index cannot be
    written or a worker process dies, the build stops early: ``summary.stopped`` says why and
    ``summary.errors`` lists the items concerned; the next build redoes them.
    """
    names: dict[str, Any] = {"segmenter": config.segmenter, "inpainter": config.inpainter}
    if not todo:
        return names
    bar = progress_bar(len(todo), progress, f"build {layout.split}")
    try:
        with IndexWriter(layout, config.shard_tag) as index:
            results = _results(todo, config, layout, names)
            try:
                for records in results:
                    if not record_batch(index, records, summary, bar):
                        break
            except WorkerDiedError as e:
                for it in e.items:
                    summary.add_error(
                        str(os.path.abspath(it.path)), "a build worker process died while processing it"
                    )
                summary.stopped = str(e)
            finally:
                results.close()
    finally:
        bar.close()
    return names
