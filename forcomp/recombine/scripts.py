"""The fast path inside timm's and torchvision's ``train.py``, from the script's own arguments.

Each helper reads the script's argparse ``Namespace`` at the point where the script builds its
train dataset or loader, maps every recipe flag the fast path can apply the way the script's preset
applies it, and refuses at construction, naming the flag, each one it cannot (the per-sample path,
``ForComp(size=None)``, keeps the whole recipe). timm and torchvision are imported inside the
functions that need them.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import torch

from forcomp.recombine.dataset import ForComp
from forcomp.recombine.loader import ForCompLoader, LoaderOptions, NormalizeThenErase

__all__ = [
    "NormalizeThenErase",
    "timm_fast_dataset",
    "timm_fast_loader",
    "torchvision_fast_dataset",
    "torchvision_fast_loader",
]

PER_SAMPLE = "use the per-sample path, ForComp(..., size=None), which keeps the script's whole recipe"
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _refuse(flag: str, value: Any, why: str) -> ValueError:
    return ValueError(
        f"{flag} {value} is not applied by forcomp's fast loader ({why}): drop {flag} or {PER_SAMPLE}"
    )


def _hw(size: Sequence[int]) -> tuple[int, int]:
    return int(size[-2]), int(size[-1])


def _num_classes(dataset: ForComp, flag: str, given: int | None) -> int:
    n = len(dataset.classes)
    if given is not None and int(given) != n:
        raise ValueError(f"{flag} {given} but the cache has {n} classes: pass {flag} {n} (or leave it out)")
    return n


def timm_fast_dataset(cache: str | os.PathLike[str], args: Namespace, data_config: dict[str, Any]) -> ForComp:
    """``dataset_train`` for timm's ``train.py``: size from ``data_config["input_size"]``, the
    fused RandomResizedCrop from ``--scale``/``--ratio``, the flip from ``--hflip``, the draws
    from ``--seed`` (the same on every rank: each rank draws for its own indices).

    Raises:
        ValueError: ``--no-aug`` or a ``--train-crop-mode`` other than ``rrc``, naming the flag.
    """
    if getattr(args, "no_aug", False):
        raise _refuse("--no-aug", "", "its crop is timm's resize + centre crop")
    mode = getattr(args, "train_crop_mode", None)
    if mode not in (None, "rrc"):
        raise _refuse("--train-crop-mode", mode, "the fused crop is RandomResizedCrop")
    return ForComp(
        cache, "train", size=_hw(data_config["input_size"]), seed=args.seed,
        crop_scale=tuple(args.scale), crop_ratio=tuple(args.ratio), hflip_prob=args.hflip,
    )  # fmt: skip


def _timm_augment(args: Namespace) -> Any:
    """timm's per-sample colour steps after the crop and flip (``create_transform``'s order)."""
    from torchvision.transforms import v2

    if getattr(args, "aa", None):
        raise _refuse("--aa", args.aa, "RandAugment/AutoAugment are per-sample PIL transforms in timm")
    if getattr(args, "gaussian_blur_prob", None):
        raise _refuse("--gaussian-blur-prob", args.gaussian_blur_prob, "timm blurs PIL images per sample")
    steps: list[Any] = []
    if getattr(args, "vflip", 0.0):
        steps.append(v2.RandomVerticalFlip(args.vflip))
    cj = getattr(args, "color_jitter", None)
    if cj:
        factors = tuple(float(c) for c in cj) if isinstance(cj, (list, tuple)) else (float(cj),) * 3
        jitter = v2.ColorJitter(*factors)
        prob = getattr(args, "color_jitter_prob", None)
        steps.append(v2.RandomApply([jitter], p=prob) if prob is not None else jitter)
    if getattr(args, "grayscale_prob", None):
        steps.append(v2.RandomGrayscale(p=args.grayscale_prob))
    return v2.Compose(steps) if steps else None


def timm_fast_loader(
    dataset: ForComp, args: Namespace, data_config: dict[str, Any], device: torch.device | str
) -> Any:
    """``loader_train`` for timm's ``train.py`` (v1.0.28 and main) on the fast path.

    Mapped: ``--workers``, ``--batch-size``, ``--pin-mem``, ``--distributed`` (a
    ``DistributedSampler``), ``--vflip``, ``--color-jitter`` [``--color-jitter-prob``] and
    ``--grayscale-prob`` (torchvision's ``ColorJitter``/``RandomGrayscale`` per sample after the
    crop and flip, as timm's ``create_transform``), ``data_config``'s mean/std, ``--reprob``/
    ``--remode``/``--recount`` (timm's ``RandomErasing`` after normalisation). Mixing: with the
    prefetcher (default) the loader yields uint8 images mixed by timm's ``Mixup`` (the script's
    ``FastCollateMixup`` arguments, ``num_classes`` from the cache) and is wrapped in timm's
    ``PrefetchLoader``, which normalises and erases as ``create_loader`` does; with
    ``--no-prefetcher`` the script's own ``mixup_fn`` mixes. Label smoothing stays the script's.

    Raises:
        ValueError: a flag the fast path cannot apply (``--aa``, ``--gaussian-blur-prob``,
            ``--aug-repeats``, ``--aug-splits``, ``--mixup-off-epoch`` with the prefetcher,
            ``--num-classes`` not the cache's), naming it.
    """
    from timm.data import Mixup
    from timm.data.loader import PrefetchLoader
    from timm.data.random_erasing import RandomErasing
    from torch.utils.data import DistributedSampler

    if getattr(args, "aug_repeats", 0):
        raise _refuse(
            "--aug-repeats", args.aug_repeats, "timm's RepeatAugSampler repeats per-sample transforms"
        )
    if getattr(args, "aug_splits", 0) or getattr(args, "jsd_loss", False):
        raise _refuse(
            "--aug-splits/--jsd-loss", getattr(args, "aug_splits", ""), "AugMix splits are per sample"
        )
    device = torch.device(device)
    num_classes = _num_classes(dataset, "--num-classes", getattr(args, "num_classes", None))
    prefetcher = bool(getattr(args, "prefetcher", not getattr(args, "no_prefetcher", False)))
    mixup_active = args.mixup > 0 or args.cutmix > 0.0 or args.cutmix_minmax is not None
    if prefetcher and mixup_active and getattr(args, "mixup_off_epoch", 0):
        raise _refuse(
            "--mixup-off-epoch", args.mixup_off_epoch,
            "with the prefetcher timm turns mixing off through FastCollateMixup; run with --no-prefetcher",
        )  # fmt: skip
    mix = None
    if prefetcher and mixup_active:
        mix = Mixup(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
            label_smoothing=args.smoothing, num_classes=num_classes,
        )  # fmt: skip
    batch_transform = None
    if not prefetcher:  # timm's transforms without the prefetcher: Normalize, then RandomErasing
        erase = RandomErasing(args.reprob, mode=args.remode, max_count=args.recount, device=device)
        batch_transform = NormalizeThenErase(
            data_config["mean"], data_config["std"], erase if args.reprob > 0 else None
        )
    sampler: Any = DistributedSampler(dataset) if getattr(args, "distributed", False) else None
    options = LoaderOptions(
        num_workers=args.workers, device=device, sampler=sampler, drop_last=True,
        augment=_timm_augment(args), batch_transform=batch_transform, mix=mix,
        pin_memory=getattr(args, "pin_mem", False), dtype=torch.uint8 if prefetcher else torch.float32,
    )  # fmt: skip
    loader = ForCompLoader(dataset, args.batch_size, options)
    if not prefetcher:
        return loader
    return PrefetchLoader(
        loader,  # type: ignore[arg-type]  # reads only what a DataLoader has (len, iter, sampler, ...)
        mean=data_config["mean"], std=data_config["std"], channels=3, device=device,
        img_dtype=_timm_dtype(args), re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
    )  # fmt: skip


def _timm_dtype(args: Namespace) -> torch.dtype:
    name = getattr(args, "model_dtype", None)
    return getattr(torch, name) if name else torch.float32


def torchvision_fast_dataset(
    cache: str | os.PathLike[str], args: Namespace, seed: int | None = None
) -> ForComp:
    """``dataset`` for torchvision's reference ``train.py`` (in ``load_data``): the fused
    RandomResizedCrop to ``--train-crop-size`` and the preset's flip (0.5). The script seeds
    nothing: ``seed=None`` draws from torch's default generator (new every run, as its
    ``ImageFolder``); pass ``seed`` to make runs reproducible and resumed runs exact.

    Raises:
        ValueError: ``--auto-augment`` (a per-sample uint8 transform in the preset), naming it.
    """
    if getattr(args, "auto_augment", None):
        raise _refuse("--auto-augment", args.auto_augment, "the preset applies it per sample to uint8 images")
    return ForComp(cache, "train", size=args.train_crop_size, seed=seed)


def torchvision_fast_loader(
    dataset: ForComp,
    args: Namespace,
    device: torch.device | str,
    num_classes: int,
    *,
    sampler: Any = None,
) -> ForCompLoader:
    """``data_loader`` for torchvision's reference ``train.py`` on the fast path.

    Mapped: ``--batch-size``, ``--workers``, pinned memory on CUDA (the script pins always),
    the preset's ``Normalize`` then ``--random-erase`` per sample after it (value 0), and
    ``--mixup-alpha``/``--cutmix-alpha`` as v2 ``RandomChoice([MixUp, CutMix])`` with
    ``num_classes``. ``sampler``: the script's ``train_sampler``; one with ``set_epoch``
    (``DistributedSampler``, ``RASampler``) is used, so the script's ``train_sampler.set_epoch``
    reaches the draws; a ``RandomSampler`` is replaced by the loader's epoch-aware one.
    ``--label-smoothing`` stays in the script's loss.

    Raises:
        ValueError: ``--auto-augment``, or ``num_classes`` not the cache's, naming it.
    """
    from torchvision.transforms import v2

    if getattr(args, "auto_augment", None):
        raise _refuse("--auto-augment", args.auto_augment, "the preset applies it per sample to uint8 images")
    _num_classes(dataset, "num_classes", num_classes)
    prob = float(getattr(args, "random_erase", 0.0))
    erase = v2.RandomErasing(p=prob, value=0) if prob > 0 else None  # the preset's, after Normalize
    mixers: list[Any] = []
    if args.mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=args.mixup_alpha, num_classes=num_classes))
    if args.cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=args.cutmix_alpha, num_classes=num_classes))
    options = LoaderOptions(
        num_workers=args.workers, device=device,
        sampler=sampler if callable(getattr(sampler, "set_epoch", None)) else None,
        batch_transform=NormalizeThenErase(TORCHVISION_MEAN, TORCHVISION_STD, erase),
        mix=v2.RandomChoice(mixers) if mixers else None,  # pinned on CUDA, as the script
    )  # fmt: skip
    return ForCompLoader(dataset, args.batch_size, options)
