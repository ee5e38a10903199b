"""forcomp inside the training scripts' own data code: timm's library and a loop shaped like
torchvision's references/classification/train.py, on a ForComp dataset.

Per-sample path: ``ForComp(size=None)`` behaves as ``ImageFolder`` (PIL images to the transform),
so timm's ``create_transform``/``create_loader`` (prefetcher on and off, ``FastCollateMixup``,
RandAugment, random erasing) and torchvision's preset pipelines (v1 and v2) run unchanged.
Fast path: ``ds.loader`` with the crop and flip fused, normalisation and mixing as hooks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recombine.conftest import make_cache
from recombine.test_parity import CLASSES, make_textured_cache
from torch.utils.data import DataLoader, DistributedSampler, default_collate
from torchvision import transforms as T
from torchvision import tv_tensors
from torchvision.transforms import v2

from forcomp import ForComp

timm_data = pytest.importorskip("timm.data")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUM_CLASSES = len(CLASSES)
YELLOW = torch.tensor([250, 250, 0]) / 255


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_textured_cache(tmp_path_factory.mktemp("scripts"), per_class=3)


def _normalised(x: torch.Tensor) -> None:
    """A batch normalised with ImageNet's mean/std: not near-black (a [0, 1] batch taken for uint8
    by a prefetcher gives about -2 everywhere), not constant."""
    x = x.float()
    assert -1.0 < float(x.mean()) < 1.0, float(x.mean())
    assert float(x.std()) > 0.4, float(x.std())


def _soft(targets: torch.Tensor) -> torch.Tensor:
    """Soft targets summing to 1; returns whether each sample was mixed (not one-hot)."""
    assert targets.shape[1] == NUM_CLASSES
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)), atol=1e-4, rtol=0)
    return targets.max(1).values < 0.99


@pytest.mark.parametrize("prefetcher", [True, False])
def test_timm_create_loader_per_sample_path(cache, prefetcher):
    """timm's train.py data code, unchanged, with ForComp(size=None) as dataset_train."""
    torch.manual_seed(0)  # the scripts' transforms and mixers draw from torch's global RNG
    mixed: list[torch.Tensor] = []
    ds = ForComp(cache, "train", size=None, seed=0)
    collate = None
    mixup_fn = None
    if prefetcher:
        collate = timm_data.FastCollateMixup(
            mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES
        )
    else:
        mixup_fn = timm_data.Mixup(
            mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=NUM_CLASSES
        )
    loader = timm_data.create_loader(
        ds,
        input_size=(3, 64, 64),
        batch_size=6,
        is_training=True,
        use_prefetcher=prefetcher,
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=0.25,
        collate_fn=collate,
        num_workers=0,
        device=torch.device("cpu"),
        persistent_workers=False,
    )
    assert len(loader) == 2
    for _epoch in range(2):
        n = 0
        for x, y in loader:
            if mixup_fn is not None:
                x, y = mixup_fn(x, y)
            assert x.shape[1:] == (3, 64, 64)
            _normalised(x)
            mixed.append(_soft(y))
            n += len(x)
        assert n == len(ds)
    assert bool(torch.cat(mixed).any()), "mixing never applied"


def test_timm_fast_path_loop(cache):
    """timm's train loop without its prefetcher: ds.loader replaces create_loader; the script's own
    Mixup and random erasing run on the batches."""
    torch.manual_seed(0)  # the scripts' transforms and mixers draw from torch's global RNG
    mixed: list[torch.Tensor] = []
    from timm.data.random_erasing import RandomErasing

    ds = ForComp(cache, "train", size=64, seed=0, return_masks=False)
    erase = RandomErasing(probability=0.25, mode="pixel", device="cpu")
    norm = v2.Normalize(MEAN, STD)
    loader = ds.loader(6, batch_transform=lambda x: erase(norm(x)))
    mixup_fn = timm_data.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=NUM_CLASSES)
    assert len(loader) == 2
    for epoch in range(2):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = mixup_fn(x, y)
            _normalised(x)
            mixed.append(_soft(y))
    assert bool(torch.cat(mixed).any()), "mixing never applied"


def _torchvision_preset(version: int, size: int = 64) -> object:
    """The steps of torchvision's ClassificationPresetTrain (references/classification/presets.py):
    RandomResizedCrop, flip, TrivialAugmentWide, to float, Normalize, RandomErasing."""
    if version == 1:
        return T.Compose(
            [
                T.RandomResizedCrop(size, antialias=True),
                T.RandomHorizontalFlip(0.5),
                T.TrivialAugmentWide(),
                T.PILToTensor(),
                T.ConvertImageDtype(torch.float),
                T.Normalize(MEAN, STD),
                T.RandomErasing(0.25),
            ]
        )
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.TrivialAugmentWide(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float, scale=True),
            v2.Normalize(MEAN, STD),
            v2.RandomErasing(0.25),
            v2.ToPureTensor(),
        ]
    )


@pytest.mark.parametrize("version", [1, 2])
def test_torchvision_reference_loop_per_sample_path(cache, version):
    """torchvision's train.py data code with ForComp(size=None) in place of ImageFolder: its preset,
    its DistributedSampler, its MixUp/CutMix collate, len(data_loader), two epochs."""
    torch.manual_seed(0)  # the scripts' transforms and mixers draw from torch's global RNG
    mixed: list[torch.Tensor] = []
    ds = ForComp(cache, "train", size=None, seed=0, transform=_torchvision_preset(version))
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    mixup_cutmix = v2.RandomChoice(
        [v2.MixUp(alpha=1.0, num_classes=NUM_CLASSES), v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)]
    )

    def collate_fn(batch):  # noqa: ANN001, ANN202 - as the script's
        return mixup_cutmix(*default_collate(batch))

    data_loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=0, collate_fn=collate_fn)
    assert len(data_loader) == 2
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for image, target in data_loader:
            assert image.shape == (3, 3, 64, 64)
            _normalised(image)
            mixed.append(_soft(target))
    assert bool(torch.cat(mixed).any()), "mixing never applied"


def test_torchvision_reference_loop_fast_path(cache):
    """The same loop with ds.loader: the crop and flip are fused, normalisation is the batch
    transform, MixUp/CutMix the mix hook; crops and flips differ within a batch."""
    torch.manual_seed(0)  # the scripts' transforms and mixers draw from torch's global RNG
    mixed: list[torch.Tensor] = []
    ds = ForComp(cache, "train", size=64, seed=0)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    mixup_cutmix = v2.RandomChoice(
        [v2.MixUp(alpha=1.0, num_classes=NUM_CLASSES), v2.CutMix(alpha=1.0, num_classes=NUM_CLASSES)]
    )
    data_loader = ds.loader(
        3,
        sampler=sampler,
        augment=v2.Compose([v2.TrivialAugmentWide(), v2.RandomErasing(0.25)]),  # README's shape
        batch_transform=v2.Normalize(MEAN, STD),
        mix=mixup_cutmix,
    )
    assert len(data_loader) == 2 and data_loader.sampler is sampler
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for image, target in data_loader:
            assert isinstance(image, tv_tensors.Image) and image.shape == (3, 3, 64, 64)
            _normalised(image)
            mixed.append(_soft(target))
        seen.append(ds.epoch)
        crops = [ds.load_parts(i)["crop"] for i in list(sampler)[:3]]
        assert len({tuple(c[:4].tolist()) for c in crops}) == 3
    assert seen == [0, 1]
    assert bool(torch.cat(mixed).any()), "mixing never applied"


def test_v2_preset_moves_masks_with_the_image(tmp_path):
    """Per-sample path with return_masks: torchvision v2 geometry moves the mask with the image."""
    cache = make_cache(tmp_path / "c", split="train", per_class=3, fg_px=30, bg_size=(120, 90))
    tf = v2.Compose(
        [
            v2.RandomResizedCrop(48, scale=(0.3, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
        ]
    )
    ds = ForComp(cache, "train", size=None, seed=0, return_masks=True, mask_smoothing_sigma=0, transform=tf)
    torch.manual_seed(0)
    hits = 0
    for i in range(len(ds)):
        img, _, m = ds[i]
        assert isinstance(m, tv_tensors.Mask) and m.shape == (48, 48)
        # the mask's interior (3x3 erosion): at the edge the image is interpolated, the mask nearest
        padded = torch.nn.functional.pad(m[None, None].float(), (1, 1, 1, 1))
        solid = -torch.nn.functional.max_pool2d(-padded, 3, 1, 0)[0, 0] > 0.99
        if solid.sum() < 5:
            continue
        hits += 1
        torch.testing.assert_close(img[:, solid].float().mean(1) / 255, YELLOW, atol=0.03, rtol=0)
    assert hits >= 4
