"""The Ray engine: the same ``process_batch`` in a pool of Ray actors, fed by Ray Data.

Contract (identical to :func:`forcomp.offline.engines.run_local`): the weights are checked before any
work; each actor builds the backends once and runs :func:`~forcomp.offline.pipeline.process_batch`,
which writes the item files atomically; the index records come back to the driver, which appends
them to its own index file as they arrive. So resume, per-file failures, the summary and shards
behave exactly as with the local engine, and a Ray build and local/sharded builds merge into one
cache.

On a multi-node cluster every worker node must see the same paths as the driver: the source
images, the cache root (actors write the item files there directly) and the weights directory
(a shared filesystem), and must be able to import ``forcomp`` (installed in the nodes' Python
environment, or shipped with a ``runtime_env``; see the README section "Scale-out").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forcomp.cache.index import IndexRecord, IndexWriter
from forcomp.cache.layout import CacheLayout
from forcomp.errors import ForcompError
from forcomp.offline.config import BuildConfig
from forcomp.offline.engines import progress_bar, record_batch
from forcomp.offline.pipeline import Backends, BuildSummary, process_batch
from forcomp.offline.sources import Item

log = logging.getLogger(__name__)

_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_EXTRA_HINT = "the Ray engine needs Ray Data: pip install 'forcomp[ray]' (or pip install 'ray[data]>=2.9')"


def _item_row(item: Item) -> dict[str, Any]:
    # Plain, Arrow-friendly columns; "" stands for "no problem" so the column is never all-null.
    return {
        "path": str(item.path),
        "cls": item.cls,
        "stem": item.stem,
        "label": int(item.label),
        "problem": item.problem or "",
    }


class _BatchWorker:
    """Ray Data UDF run in an actor: builds the backends once, then processes one batch per call."""

    def __init__(self, config: BuildConfig, layout: CacheLayout, cwd: str) -> None:
        import cv2

        # One actor per reserved CPU (or GPU): OpenCV's own thread pool would oversubscribe the node
        # (the local engine's worker processes do the same).
        cv2.setNumThreads(1)
        # Work in the driver's directory, so relative source paths (and the messages that quote them)
        # mean exactly what they mean in the driver. An actor owns its process, so this is local to it.
        self.cwd = cwd
        self.cwd_ok = os.path.isdir(cwd)
        if self.cwd_ok:
            os.chdir(cwd)
        self.config = config
        self.layout = layout
        self.backends = Backends.from_config(config)

    def _problem(self, path: str, problem: str) -> str | None:
        if problem:
            return problem
        if not self.cwd_ok and not os.path.isabs(path):
            return (
                f"{path} is relative to the driver's directory {self.cwd}, which Ray node "
                f"{socket.gethostname()} does not have: pass SOURCE as an absolute path on a filesystem "
                "every node mounts"
            )
        return None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            Item(
                path=Path(str(p)),
                cls=str(c),
                stem=str(s),
                label=int(lab),
                problem=self._problem(str(p), str(pr)),
            )
            for p, c, s, lab, pr in zip(
                batch["path"], batch["cls"], batch["stem"], batch["label"], batch["problem"], strict=True
            )
        ]
        try:
            records = process_batch(items, self.backends, self.config, self.layout)
        except Exception as e:  # process_batch handles per-item failures; this is a bug or a dying node
            log.exception("batch failed in a Ray worker")
            records = [
                IndexRecord(
                    key=it.key,
                    cls=it.cls,
                    stem=it.stem,
                    label=it.label,
                    source=os.path.abspath(it.path),
                    status="error",
                    message=f"Ray worker failed on this batch: {type(e).__name__}: {e}",
                )
                for it in items
            ]
        return {"record": np.array([r.to_json() for r in records], dtype=object)}


# A Ray task is one block; its records reach the driver (and the index) when the task ends, so a
# block is the work an interruption can lose: 256 images is ~1.5 min per GPU at an assumed 3 img/s
# for SAM+LaMa. Measured here (2 slow cores), ImageNet-train's 1.28 M items take 12 s to set up as
# 5k blocks of 256, but 95 s as 40k blocks of 32.
MAX_ROWS_PER_BLOCK = 256


def _rows_per_block(n: int, config: BuildConfig) -> int:
    """Whole batches per block: at least 4 blocks per actor when there is enough work, at most 256 rows."""
    bs = config.batch_size
    want = -(-n // (4 * config.ray_concurrency))  # ceil
    rows = min(max(want, bs), max(MAX_ROWS_PER_BLOCK, bs))
    return -(-rows // bs) * bs  # round up to whole batches


def _actor_config(config: BuildConfig, num_gpus: float) -> BuildConfig:
    """The config the actors run: weights as an absolute path, and the device an actor actually has."""
    device = config.device
    if num_gpus > 0 and device is not None and device.startswith("cuda:"):
        # Ray sets CUDA_VISIBLE_DEVICES per actor: its GPU is always cuda:0 inside the actor.
        log.info("device %s: each Ray actor uses the GPU Ray assigns to it (cuda:0 inside the actor)", device)
        device = "cuda"
    return dataclasses.replace(config, weights_dir=str(config.weights_path().resolve()), device=device)


def _num_gpus(config: BuildConfig) -> float:
    gpus = config.ray_num_gpus_per_worker
    if gpus == 0 and config.device is not None and config.device.startswith("cuda"):
        log.info("device %s with --num-gpus-per-worker 0: reserving 1 GPU per Ray actor", config.device)
        return 1.0
    return gpus


def _connect(ray: Any, config: BuildConfig) -> str | None:
    """Connect to a cluster (``"cluster"``) or start a local Ray (``"local"``); None when Ray was
    already initialised by the caller, whose Ray is then used and left running."""
    if ray.is_initialized():
        if config.ray_address:
            log.info(
                "Ray is already initialised in this process; using it and ignoring address %s",
                config.ray_address,
            )
        return None
    address = config.ray_address or os.environ.get("RAY_ADDRESS")
    # Worker output stays in Ray's log files: per-file failures come back as index records instead.
    common: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address:
            log.info("connecting to the Ray cluster at %s", address)
            ray.init(address=address, **common)
        else:
            num_cpus = min(os.cpu_count() or 1, config.ray_concurrency + 1)
            log.info("starting a local Ray with %d CPUs (pass --address to use a cluster)", num_cpus)
            ray.init(num_cpus=num_cpus, include_dashboard=False, **common)
    except Exception as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise ForcompError(
            f"cannot start or reach {where}: {type(e).__name__}: {e}. Check the address (ray status on the "
            "head node prints it), or run with --engine local."
        ) from e
    return "cluster" if address else "local"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _quiet_ray_data(ctx: Any, *, verbose: bool) -> Iterator[None]:
    """Ray Data without its own progress bars (ours counts images, its would count blocks).

    The driver's DataContext is global, so the user's settings are restored afterwards.
    """
    wanted = {"enable_progress_bars": False, "print_on_execution_start": verbose}
    saved = {k: getattr(ctx, k) for k in wanted if hasattr(ctx, k)}
    # Ray Data warns once that its bars are off; that is our choice, not the user's problem.
    progress_log = logging.getLogger("ray.data._internal.progress")
    drop = _DropMessage("Progress bars disabled")
    progress_log.addFilter(drop)
    try:
        for k in saved:
            setattr(ctx, k, wanted[k])
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        progress_log.removeFilter(drop)


def _record_batches(ds: Any, ray: Any) -> Iterator[list[IndexRecord]]:
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield [IndexRecord.from_dict(json.loads(s)) for s in out["record"]]
    except ray.exceptions.RayError as e:
        # e.g. an actor could not build the backends (forcomp or a checkpoint missing on a node)
        raise ForcompError(
            f"the Ray workers failed: {e}\nItems finished so far are in the index; fix the cause and rerun "
            "the same command to resume."
        ) from e


def _pool_size(ray: Any, config: BuildConfig, num_gpus: float, num_blocks: int, *, local: bool) -> int:
    """Actors to start: no more than there are blocks (each actor loads the models), and on a
    local Ray no more than its GPUs hold; fail fast rather than wait forever for missing GPUs."""
    size = min(config.ray_concurrency, num_blocks)
    if num_gpus <= 0:
        return size
    have = float(ray.cluster_resources().get("GPU", 0.0))
    if have < num_gpus:
        msg = f"each Ray actor needs {num_gpus:g} GPU(s) but the Ray cluster has {have:g}"
        if local:
            raise ForcompError(f"{msg}: use --device cpu, or --address of a cluster with GPUs.")
        log.warning("%s now; the actors wait until an autoscaler adds GPU nodes", msg)
    elif local and size * num_gpus > have:
        log.info(
            "this machine has %g GPU(s): starting %d actor(s), not %d", have, int(have // num_gpus), size
        )
        size = int(have // num_gpus)
    return size


def run_ray(
    todo: Sequence[Item],
    layout: CacheLayout,
    config: BuildConfig,
    summary: BuildSummary,
    *,
    progress: bool = False,
) -> dict[str, str]:
    """Process ``todo`` on Ray actors and append each record to this process's index file.

    Args:
        todo: the items still to do (``build_cache`` has already applied the shard and resume).
        layout: the split's cache layout; must be on a filesystem every Ray node sees.
        config: the build settings; ``ray_address`` (None: ``$RAY_ADDRESS``, else a local Ray),
            ``ray_concurrency`` (actors), ``ray_num_gpus_per_worker`` (GPUs per actor; 1 when the
            device is CUDA and this is 0) and ``batch_size`` (images per actor call) are used here.
        summary: updated with every record.
        progress: show a progress bar (count, rate, ETA) on stderr.

    Returns:
        ``{"segmenter": name, "inpainter": name}`` of the backends that ran (empty if nothing to do).

    Raises:
        ImportError: Ray Data is not installed (``pip install forcomp[ray]``).
        WeightsNotFoundError: a backend's weights are missing (checked before Ray starts).
        ForcompError: Ray cannot be started or reached.
    """
    if not todo:
        return {}
    if "ray" not in sys.modules and not (config.ray_address or os.environ.get("RAY_ADDRESS")):
        # A Ray that forcomp starts only for this build needs no network: Ray reads this switch at
        # import and then binds its servers to 127.0.0.1 instead of every interface. Set it to 1 to
        # keep Ray's default; a process that later connects to a cluster should be a fresh one.
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e
    names: dict[str, str] = {"segmenter": config.segmenter, "inpainter": config.inpainter}
    num_gpus = _num_gpus(config)
    actor_config = _actor_config(config, num_gpus)
    actor_layout = CacheLayout(Path(layout.root).resolve(), layout.split)
    started = _connect(ray, config)  # None: the caller's Ray, which we leave running
    bar = progress_bar(len(todo), progress, f"build {layout.split} (ray)")
    try:
        with (
            _quiet_ray_data(ray.data.DataContext.get_current(), verbose=progress),
            IndexWriter(layout, config.shard_tag) as index,
        ):
            rows = _rows_per_block(len(todo), config)
            num_blocks = -(-len(todo) // rows)
            items = ray.data.from_items([_item_row(it) for it in todo], override_num_blocks=num_blocks)
            actors = _pool_size(ray, config, num_gpus, num_blocks, local=started == "local")
            remote: dict[str, Any] = {"num_gpus": num_gpus} if num_gpus > 0 else {"num_cpus": 1}
            ds = items.map_batches(
                _BatchWorker,
                fn_constructor_kwargs={"config": actor_config, "layout": actor_layout, "cwd": os.getcwd()},
                compute=ray.data.ActorPoolStrategy(size=actors),
                batch_size=config.batch_size,
                batch_format="numpy",
                **remote,
            )
            for records in _record_batches(ds, ray):
                for rec in records:
                    if rec.segmenter:
                        names["segmenter"] = rec.segmenter
                    if rec.inpainter:
                        names["inpainter"] = rec.inpainter
                if not record_batch(index, records, summary, bar):
                    break
    finally:
        bar.close()
        if started is not None:
            ray.shutdown()
    return names
