"""forcomp.recombine.scripts: each recipe flag of timm's and torchvision's train.py is mapped the
way the script's preset applies it, or refused at construction naming the flag."""

from __future__ import annotations

import pytest
import torch
from integration.test_readme_training import DATA_CONFIG, timm_args, torchvision_args
from recombine.conftest import make_cache
from torchvision.transforms import v2

from forcomp.recombine.scripts import (
    NormalizeThenErase,
    timm_fast_dataset,
    timm_fast_loader,
    torchvision_fast_dataset,
    torchvision_fast_loader,
)

pytest.importorskip("timm")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(
        tmp_path_factory.mktemp("helpers"), split="train", per_class=2, fg_px=12, bg_size=(64, 48)
    )


@pytest.mark.parametrize(
    ("over", "flag"),
    [
        ({"aa": "rand-m9-mstd0.5"}, "--aa"),
        ({"gaussian_blur_prob": 0.1}, "--gaussian-blur-prob"),
        ({"aug_repeats": 3}, "--aug-repeats"),
        ({"aug_splits": 3}, "--aug-splits"),
        ({"num_classes": 1000}, "--num-classes"),
        ({"mixup": 0.8, "mixup_off_epoch": 10}, "--mixup-off-epoch"),
    ],
)
def test_timm_refusals_name_the_flag(cache, over, flag):
    ds = timm_fast_dataset(cache, timm_args(), DATA_CONFIG)
    with pytest.raises(ValueError, match=flag) as e:
        timm_fast_loader(ds, timm_args(**over), DATA_CONFIG, CPU)
    assert "size=None" in str(e.value) or flag == "--num-classes"


@pytest.mark.parametrize(
    ("over", "flag"), [({"no_aug": True}, "--no-aug"), ({"train_crop_mode": "rkrr"}, "--train-crop-mode")]
)
def test_timm_dataset_refusals(cache, over, flag):
    with pytest.raises(ValueError, match=flag):
        timm_fast_dataset(cache, timm_args(**over), DATA_CONFIG)


def test_timm_mappings(cache):
    from timm.data.loader import PrefetchLoader
    from timm.data.mixup import Mixup
    from timm.data.random_erasing import RandomErasing

    args = timm_args(scale=[0.3, 0.9], ratio=[0.5, 2.0], hflip=0.2, vflip=0.1, grayscale_prob=0.3, seed=7)
    ds = timm_fast_dataset(cache, args, DATA_CONFIG)
    assert ds.size == (32, 32) and ds.seed == 7
    assert (
        ds.config.crop_scale == (0.3, 0.9)
        and ds.config.crop_ratio == (0.5, 2.0)
        and ds.config.hflip_prob == 0.2
    )
    pre = timm_fast_loader(
        ds, timm_args(mixup=0.8, reprob=0.25, remode="const", smoothing=0.2), DATA_CONFIG, CPU
    )
    assert isinstance(pre, PrefetchLoader) and pre.loader.dtype == torch.uint8
    assert pre.random_erasing is not None and pre.random_erasing.probability == 0.25  # after normalising
    assert (
        isinstance(pre.loader.mix, Mixup)
        and pre.loader.mix.num_classes == 3
        and pre.loader.mix.label_smoothing == 0.2
    )
    steps = [type(t).__name__ for t in pre.loader.augment.transforms]
    assert steps == ["ColorJitter"]  # timm's default --color-jitter 0.4
    assert pre.loader.augment.transforms[0].brightness == (0.6, 1.4)
    flags = timm_args(no_prefetcher=True, reprob=0.5, vflip=0.1, grayscale_prob=0.3, color_jitter_prob=0.5)
    plain = timm_fast_loader(ds, flags, DATA_CONFIG, CPU)
    assert plain.dtype == torch.float32 and plain.mix is None  # the script's mixup_fn mixes
    assert [type(t).__name__ for t in plain.augment.transforms] == [
        "RandomVerticalFlip",
        "RandomApply",
        "RandomGrayscale",
    ]
    bt = plain.batch_transform
    assert (
        isinstance(bt, NormalizeThenErase)
        and isinstance(bt.erase, RandomErasing)
        and bt.erase.probability == 0.5
    )


def test_torchvision_mappings_and_refusals(cache):
    args = torchvision_args(mixup_alpha=0.2, cutmix_alpha=1.0, random_erase=1.0)
    with pytest.raises(ValueError, match="--auto-augment"):
        torchvision_fast_dataset(cache, torchvision_args(auto_augment="ta_wide"))
    ds = torchvision_fast_dataset(cache, args, seed=1)
    assert ds.size == (32, 32) and ds.config.hflip_prob == 0.5 and ds.config.crop_scale == (0.08, 1.0)
    with pytest.raises(ValueError, match="num_classes 1000"):
        torchvision_fast_loader(ds, args, CPU, 1000)
    loader = torchvision_fast_loader(ds, args, CPU, 3)
    mixers = [type(t).__name__ for t in loader.mix.transforms]
    assert mixers == ["MixUp", "CutMix"] and all(t.num_classes == 3 for t in loader.mix.transforms)
    # random erasing after Normalize: erased patches are exactly 0 (black would be about -2)
    x = torch.rand(4, 3, 32, 32)
    out = loader.batch_transform(x)
    norm = v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x)
    erased = out != norm
    assert erased.any() and bool((out[erased] == 0).all())
    assert len({int(e.sum()) for e in erased}) > 1  # a box per sample
