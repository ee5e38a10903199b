"""``ForCompLoader``: the fast path as a real loader object (what training scripts expect of one).

Re-iterable, ``len(loader)`` batches, and the attributes a script reads on a ``DataLoader``
(``dataset``, ``sampler``, ``batch_sampler``, ``batch_size``, ``num_workers``, ``drop_last``,
``pin_memory``, ``collate_fn``, ...), meaning what they mean there. ``set_epoch(e)``, or the
sampler's ``set_epoch(e)``, chooses the epoch whose order and draws the next iteration gives.
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
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from typing_extensions import TypedDict, Unpack

from forcomp.models.devices import resolve_device
from forcomp.recombine.sampler import EpochSampler
from forcomp.recombine.threads import init_worker
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
        device: where batches come out (default CPU); one this machine does not have is refused.
        shuffle: default True for the train split, unless ``sampler`` is given.
        sampler: any sampler or sequence of indices (``DistributedSampler`` for DDP). None: an
            :class:`~forcomp.recombine.sampler.EpochSampler` (``set_epoch`` reaches the draws).
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
        start_epoch: the epoch of the first iteration when nothing sets one (a resumed run);
            default: the dataset's ``epoch``.
        dtype: ``torch.float32`` (images in [0, 1], or as ``batch_transform`` makes them) or
            ``torch.uint8`` (0-255, unnormalised, after ``mix``: what timm's ``PrefetchLoader``
            takes, which normalises and erases on the device; no ``batch_transform`` then).
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
    start_epoch: int | None = None
    dtype: torch.dtype = torch.float32

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
    start_epoch: int | None
    dtype: torch.dtype


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


class NormalizeThenErase:
    """``Normalize`` on the batch, then random erasing drawn per sample on the normalised images,
    the order of torchvision's ``ClassificationPresetTrain`` and timm's transforms (a torchvision v2
    ``RandomErasing`` is applied sample by sample; timm's ``RandomErasing`` draws per sample itself).
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], erase: Callable[..., Any] | None = None
    ) -> None:
        self.normalize = v2.Normalize(list(mean), list(std))
        self.erase = erase
        self._per_sample = isinstance(erase, v2.Transform)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.erase_only(self.normalize(images))

    def erase_only(self, images: torch.Tensor) -> torch.Tensor:
        """The erasing step alone, on images normalised already."""
        if self.erase is None:
            return images
        return apply_augment(self.erase, images, None)[0] if self._per_sample else self.erase(images)


def split_normalize(
    batch_transform: BatchTransform | None,
) -> tuple[v2.Normalize | None, BatchTransform | None]:
    """``(normalize, rest)``: the ``Normalize`` that ``batch_transform`` starts with, which a CPU
    loader's workers apply in place on the canvas they paste (no second float batch, no serial
    step in the main process), and what remains for the main process (None: nothing).

    torchvision's ``Normalize`` (v1 or v2) and :class:`NormalizeThenErase` are split; anything
    else stays whole in the main process.
    """
    from torchvision import transforms as v1

    if isinstance(batch_transform, v2.Normalize):
        return batch_transform, None
    if isinstance(batch_transform, v1.Normalize):
        return v2.Normalize(list(batch_transform.mean), list(batch_transform.std)), None
    if isinstance(batch_transform, NormalizeThenErase):
        return batch_transform.normalize, (batch_transform.erase_only if batch_transform.erase else None)
    return None, batch_transform


def _shared_canvas(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor in shared memory: a worker's batch written there crosses
    to the main process without the copy that pickling a private tensor makes (what torch's
    ``default_collate`` does for its stacked batches in workers)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


class _PasteInWorkers:
    """Collate function for a CPU loader: collate, paste, augment, normalise, in the worker process.

    The canvas is allocated in shared memory in a worker process, the leading ``Normalize`` of the
    batch transform runs on it in place, and masks are sent only when the dataset returns them.
    """

    def __init__(
        self,
        recombine: Recombine,
        augment: Augment | None,
        return_masks: bool,
        normalize: v2.Normalize | None = None,
    ) -> None:
        self.recombine, self.augment, self.return_masks = recombine, augment, return_masks
        self.normalize = normalize

    def __call__(self, samples: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
        from torch.utils.data import get_worker_info

        parts = collate_parts(samples, pad=False)  # pasted here on the CPU: no padded copy
        # float32 across the process boundary (not uint8): the same values as ds[i], no rounding
        in_worker = get_worker_info() is not None
        out = _shared_canvas(tuple(parts.bg.shape)) if in_worker and len(samples) else None
        images, masks = self.recombine(parts, out=out)
        images, masks = images.as_subclass(torch.Tensor), masks.as_subclass(torch.Tensor)
        if self.augment is not None:
            images, new_masks = apply_augment(self.augment, images, masks if self.return_masks else None)
            masks = new_masks if new_masks is not None else masks
        if self.normalize is not None:
            # in place: the images were made by this call (the canvas, or augment's output)
            images = v2.functional.normalize(images, self.normalize.mean, self.normalize.std, inplace=True)
        return images, parts.labels, masks if self.return_masks else None, parts.decode_failures


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

    Built by :meth:`forcomp.ForComp.loader`; ``options`` as :class:`LoaderOptions`. Iterating twice
    gives two epochs. The epoch of an iteration is, in this order: the one given to
    ``loader.set_epoch``; the one given to the sampler's ``set_epoch`` (``DistributedSampler``,
    or the default :class:`~forcomp.recombine.sampler.EpochSampler`: what timm's and
    torchvision's ``train.py`` call); ``start_epoch`` for the first iteration; else the last one
    plus one. A seeded dataset draws from ``(seed, epoch, index)``, so a resumed run that tells the
    epoch gets that epoch's batches, never epoch 0's again.

    The attributes a training script reads on a ``DataLoader`` mean the same here: ``dataset``,
    ``sampler``, ``batch_sampler`` (a ``BatchSampler`` over ``sampler``: the batches loaded),
    ``batch_size``, ``drop_last``, ``num_workers``, ``pin_memory``, ``collate_fn`` (the function
    the workers collate with), ``generator`` (None), ``persistent_workers`` (False),
    ``prefetch_factor``, ``timeout`` (0), ``len(loader)``.

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
    batch_sampler: BatchSampler
    paste_in_workers: bool
    augment: Augment | None
    batch_transform: BatchTransform | None
    mix: Mix | None
    dtype: torch.dtype
    options: LoaderOptions
    generator: torch.Generator | None = None
    persistent_workers: bool = False
    timeout: float = 0
    _dl: DataLoader
    _epoch: int | None
    _last_epoch: int
    _sampler_epoch: int | None

    def __init__(
        self,
        dataset: Any,  # a forcomp.ForComp (not imported: dataset imports this module)
        batch_size: int,
        options: LoaderOptions | None = None,
    ) -> None:
        o = options if options is not None else LoaderOptions()
        num_workers, shuffle, sampler = o.num_workers, o.shuffle, o.sampler
        augment, batch_transform, mix = o.augment, o.batch_transform, o.mix
        self.options = o
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if o.start_epoch is not None and (
            isinstance(o.start_epoch, bool)
            or not isinstance(o.start_epoch, numbers.Integral)
            or o.start_epoch < 0
        ):
            raise ValueError(f"start_epoch must be an int >= 0 or None, got {o.start_epoch!r}")
        if o.dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"dtype must be torch.float32 or torch.uint8, got {o.dtype!r}")
        if o.dtype == torch.uint8 and batch_transform is not None:
            raise ValueError(
                "dtype=torch.uint8 yields unnormalised 0-255 images for a step that normalises them "
                "(timm's PrefetchLoader): leave batch_transform=None, or use dtype=torch.float32"
            )
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
        self.device = resolve_device(o.device, default="cpu")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.dtype = o.dtype
        self.augment, self.batch_transform, self.mix = augment, batch_transform, mix
        if shuffle is None:
            shuffle = sampler is None and dataset.split == "train"
        if sampler is None:
            # seeded: the order follows (seed, epoch); unseeded: one draw of torch's default
            # generator, so the script's torch.manual_seed makes it reproducible
            order_seed = dataset.seed if dataset.seed is not None else int(torch.randint(0, 2**62, ()))
            sampler = EpochSampler(len(dataset), shuffle=bool(shuffle), seed=order_seed)
        self.sampler = sampler
        self.batch_sampler = BatchSampler(sampler, self.batch_size, o.drop_last)  # type: ignore[arg-type]
        self._epoch: int | None = None  # set by set_epoch for the next iteration
        first = o.start_epoch if o.start_epoch is not None else dataset.epoch
        self._last_epoch = first - 1
        self._sampler_epoch = getattr(sampler, "epoch", None)  # what the sampler was last set to
        self.paste_in_workers = self.device.type == "cpu"
        collate: Callable[..., Any]
        # a CPU loader's workers apply the batch transform's Normalize; the rest runs here
        self._worker_normalize: v2.Normalize | None
        self._main_transform: BatchTransform | None
        self._worker_normalize, self._main_transform = (
            split_normalize(batch_transform) if self.paste_in_workers else (None, batch_transform)
        )
        if self.paste_in_workers:
            collate = _PasteInWorkers(
                dataset.recombine, augment, dataset.return_masks, self._worker_normalize
            )
        else:
            collate = collate_parts
        kw: dict[str, Any] = {}
        if o.prefetch_factor is not None and num_workers > 0:
            kw["prefetch_factor"] = o.prefetch_factor
        self._dl = DataLoader(
            PartsView(dataset, fg_at_paste_size=not self.paste_in_workers),
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda" if o.pin_memory is None else o.pin_memory,
            worker_init_fn=init_worker,
            **kw,
        )

    @property
    def drop_last(self) -> bool:
        return bool(self.batch_sampler.drop_last)

    @property
    def pin_memory(self) -> bool:
        return bool(self._dl.pin_memory)

    @property
    def collate_fn(self) -> Callable[..., Any]:
        return self._dl.collate_fn

    @property
    def prefetch_factor(self) -> int | None:
        return self._dl.prefetch_factor

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
                images, labels = images.to(dev), labels.to(dev)
                masks = masks.to(dev) if masks is not None else None
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
            if self._main_transform is not None:
                images = self._main_transform(images)
            if self.mix is not None:
                images, labels = self.mix(images, labels)
            if self.dtype == torch.uint8:  # timm's fast_collate contract: rounded 0-255
                images = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
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
