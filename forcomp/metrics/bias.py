"""The bias metrics: background robustness, BG-gap, foreground focus, center and size bias.

An evaluation has three steps: :func:`~forcomp.metrics.prepare.prepare` loads the model and opens the
cache, :func:`run_conditions` streams the val items of every controlled condition
(:mod:`forcomp.metrics.grids`) through the model batch by batch, and
:func:`~forcomp.metrics.summary.build_report` turns the results into the report. Only per-image
correctness (one bool per image and condition) and per-image focus values are kept, so memory does
not grow with image size and only linearly (and tiny) with the number of items. The formulas and
their paired bootstrap intervals live in :mod:`forcomp.metrics.scores`.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from forcomp.metrics.attribution import Attributor, focus_scores
from forcomp.metrics.class_map import map_class_indices, prediction_rule
from forcomp.metrics.options import DEFAULT_METHODS, EvaluateOptions
from forcomp.metrics.prepare import Prepared, prepare
from forcomp.metrics.summary import build_report, cache_identity, describe_run
from forcomp.models.classifiers import LoadedModel

__all__ = [
    "DEFAULT_METHODS",
    "AttributionExamples",
    "EvaluateOptions",
    "Evaluation",
    "ExamplePicker",
    "evaluate",
    "run_conditions",
    "run_evaluation",
]

log = logging.getLogger(__name__)

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


class ExamplePicker:
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


@dataclass
class ConditionResults:
    """What :func:`run_conditions` measured: per-image hits and focus values, paired over the images."""

    correct: dict[str, Tensor]
    focus: dict[str, Tensor]
    label_counts: list[int]
    class_indices: list[int] | None
    n_outputs: int
    attributor: Attributor
    picker: ExamplePicker


def _batches(ds: Any, run: Prepared, options: EvaluateOptions) -> Iterator[Batch]:
    # Always in item order (no shuffling, also for the train split) so conditions stay paired by image.
    dev = run.device
    loader = ds.loader(
        options.batch_size, num_workers=options.num_workers, device=dev, shuffle=False, sampler=run.indices
    )
    for images, labels, masks in loader:
        yield images.to(dev), labels.to(dev), masks.to(dev)


def run_conditions(run: Prepared, options: EvaluateOptions) -> ConditionResults:
    """Every condition of ``run.grid`` through the model: hits per image, focus on the focus condition.

    The output mapping (:func:`~forcomp.metrics.class_map.map_class_indices`) is fixed at the first
    batch, once the number of model outputs is known.
    """
    net, grid, classes, dev = run.net, run.grid, run.classes, run.device
    methods = tuple(options.methods)
    out_index: list[int] | None = None
    mapped: Tensor | None = None
    n_outputs = 0
    attributor = Attributor(net, methods, ig_steps=options.ig_steps, gradcam_layer=options.gradcam_layer)
    correct: dict[str, Tensor] = {}
    label_counts = torch.zeros(len(classes), dtype=torch.long)
    focus: dict[str, list[Tensor]] = {m: [] for m in methods}
    picker = ExamplePicker(options.n_examples)
    bar = None
    if options.progress:
        from tqdm.auto import tqdm

        n_batches = math.ceil(run.n_images / options.batch_size)
        bar = tqdm(total=n_batches * len(grid), desc="forcomp evaluate", unit="batch")

    for cond in grid:
        hits: list[Tensor] = []
        for images, labels, masks in _batches(run.dataset(cond, options), run, options):
            x = run.preprocess(images)
            with torch.no_grad():
                logits = net(x)
            if out_index is None and mapped is None:
                n_outputs = int(logits.shape[1])
                out_index = map_class_indices(n_outputs, classes, options.class_indices)
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
    return ConditionResults(
        correct=correct,
        focus={m: torch.cat(v) if v else torch.zeros(0) for m, v in focus.items()},
        label_counts=label_counts.tolist(),
        class_indices=out_index,
        n_outputs=n_outputs,
        attributor=attributor,
        picker=picker,
    )


def run_evaluation(
    model: nn.Module | LoadedModel | str,
    cache: str | os.PathLike[str],
    options: EvaluateOptions | None = None,
    **overrides: Any,
) -> Evaluation:
    """Like :func:`evaluate`, also returning attribution examples for the plots."""
    opts = EvaluateOptions.merged(options, overrides)
    t0 = time.perf_counter()
    run = prepare(model, cache, opts)
    try:
        res = run_conditions(run, opts)
    finally:
        run.net.train(run.was_training)
    report = build_report(
        correct=res.correct,
        focus=res.focus,
        methods=tuple(opts.methods),
        unavailable=res.attributor.unavailable,
        grid=run.grid,
        seed=opts.seed,
        bootstrap=opts.bootstrap,
        n_classes=len(run.classes),
        label_counts=res.label_counts,
    )
    cam = res.attributor.cam_target
    report.update(
        describe_run(
            opts,
            n_images=run.n_images,
            n_classes=len(run.classes),
            size=run.size,
            norm=run.norm,
            gradcam_layer=cam.name if cam is not None else None,
            class_indices=res.class_indices,
            n_outputs=res.n_outputs,
            prediction=prediction_rule(res.n_outputs, res.class_indices),
            model=run.loaded.identity(),
            cache=cache_identity(run.cache, opts.split, run.first),
            seconds=time.perf_counter() - t0,
            device=str(run.device),
        )
    )
    return Evaluation(report, res.picker.examples(run.classes))


def evaluate(
    model: nn.Module | LoadedModel | str,
    cache: str | os.PathLike[str],
    options: EvaluateOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Measure a classifier's background, foreground, center and size biases on a cache's val split.

    Runs every controlled condition of :class:`~forcomp.metrics.grids.EvaluationGrid` (3 background
    modes, 9 nonants, 8 sizes) on the same items with the same seed, plus attribution maps on the
    ``all``-backgrounds condition, and returns the bias report.

    Args:
        model: An ``nn.Module`` returning logits, a :class:`LoadedModel`, or a SPEC string
            (see :func:`forcomp.models.classifiers.load_model`).
        cache: Cache root (forcomp cache or ForNet release).
        options: The settings (:class:`~forcomp.metrics.options.EvaluateOptions`: ``split``,
            ``size``, ``normalize``, ``device``, ``batch_size``, ``seed``, ``limit``, ``methods``,
            ``num_workers``, ``progress``, ``bootstrap``, ``ig_steps``, ``gradcam_layer``,
            ``class_indices``, ``n_examples``, ``weights_dir``, ``checkpoint_key``, ``recombine``);
            default: all defaults. The report's ``options`` holds the settings used.
        **overrides: Any of those settings by keyword, replacing the value in ``options``.

    Returns:
        The report dict (JSON-ready except that undefined scores are NaN floats; the report writer
        stores them as ``null``). Score keys: ``accuracy``, ``background_robustness``, ``bg_gap``,
        ``foreground_focus``, ``center_bias``, ``size_bias`` (each a dict with ``score`` and
        ``ci95`` except ``accuracy``, a float with ``accuracy_ci95`` beside it). ``prediction``
        says how predictions are made: with more model outputs than cache classes (e.g. a 1000-way
        ImageNet model on a class subset) it is the argmax over the outputs mapped to the cache's
        classes only.

    Raises:
        TypeError: A keyword that is no setting, or a model of none of the accepted kinds.
        ValueError: Invalid ``batch_size``, ``limit``, ``normalize``, ``methods``, ``size``,
            ``bootstrap``, ``recombine`` or ``class_indices``.
        ForcompError: Bad model spec, missing weights, missing or empty cache, an unavailable
            device, a size the model does not accept
            (:class:`~forcomp.models.classifiers.InputSizeError`), a model/cache class mismatch
            without ``class_indices``.

    Example:
        >>> report = forcomp.evaluate(model, "cache/", split="val", seed=0, limit=500)  # doctest: +SKIP
        >>> report["center_bias"]["grid"]  # doctest: +SKIP
    """
    return run_evaluation(model, cache, options, **overrides).report
