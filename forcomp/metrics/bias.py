"""The bias metrics of ``METRICS.md``: background robustness, BG-gap, foreground focus, center and size bias.

One pass per controlled condition (:mod:`forcomp.metrics.grids`) streams the val items through the
model batch by batch; only per-image correctness (one bool per image and condition) and per-image
focus values are kept, so memory does not grow with image size and only linearly (and tiny) with
the number of items. The formulas and their paired bootstrap intervals live in
:mod:`forcomp.metrics.scores`, the report dict is built by :mod:`forcomp.metrics.summary`.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from forcomp.errors import CacheFormatError, ForcompError
from forcomp.metrics.attribution import METHODS, Attributor, focus_scores
from forcomp.metrics.classnames import class_name, imagenet1k_below, imagenet1k_index, is_wnid
from forcomp.metrics.grids import Condition, EvaluationGrid
from forcomp.metrics.models import (
    LoadedModel,
    imagenet_class_indices,
    load_model,
    resolve_normalize,
    wrap_module,
)
from forcomp.metrics.summary import build_report

log = logging.getLogger(__name__)

DEFAULT_METHODS: tuple[str, ...] = ("input_x_gradient", "gradcam")

Batch = tuple[Tensor, Tensor, Tensor]


@dataclass
class AttributionExamples:
    """A few images of the focus condition with their masks and attribution maps (CPU tensors).

    Shape:
        images: ``(N, 3, H, W)`` in [0, 1]; masks: ``(N, H, W)``; maps[method]: ``(N, H, W)``.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor
    maps: dict[str, Tensor]
    focus: dict[str, Tensor]
    classes: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """The report dict plus the attribution examples used by the plots."""

    report: dict[str, Any]
    examples: AttributionExamples | None = None


# ---------------------------------------------------------------- data


def _validate(
    batch_size: int, limit: int | None, methods: Sequence[str], size: int | tuple[int, int] | None
) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {tuple(methods)!r}")
    if size is None:
        return
    sizes = (size, size) if isinstance(size, int) else tuple(size)
    if len(sizes) != 2 or not all(isinstance(s, int) and s >= 8 for s in sizes):
        raise ValueError(f"size must be an int >= 8 or (h, w), got {size!r}")


def _make_dataset(
    cache: Path,
    split: str,
    size: int | tuple[int, int],
    cond: Condition,
    seed: int,
    recombine: dict[str, Any] | None = None,
) -> Any:
    from forcomp.recombine.dataset import ForComp

    # Conditions are measured on the whole background, on every split: the training recipe's
    # RandomResizedCrop + flip (ForComp's default on the train split) would move and cut the object.
    return ForComp(
        cache,
        split=split,
        size=size,
        seed=seed,
        return_masks=True,
        crop_scale=None,
        hflip_prob=0.0,
        **(recombine or {}),
        **cond.recombine_kwargs(),
    )


_CONDITION_KEYS = frozenset(
    {
        "background",
        "nonant",
        "size_factor",
        "split",
        "size",
        "seed",
        "return_masks",
        "crop_scale",
        "hflip_prob",
    }
)


def _subset(n: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded, sorted random subset of ``limit`` items (``None`` = all)."""
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def _batches(
    ds: Any, indices: list[int] | None, batch_size: int, num_workers: int, device: torch.device
) -> Iterator[Batch]:
    # Always in item order (no shuffling, also for the train split) so conditions stay paired by image.
    loader = ds.loader(batch_size, num_workers=num_workers, device=device, shuffle=False, sampler=indices)
    for images, labels, masks in loader:
        yield images.to(device), labels.to(device), masks.to(device)


def cache_identity(cache: Path, split: str, ds: Any) -> dict[str, Any]:
    """Path, split, classes and a fingerprint of a cache's split (hash of its ratios file)."""
    import hashlib

    from forcomp.cache.layout import CacheLayout

    layout = CacheLayout(cache, split)
    digest = None
    if layout.ratios_path.is_file():
        digest = hashlib.sha256(layout.ratios_path.read_bytes()).hexdigest()[:16]
    return {
        "path": str(Path(cache).resolve()),
        "split": split,
        "n_items": len(ds),
        "n_classes": len(ds.classes),
        "classes": list(ds.classes) if len(ds.classes) <= 50 else None,
        "ratios_sha256_16": digest,
    }


# ---------------------------------------------------------------- main entry


def _model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (buffers if it has none), else float32."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


ClassIndices = Sequence[int] | Mapping[str, int]

_CLASS_INDICES_HOW = (
    "class_indices=[...] in Python, or on the command line --class-indices I0,I1,... "
    "or --class-indices FILE.json"
)


def _is_index(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _class_indices(n_outputs: int, classes: list[str], given: ClassIndices | None) -> list[int] | None:
    """Model output index per cache class (sorted class order), or ``None`` for the identity mapping."""
    if given is not None:
        if isinstance(given, Mapping):
            missing = [c for c in classes if c not in given]
            if missing:
                raise ValueError(
                    f"class_indices maps class names to outputs but lacks {len(missing)} of the cache's "
                    f"{len(classes)} classes: {missing[:10]}{' …' if len(missing) > 10 else ''}"
                )
            given = [given[c] for c in classes]
        values = list(given)
        if len(values) != len(classes):
            raise ValueError(
                f"class_indices must give one model output index per cache class in sorted class order "
                f"({len(classes)} classes), got {len(values)} ({_CLASS_INDICES_HOW})"
            )
        bad = [v for v in values if not _is_index(v) or not 0 <= v < n_outputs]
        if bad:
            raise ValueError(
                f"class_indices must be integers in [0, {n_outputs}) (the model has {n_outputs} outputs), "
                f"got {bad[:10]}"
            )
        if len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise ValueError(f"class_indices maps several cache classes to the same output(s) {dup}")
        return [int(v) for v in values]
    if n_outputs == len(classes):
        return None
    mapped = imagenet_class_indices(classes) if n_outputs == 1000 else None
    if mapped is not None:
        log.info("mapping %d cache classes onto the ImageNet-1k outputs by WordNet id", len(classes))
        return mapped
    if n_outputs == 1000 and classes and all(is_wnid(c) for c in classes):
        raise ForcompError(_not_imagenet_message(classes))
    raise ForcompError(
        f"the model has {n_outputs} outputs but the cache has {len(classes)} classes; give the model "
        f"output index of each cache class (in sorted class order): {_CLASS_INDICES_HOW}; or evaluate "
        "a model trained on these classes"
    )


def _not_imagenet_message(classes: list[str]) -> str:
    """Why wnid classes do not map onto a 1000-way model: which are not ImageNet-1k classes, and the
    ``--class-indices`` line with the others filled in (``?`` for the user to choose)."""
    order = imagenet1k_index()
    missing = [c for c in classes if c not in order]
    described = []
    for c in missing[:10]:
        name = class_name(c)
        below = imagenet1k_below(c)
        text = f"{c} ({name})" if name else f"{c} (not in the packaged WordNet table)"
        if below:
            shown = ", ".join(f"{w} {class_name(w)} = {order[w]}" for w in below[:3])
            text += f" — ImageNet-1k classes under it: {shown}{' …' if len(below) > 3 else ''}"
        described.append(text)
    more = f"; and {len(missing) - 10} more" if len(missing) > 10 else ""
    line = ",".join(str(order[c]) if c in order else "?" for c in classes)
    return (
        f"the model has 1000 outputs (ImageNet-1k) and the cache's classes are WordNet ids, but "
        f"{len(missing)} of its {len(classes)} classes are not ImageNet-1k classes: "
        f"{'; '.join(described)}{more}. The other {len(classes) - len(missing)} map by WordNet id; "
        f"replace each ? by the output to count as correct for that class (sorted class order):\n"
        f"  --class-indices {line}\n"
        "(class_indices=[...] in Python, or a JSON file {class_name: index}); or evaluate a cache "
        "without those classes"
    )


def prediction_rule(n_outputs: int, out_index: list[int] | None) -> str:
    """How predictions are made, in words, for the report."""
    if out_index is None:
        return f"argmax over all {n_outputs} model outputs (one per cache class)"
    if len(out_index) == n_outputs:
        return f"argmax over all {n_outputs} model outputs, mapped to the cache's classes by class_indices"
    return (
        f"argmax over the {len(out_index)} outputs mapped to the cache's classes "
        f"(the model has {n_outputs} outputs; the other {n_outputs - len(out_index)} are ignored)"
    )


def run_evaluation(
    model: nn.Module | LoadedModel | str,
    cache: str | os.PathLike[str],
    *,
    split: str = "val",
    size: int | tuple[int, int] | None = None,
    normalize: str | tuple[Sequence[float], Sequence[float]] | None = "auto",
    device: str | torch.device | None = None,
    batch_size: int = 64,
    seed: int = 0,
    limit: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    num_workers: int = 0,
    progress: bool = False,
    bootstrap: int = 1000,
    ig_steps: int = 16,
    gradcam_layer: str | None = None,
    class_indices: ClassIndices | None = None,
    n_examples: int = 6,
    weights_dir: str | os.PathLike[str] | None = None,
    checkpoint_key: str | None = None,
    recombine: dict[str, Any] | None = None,
) -> Evaluation:
    """Like :func:`evaluate`, also returning attribution examples for the plots."""
    _validate(batch_size, limit, methods, size)
    clash = sorted(set(recombine or {}) & _CONDITION_KEYS)
    if clash:
        raise ValueError(
            f"recombine may not set {clash}: the evaluation controls them; allowed are the other "
            "ForComp settings (e.g. mask_smoothing_sigma, fg_scale_jitter, fg_size_mode)"
        )
    if bootstrap < 1:
        raise ValueError(f"bootstrap must be >= 1 resamples, got {bootstrap}")
    if isinstance(model, str):
        loaded = load_model(model, weights_dir=weights_dir, checkpoint_key=checkpoint_key)
    elif isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, nn.Module):
        loaded = wrap_module(model)
    else:
        raise TypeError(
            f"model must be an nn.Module, a LoadedModel or a spec string, got {type(model).__name__}"
        )
    norm = resolve_normalize(normalize, loaded)
    if size is None:
        size = loaded.default_size()
    loaded.check_size(size)
    net = loaded.model
    dev = torch.device(device) if device is not None else _model_device(net)
    net.to(dev)
    was_training = net.training
    net.eval()
    cache = Path(cache)
    if not cache.is_dir():
        raise CacheFormatError(
            f"cache {cache} does not exist (build one with `forcomp build SOURCE {cache}`)"
        )

    grid = EvaluationGrid.default()
    t0 = time.perf_counter()
    first = _make_dataset(cache, split, size, grid.background[0], seed, recombine)
    n_total = len(first)
    if n_total == 0:
        raise CacheFormatError(
            f"cache {cache} has no {split} items (expected {cache}/{split}/foregrounds/<class>/*.WEBP); "
            f"build the split with `forcomp build SOURCE {cache} --split {split}`"
        )
    classes = list(first.classes)
    indices = _subset(n_total, limit, seed)
    n_images = n_total if indices is None else len(indices)

    # Normalise in float32, then feed the model its own dtype (a half/bfloat16 model refuses float32
    # inputs); scores stay float64 (summary.py) whatever the model computes in.
    in_dtype = _model_dtype(net)
    if norm is not None:
        mean = torch.tensor(norm[0], device=dev).view(1, -1, 1, 1)
        std = torch.tensor(norm[1], device=dev).view(1, -1, 1, 1)

        def prep(x: Tensor) -> Tensor:
            return ((x.float() - mean) / std).to(in_dtype)
    else:

        def prep(x: Tensor) -> Tensor:
            return x.float().to(in_dtype)

    out_index: list[int] | None = None
    mapped: Tensor | None = None
    n_outputs = 0
    attributor = Attributor(net, tuple(methods), ig_steps=ig_steps, gradcam_layer=gradcam_layer)

    correct: dict[str, Tensor] = {}
    label_counts = torch.zeros(len(classes), dtype=torch.long)
    focus: dict[str, list[Tensor]] = {m: [] for m in methods}
    picker = _ExamplePicker(n_examples)
    n_batches = math.ceil(n_images / batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches * len(grid), desc="forcomp evaluate", unit="batch")

    for cond in grid:
        ds = first if cond == grid.background[0] else _make_dataset(cache, split, size, cond, seed, recombine)
        hits: list[Tensor] = []
        for images, labels, masks in _batches(ds, indices, batch_size, num_workers, dev):
            x = prep(images)
            with torch.no_grad():
                logits = net(x)
            if out_index is None and mapped is None:
                n_outputs = int(logits.shape[1])
                out_index = _class_indices(n_outputs, classes, class_indices)
                mapped = torch.tensor(
                    out_index if out_index is not None else [], dtype=torch.long, device=dev
                )
            if out_index is not None:
                if mapped is None:  # set together with out_index above
                    raise RuntimeError("internal error: class index tensor missing")
                pred = mapped[logits[:, mapped].argmax(1)]
                target = mapped[labels]
            else:
                pred, target = logits.argmax(1), labels
            hits.append((pred == target).cpu())
            if cond == grid.background[0]:  # every condition holds the same images
                label_counts += torch.bincount(labels.cpu(), minlength=len(classes))
            if cond == grid.focus:
                maps = attributor(x, target)
                m = masks.float()
                if m.dim() == 4:
                    m = m[:, 0]
                for method, a in maps.items():
                    focus[method].append(focus_scores(a.detach(), m, dtype=torch.float64).cpu())
                if maps:
                    picker.offer(images, labels, m, maps)
            if bar is not None:
                bar.update(1)
        correct[cond.name] = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
        log.info(
            "%s: accuracy %.4f over %d images",
            cond.name,
            correct[cond.name].double().mean(),
            len(correct[cond.name]),
        )
    if bar is not None:
        bar.close()
    net.train(was_training)

    report = build_report(
        correct=correct,
        focus={m: torch.cat(v) if v else torch.zeros(0) for m, v in focus.items()},
        methods=tuple(methods),
        unavailable=attributor.unavailable,
        grid=grid,
        seed=seed,
        bootstrap=bootstrap,
        n_classes=len(classes),
        label_counts=label_counts.tolist(),
    )
    report.update(
        {
            "n_images": n_images,
            "n_classes": len(classes),
            "seed": seed,
            "split": split,
            "size": list(size) if isinstance(size, tuple) else size,
            "normalize": None if norm is None else {"mean": list(norm[0]), "std": list(norm[1])},
            "methods": list(methods),
            "gradcam_layer": attributor.cam_target.name if attributor.cam_target is not None else None,
            "class_indices": out_index,
            "n_model_outputs": n_outputs,
            "prediction": prediction_rule(n_outputs, out_index),
            "limit": limit,
            "recombine": dict(recombine or {}),
            "model": loaded.identity(),
            "cache": cache_identity(cache, split, first),
            "forcomp_version": _version(),
            "runtime": {
                "seconds": round(time.perf_counter() - t0, 3),
                "device": str(dev),
                "batch_size": batch_size,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
    )
    return Evaluation(report, picker.examples(classes))


class _ExamplePicker:
    """Keeps the attribution examples spread over the classes: round-robin by class, deterministic.

    Each focus-condition image gets the key ``(r, label)`` where ``r`` counts earlier images of its
    class (in item order); the ``n`` smallest keys are kept, i.e. the first image of every class in
    class order, then the second of every class, and so on. At most ``n`` images are held at a time.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: dict[int, int] = {}
        self.kept: list[tuple[tuple[int, int], Tensor, Tensor, Tensor, dict[str, Tensor]]] = []

    def offer(self, images: Tensor, labels: Tensor, masks: Tensor, maps: dict[str, Tensor]) -> None:
        if self.n < 1:
            return
        worst = max(k for k, *_ in self.kept) if len(self.kept) >= self.n else None
        for i, label in enumerate(labels.tolist()):
            key = (self.seen.get(label, 0), int(label))
            self.seen[label] = key[0] + 1
            if worst is not None and key >= worst:
                continue
            item_maps = {m: a[i].detach().cpu() for m, a in maps.items()}
            self.kept.append((key, images[i].float().cpu(), labels[i].cpu(), masks[i].cpu(), item_maps))
        self.kept.sort(key=operator.itemgetter(0))
        del self.kept[self.n :]

    def examples(self, classes: list[str]) -> AttributionExamples | None:
        if not self.kept:
            return None
        methods = list(self.kept[0][4])
        masks = torch.stack([k[3] for k in self.kept])
        maps = {m: torch.stack([k[4][m] for k in self.kept]) for m in methods}
        return AttributionExamples(
            images=torch.stack([k[1] for k in self.kept]),
            labels=torch.stack([k[2] for k in self.kept]),
            masks=masks,
            maps=maps,
            focus={m: focus_scores(a, masks) for m, a in maps.items()},
            classes=classes,
        )


def evaluate(
    model: nn.Module | LoadedModel | str,
    cache: str | os.PathLike[str],
    split: str = "val",
    size: int | tuple[int, int] | None = None,
    normalize: str | tuple[Sequence[float], Sequence[float]] | None = "auto",
    device: str | torch.device | None = None,
    batch_size: int = 64,
    seed: int = 0,
    limit: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    num_workers: int = 0,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Measure a classifier's background, foreground, center and size biases on a cache's val split.

    Runs every controlled condition of :class:`~forcomp.metrics.grids.EvaluationGrid` (3 background
    modes, 9 nonants, 8 sizes) on the same items with the same seed, plus attribution maps on the
    ``all``-backgrounds condition, and returns the report of ``METRICS.md``.

    Args:
        model: An ``nn.Module`` returning logits, a :class:`LoadedModel`, or a SPEC string
            (see :func:`forcomp.metrics.models.load_model`).
        cache: Cache root (forcomp cache or ForNet release).
        split: Which split to evaluate on.
        size: Canvas size fed to the model; ``None`` (default) = the size the model states (timm
            ``patch_embed.img_size``, torchvision ViT ``image_size``, else its config's input size),
            else 224. A model that accepts only one size (a fixed-size ViT) must get that size.
        normalize: ``"auto"`` (default, as the CLI: the model's own mean/std when it declares one,
            e.g. timm ``pretrained_cfg``, else ImageNet's), ``"imagenet"``, ``None`` (feed [0, 1]
            unchanged) or ``(mean, std)``. Input×gradient attributions are taken on the normalised
            input, so this also sets their implicit baseline.
        device: Where recombination and the model run; ``None`` = the model's device.
        batch_size: Images per batch (≥ 1).
        seed: Recombination seed; the same seed gives the same report.
        limit: Evaluate a seeded random subset of this many items (``None`` = all).
        methods: Attribution methods for foreground focus; the first is the headline.
        num_workers: DataLoader workers reading and decoding files.
        progress: Show a tqdm progress bar.
        **options: ``bootstrap`` (resamples, 1000), ``ig_steps`` (16), ``gradcam_layer`` (module
            name), ``class_indices`` (model output index per cache class in sorted order, or
            ``{class_name: index}``), ``weights_dir``, ``checkpoint_key`` (the entry of a training
            checkpoint to load, e.g. ``"model_ema"``), ``recombine``
            (other :class:`~forcomp.ForComp` settings for every condition, e.g.
            ``{"mask_smoothing_sigma": 1.0}`` for small canvases; ForNet's defaults otherwise).

    Returns:
        The report dict (JSON-ready except that undefined scores are NaN floats; the report writer
        stores them as ``null``). Score keys: ``accuracy``, ``background_robustness``, ``bg_gap``,
        ``foreground_focus``, ``center_bias``, ``size_bias`` (each a dict with ``score`` and
        ``ci95`` except ``accuracy``, a float with ``accuracy_ci95`` beside it). ``prediction``
        says how predictions are made: with more model outputs than cache classes (e.g. a 1000-way
        ImageNet model on a class subset) it is the argmax over the outputs mapped to the cache's
        classes only.

    Raises:
        ValueError: Invalid ``batch_size``, ``limit``, ``normalize``, ``methods``, ``size`` or
            ``class_indices``.
        ForcompError: Bad model spec, missing weights, missing or empty cache, a size the model does
            not accept (:class:`~forcomp.metrics.models.InputSizeError`), a model/cache class
            mismatch without ``class_indices``.

    Example:
        >>> report = forcomp.evaluate(model, "cache/", limit=500)  # doctest: +SKIP
        >>> report["center_bias"]["grid"]  # doctest: +SKIP
    """
    return run_evaluation(
        model,
        cache,
        split=split,
        size=size,
        normalize=normalize,
        device=device,
        batch_size=batch_size,
        seed=seed,
        limit=limit,
        methods=methods,
        num_workers=num_workers,
        progress=progress,
        **options,
    ).report


def _version() -> str:
    from forcomp import __version__

    return __version__
