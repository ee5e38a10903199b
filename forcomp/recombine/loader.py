"""``ForCompLoader``: the fast path as a real loader object (what training scripts expect of one).

Re-iterable, ``len(loader)`` batches, ``.dataset``, ``.sampler``, ``.batch_size``, and
``set_epoch(e)`` reaching the dataset's draws and a sampler that has one (``DistributedSampler``).
Where the paste runs follows the device:

- CPU: inside the DataLoader workers, per batch (the collate function reads, pastes and, when
  given, augments): the paste is worker work, not a serial step in the main process.
- CUDA (any non-CPU device): workers read, decode and crop the parts to uint8; the batch is pinned,
  copied with ``non_blocking=True`` and pasted on the device in one batched (compiled) kernel.

Then, in this order: ``augment`` (per-sample augmentation after the paste that moves masks with
images), ``batch_transform`` (e.g. normalisation), ``mix`` (batch-level mixing: timm ``Mixup``,
torchvision v2 ``MixUp``/``CutMix``). Images come out as ``tv_tensors.Image``, masks as
``tv_tensors.Mask``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from typing_extensions import TypedDict, Unpack

from forcomp.recombine.params import derive_seed
from forcomp.recombine.transform import Parts, Recombine, collate_parts

Augment = Callable[..., Any]
BatchTransform = Callable[[torch.Tensor], torch.Tensor]
Mix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True, eq=False)
class LoaderOptions:
    """How :class:`ForCompLoader` batches (``ForComp.loader``'s keyword arguments as one object).

    Attributes:
        num_workers: DataLoader workers. On a CPU ``device`` they also paste (per batch); on CUDA
            they read, decode and crop, and the device pastes.
        device: where batches come out (default CPU).
        shuffle: default True for the train split, unless ``sampler`` is given.
        sampler: any sampler or sequence of indices (``DistributedSampler`` for DDP).
        drop_last: as DataLoader's.
        augment: per-sample augmentation after the paste that moves masks with images: kornia
            ``AugmentationSequential(..., data_keys=["input", "mask"])`` gets the batch; a
            torchvision v2 transform is applied sample by sample (given a batch it would draw one
            crop/flip for all of it). Images are float [0, 1] here.
        batch_transform: deterministic batch step on the float images, e.g. ``Normalize``.
        mix: batch-level mixing ``(images, labels) -> (images, targets)``: timm ``Mixup``,
            torchvision v2 ``MixUp``/``CutMix`` (masks are those of the unmixed images).
        pin_memory: default: on for CUDA.
        prefetch_factor: batches each worker prepares ahead (DataLoader's).
    """

    num_workers: int = 0
    device: str | torch.device | None = None
    shuffle: bool | None = None
    sampler: Iterable[int] | None = None
    drop_last: bool = False
    augment: Augment | None = None
    batch_transform: BatchTransform | None = None
    mix: Mix | None = None
    pin_memory: bool | None = None
    prefetch_factor: int | None = None

    @classmethod
    def of(cls, options: LoaderOptions | None = None, **overrides: Unpack[LoaderKwargs]) -> LoaderOptions:
        """``options`` (default: the defaults) with ``overrides`` replaced."""
        return dataclasses.replace(options if options is not None else cls(), **overrides)


class LoaderKwargs(TypedDict, total=False):
    """:class:`LoaderOptions`' fields as keyword arguments (``ds.loader(256, num_workers=8)``)."""

    num_workers: int
    device: str | torch.device | None
    shuffle: bool | None
    sampler: Iterable[int] | None
    drop_last: bool
    augment: Augment | None
    batch_transform: BatchTransform | None
    mix: Mix | None
    pin_memory: bool | None
    prefetch_factor: int | None


def apply_augment(augment: Augment, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[Any, Any]:
    """Run a per-sample augmentation over a batch so that every sample draws its own parameters.

    A torchvision v2 transform given a batch draws *one* set of parameters for all of it (one crop,
    one flip for the whole batch): it is applied sample by sample here. Anything else (kornia's
    ``AugmentationSequential``, which draws per sample) gets the batch: ``augment(images)`` or,
    with masks, ``augment(images, masks[:, None])`` (kornia's ``data_keys=["input", "mask"]``).
    """
    if isinstance(augment, v2.Transform):
        outs: list[Any] = []
        for i in range(images.shape[0]):
            img = tv_tensors.Image(images[i])
            outs.append(augment(img, tv_tensors.Mask(masks[i])) if masks is not None else (augment(img),))
        new_images = torch.stack([o[0].as_subclass(torch.Tensor) for o in outs])
        new_masks = torch.stack([o[1].as_subclass(torch.Tensor) for o in outs]) if masks is not None else None
        return new_images, new_masks
    if masks is None:
        out = augment(images)
        return (out[0] if isinstance(out, (tuple, list)) else out), None
    out = augment(images, masks[:, None])
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            "augment(images, masks) must return (images, masks) so the masks follow the geometry "
            "(kornia: AugmentationSequential(..., data_keys=['input', 'mask'])), "
            f"got {type(out).__name__}"
        )
    new_masks = out[1]
    if new_masks.dim() == 4:
        new_masks = new_masks[:, 0]
    return out[0], new_masks


class _PasteInWorkers:
    """Collate function for a CPU loader: collate, paste, augment, in the worker process."""

    def __init__(self, recombine: Recombine, augment: Augment | None, return_masks: bool) -> None:
        self.recombine, self.augment, self.return_masks = recombine, augment, return_masks

    def __call__(self, samples: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
        parts = collate_parts(samples)
        # float32 across the process boundary (not uint8): the same values as ds[i], no rounding
        images, masks = self.recombine(parts)
        images, masks = images.as_subclass(torch.Tensor), masks.as_subclass(torch.Tensor)
        if self.augment is not None:
            images, new_masks = apply_augment(self.augment, images, masks if self.return_masks else None)
            masks = new_masks if new_masks is not None else masks
        return images, parts.labels, masks, parts.decode_failures


class PartsView(Dataset):
    """``ForComp.load_parts`` as a map-style dataset: a DataLoader over it with ``collate_fn=
    collate_parts`` yields :class:`~forcomp.recombine.transform.Parts` batches for ``Recombine``."""

    def __init__(self, ds: Any, fg_at_paste_size: bool = False) -> None:
        self.ds, self.fg_at_paste_size = ds, fg_at_paste_size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.ds.load_parts(index, fg_at_paste_size=self.fg_at_paste_size)


class ForCompLoader:
    """Batches of recombined images, ``(images, labels)`` or ``(images, labels, masks)``.

    Built by :meth:`forcomp.ForComp.loader`; ``options`` as :class:`LoaderOptions`. Iterating twice gives two
    epochs: the epoch advances by itself at each new iteration unless ``set_epoch`` was called
    for it (as training scripts do with ``sampler.set_epoch``), so a seeded run draws new crops,
    flips and pastes every epoch and the same ones when rerun.

    Example:
        >>> loader = ds.loader(256, num_workers=8, device="cuda")  # doctest: +SKIP
        >>> for epoch in range(90):                                # doctest: +SKIP
        ...     loader.set_epoch(epoch)
        ...     for images, labels in loader: ...
    """

    dataset: Any
    batch_size: int
    num_workers: int
    device: torch.device
    sampler: Iterable[int]
    paste_in_workers: bool
    augment: Augment | None
    batch_transform: BatchTransform | None
    mix: Mix | None
    options: LoaderOptions
    _dl: DataLoader
    _epoch: int | None
    _last_epoch: int
    _sampler_epoch: int | None
    _unseeded_base: int | None

    def __init__(
        self,
        dataset: Any,  # a forcomp.ForComp (not imported: dataset imports this module)
        batch_size: int,
        options: LoaderOptions | None = None,
    ) -> None:
        o = options if options is not None else LoaderOptions()
        num_workers, device, shuffle, sampler = o.num_workers, o.device, o.shuffle, o.sampler
        augment, batch_transform, mix = o.augment, o.batch_transform, o.mix
        self.options = o
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if sampler is not None and shuffle:
            raise ValueError(
                "sampler and shuffle=True are exclusive (as in DataLoader): shuffle in the sampler, "
                "e.g. DistributedSampler(ds, shuffle=True)"
            )
        if dataset.size is None:
            raise ValueError(
                "ForComp(size=None) hands each composite to its transform at the background's own "
                "resolution (ImageFolder's contract): batch it with torch's DataLoader or timm's "
                "create_loader; the fast loader needs size=... (e.g. 224)"
            )
        for name, fn in (("augment", augment), ("batch_transform", batch_transform), ("mix", mix)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if isinstance(batch_transform, v2.Transform) and _is_random(batch_transform):
            raise ValueError(
                f"batch_transform={type(batch_transform).__name__} is a random torchvision v2 transform: "
                "given a batch it draws one set of parameters for all of it (one crop, one flip per "
                "batch). Pass it as augment=... (applied per sample) or use kornia.augmentation, "
                "which draws per sample; batch_transform is for deterministic steps such as Normalize"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.augment, self.batch_transform, self.mix = augment, batch_transform, mix
        if shuffle is None:
            shuffle = sampler is None and dataset.split == "train"
        self._shuffle_gen: torch.Generator | None = None
        if sampler is None:
            if shuffle:
                self._shuffle_gen = torch.Generator()
                sampler = RandomSampler(dataset, generator=self._shuffle_gen)
            else:
                sampler = SequentialSampler(dataset)
        self.sampler = sampler
        self._unseeded_base = int(torch.randint(0, 2**62, (1,))) if dataset.seed is None else None
        self._epoch: int | None = None  # set by set_epoch for the next iteration
        self._last_epoch = dataset.epoch - 1
        self._sampler_epoch = getattr(sampler, "epoch", None)  # what the sampler was last set to
        self.paste_in_workers = self.device.type == "cpu"
        collate: Callable[..., Any]
        if self.paste_in_workers:
            collate = _PasteInWorkers(dataset.recombine, augment, dataset.return_masks)
        else:
            collate = collate_parts
        kw: dict[str, Any] = {}
        if o.prefetch_factor is not None and num_workers > 0:
            kw["prefetch_factor"] = o.prefetch_factor
        self._dl = DataLoader(
            PartsView(dataset, fg_at_paste_size=not self.paste_in_workers),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            drop_last=o.drop_last,
            pin_memory=self.device.type == "cuda" if o.pin_memory is None else o.pin_memory,
            **kw,
        )

    @property
    def drop_last(self) -> bool:
        return self._dl.drop_last

    def __len__(self) -> int:
        return len(self._dl)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next iteration's parts, crops and order for ``epoch`` (dataset and sampler)."""
        self._epoch = int(epoch)

    def _start_epoch(self) -> int:
        sampler_epoch = getattr(self.sampler, "epoch", None)
        if self._epoch is not None:
            epoch = self._epoch
        elif isinstance(sampler_epoch, int) and sampler_epoch != self._sampler_epoch:
            # the script called sampler.set_epoch(e) itself (torchvision's and timm's train.py)
            epoch = sampler_epoch
        else:
            epoch = self._last_epoch + 1
        self._epoch, self._last_epoch = None, epoch
        self.dataset.epoch = epoch  # before the workers start: they take the dataset as it is now
        set_sampler_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_sampler_epoch):
            set_sampler_epoch(epoch)
            self._sampler_epoch = getattr(self.sampler, "epoch", None)
        if self._shuffle_gen is not None:
            # seeded: the order follows (seed, epoch); unseeded: a new order at every epoch
            base = self.dataset.seed if self.dataset.seed is not None else self._unseeded_base
            self._shuffle_gen.manual_seed(derive_seed(base, epoch, 1))  # type: ignore[arg-type]
        return epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        self._start_epoch()
        ds, dev = self.dataset, self.device
        source: Iterable[Any] = self._dl if self.paste_in_workers else self._on_device(self._dl)
        for batch in source:
            if self.paste_in_workers:
                images, labels, masks, failures = batch
                if self.num_workers > 0:  # failures counted in worker processes: bring them home
                    ds.decode_failures += failures
                images, labels, masks = images.to(dev), labels.to(dev), masks.to(dev)
            else:
                parts: Parts = batch
                images, masks = ds.recombine(parts)
                images, labels = images.as_subclass(torch.Tensor), parts.labels
                masks = masks.as_subclass(torch.Tensor)
                if self.augment is not None:
                    images, masks_out = apply_augment(
                        self.augment, images, masks if ds.return_masks else None
                    )
                    masks = masks_out if masks_out is not None else masks
            images = images.as_subclass(torch.Tensor)
            if self.batch_transform is not None:
                images = self.batch_transform(images)
            if self.mix is not None:
                images, labels = self.mix(images, labels)
            out_images = tv_tensors.Image(images)
            if ds.return_masks:
                yield out_images, labels, tv_tensors.Mask(masks)
            else:
                yield out_images, labels

    def _on_device(self, batches: Iterable[Parts]) -> Iterator[Parts]:
        """Parts batches on the device. On CUDA the next batch is copied (pinned memory,
        ``non_blocking``) on a side stream while the current one is pasted and trained on, as
        timm's PrefetchLoader does."""
        ds, dev = self.dataset, self.device
        stream = torch.cuda.Stream(device=dev) if dev.type == "cuda" else None
        pending: Parts | None = None
        for parts in batches:
            if self.num_workers > 0:  # failures counted in worker processes: bring them home
                ds.decode_failures += parts.decode_failures
            if stream is None:
                yield parts.to(dev, non_blocking=True)
                continue
            with torch.cuda.stream(stream):
                nxt = parts.to(dev, non_blocking=True)
            if pending is not None:
                yield pending
            current = torch.cuda.current_stream(dev)
            current.wait_stream(stream)
            for t in _tensors(nxt):  # allocated on the side stream, used on the current one
                t.record_stream(current)
            pending = nxt
        if pending is not None:
            yield pending

    def __repr__(self) -> str:
        return (
            f"ForCompLoader(batch_size={self.batch_size}, batches={len(self)}, device={self.device}, "
            f"num_workers={self.num_workers}, paste_in_workers={self.paste_in_workers})"
        )


def _tensors(parts: Parts) -> Iterator[torch.Tensor]:
    for f in parts.__dataclass_fields__:
        v = getattr(parts, f)
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, tuple):
            yield from (t for t in v if isinstance(t, torch.Tensor))


def _is_random(t: v2.Transform) -> bool:
    """Whether a v2 transform (or a Compose of them) draws random parameters."""
    if isinstance(t, (v2.Compose, v2.RandomApply, v2.RandomChoice, v2.RandomOrder)):
        return True if not isinstance(t, v2.Compose) else any(_is_random(c) for c in t.transforms)
    name = type(t).__name__
    return name.startswith("Random") or name in (
        "ColorJitter",
        "AutoAugment",
        "RandAugment",
        "TrivialAugmentWide",
        "AugMix",
        "MixUp",
        "CutMix",
        "ScaleJitter",
        "GaussianBlur",
        "GaussianNoise",
    )
