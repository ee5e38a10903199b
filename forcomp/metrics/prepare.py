"""Everything an evaluation needs before its first batch: the model, its device and input, the items.

:func:`prepare` turns a model argument, a cache path and :class:`~forcomp.metrics.options.EvaluateOptions`
into a :class:`Prepared` run; it fails before any work on a bad model, size, device or cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from forcomp.errors import CacheFormatError
from forcomp.metrics.grids import Condition, EvaluationGrid
from forcomp.metrics.options import EvaluateOptions
from forcomp.models.classifiers import LoadedModel, load_model, resolve_normalize, wrap_module
from forcomp.models.devices import resolve_device

Normalization = tuple[Sequence[float], Sequence[float]]


@dataclass
class Prepared:
    """A model ready to run (eval mode, on ``device``) and the items every condition shows."""

    loaded: LoadedModel
    device: torch.device
    size: int | tuple[int, int]
    norm: Normalization | None
    preprocess: Callable[[Tensor], Tensor]
    cache: Path
    grid: EvaluationGrid
    first: Any  # the dataset of the grid's first condition, opened to count and name the items
    classes: list[str]
    indices: list[int] | None
    n_images: int
    was_training: bool

    @property
    def net(self) -> nn.Module:
        return self.loaded.model

    def dataset(self, cond: Condition, options: EvaluateOptions) -> Any:
        """The dataset of condition ``cond`` (the already opened one for the first condition)."""
        if cond == self.grid.background[0]:
            return self.first
        return make_condition_dataset(
            self.cache, options.split, self.size, cond, options.seed, options.recombine
        )


def load_classifier(model: nn.Module | LoadedModel | str, options: EvaluateOptions) -> LoadedModel:
    """``model`` as a :class:`LoadedModel` (a SPEC string is loaded with the options' weights settings)."""
    if isinstance(model, str):
        return load_model(model, weights_dir=options.weights_dir, checkpoint_key=options.checkpoint_key)
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        return wrap_module(model)
    raise TypeError(f"model must be an nn.Module, a LoadedModel or a spec string, got {type(model).__name__}")


def make_condition_dataset(
    cache: Path,
    split: str,
    size: int | tuple[int, int],
    cond: Condition,
    seed: int,
    recombine: Mapping[str, Any] | None = None,
) -> Any:
    """The ``ForComp`` dataset showing condition ``cond`` (with masks, on the whole background)."""
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


def subset_indices(n: int, limit: int | None, seed: int) -> list[int] | None:
    """A seeded, sorted random subset of ``limit`` of ``n`` items (``None`` = all)."""
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (buffer if it has none), else the CPU."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (buffers if it has none), else float32."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def make_preprocess(
    norm: Normalization | None, device: torch.device, dtype: torch.dtype
) -> Callable[[Tensor], Tensor]:
    """``x in [0, 1]`` → the model's input: normalised in float32, then cast to the model's dtype (a
    half/bfloat16 model refuses float32 inputs; scores stay float64 whatever the model computes in)."""
    if norm is None:

        def plain(x: Tensor) -> Tensor:
            return x.float().to(dtype)

        return plain
    mean = torch.tensor(norm[0], device=device).view(1, -1, 1, 1)
    std = torch.tensor(norm[1], device=device).view(1, -1, 1, 1)

    def normalised(x: Tensor) -> Tensor:
        return ((x.float() - mean) / std).to(dtype)

    return normalised


def prepare(
    model: nn.Module | LoadedModel | str, cache: str | os.PathLike[str], options: EvaluateOptions
) -> Prepared:
    """Load and place the model, check its input size, open the cache's split and pick the items.

    The model is put in eval mode; :attr:`Prepared.was_training` holds the mode to restore.

    Raises:
        TypeError: ``model`` is none of the accepted kinds.
        ForcompError: Bad model spec, missing weights, a size the model does not accept, an
            unavailable device, a missing or empty cache.
    """
    loaded = load_classifier(model, options)
    norm = resolve_normalize(options.normalize, loaded)
    size = options.size if options.size is not None else loaded.default_size()
    loaded.check_size(size)
    net = loaded.model
    dev = resolve_device(options.device) if options.device is not None else model_device(net)
    net.to(dev)
    was_training = net.training
    net.eval()
    root = Path(cache)
    if not root.is_dir():
        raise CacheFormatError(f"cache {root} does not exist (build one with `forcomp build SOURCE {root}`)")
    grid = EvaluationGrid.default()
    first = make_condition_dataset(
        root, options.split, size, grid.background[0], options.seed, options.recombine
    )
    n_total = len(first)
    if n_total == 0:
        split = options.split
        raise CacheFormatError(
            f"cache {root} has no {split} items (expected {root}/{split}/foregrounds/<class>/*.WEBP); "
            f"build the split with `forcomp build SOURCE {root} --split {split}`"
        )
    indices = subset_indices(n_total, options.limit, options.seed)
    return Prepared(
        loaded=loaded,
        device=dev,
        size=size,
        norm=norm,
        preprocess=make_preprocess(norm, dev, model_dtype(net)),
        cache=root,
        grid=grid,
        first=first,
        classes=list(first.classes),
        indices=indices,
        n_images=n_total if indices is None else len(indices),
        was_training=was_training,
    )
