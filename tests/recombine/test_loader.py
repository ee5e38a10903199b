"""``ForComp.loader``: a real loader object, the fused crop/flip, augmentation hooks, typed outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recombine.conftest import make_cache
from torch.utils.data import DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

import forcomp.recombine.transform as tr
from forcomp import ForComp
from forcomp.recombine.loader import ForCompLoader
from forcomp.recombine.params import CROP_TRIES, RecombineConfig, sample_crop

YELLOW = torch.tensor([250, 250, 0]) / 255


@pytest.fixture
def train_cache(tmp_path):
    return make_cache(tmp_path / "c", split="train", per_class=4, fg_px=30, bg_size=(120, 90))


def test_split_defaults_follow_torchvision_presets(train_cache, cache):
    tr_ds = ForComp(train_cache, "train", size=32, seed=0)
    assert tr_ds.config.crop_scale == (0.08, 1.0) and tr_ds.config.hflip_prob == 0.5 and tr_ds.fused
    val = ForComp(cache, "val", size=32, seed=0)
    assert val.config.crop_scale is None and val.config.hflip_prob == 0.0 and not val.fused
    explicit = ForComp(train_cache, "train", size=32, crop_scale=None, hflip_prob=0.0)
    assert not explicit.fused
    per_sample = ForComp(train_cache, "train", size=None)
    assert per_sample.config.crop_scale is None and per_sample.config.hflip_prob == 0.0
    with pytest.raises(ValueError, match="size=None"):
        ForComp(train_cache, "train", size=None, crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="crop_scale"):
        ForComp(train_cache, "train", size=32, crop_scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="hflip_prob"):
        ForComp(train_cache, "train", size=32, hflip_prob=2.0)
    with pytest.raises(ValueError, match="crop_scale"):
        ForComp(train_cache, "train", size=32, crop_scale="random")


def test_crop_sampling_is_torchvisions():
    """Same distribution as RandomResizedCrop.get_params (KS on every coordinate), and the same
    centre-crop fallback when no try fits."""
    cfg = RecombineConfig(crop_scale=(0.08, 1.0), hflip_prob=0.5)
    H, W, n = 150, 190, 6000
    u = torch.rand(n, 2 * CROP_TRIES + 3, generator=torch.Generator().manual_seed(0))
    c = sample_crop(torch.tensor([[H, W]] * n), cfg, u, (64, 64))
    torch.manual_seed(0)
    ref = np.array(
        [v2.RandomResizedCrop.get_params(torch.zeros(1, H, W), (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]
    )
    ours = torch.stack([c.y0, c.x0, c.h, c.w], 1).numpy()
    for k in range(4):
        grid = np.concatenate([ours[:, k], ref[:, k]])
        fa = np.searchsorted(np.sort(ours[:, k]), grid, side="right") / n
        fb = np.searchsorted(np.sort(ref[:, k]), grid, side="right") / n
        assert np.abs(fa - fb).max() < 0.04, k
    assert (c.x0 + c.w <= W).all() and (c.y0 + c.h <= H).all() and (c.x0 >= 0).all()
    assert abs(float(c.flip.float().mean()) - 0.5) < 0.03
    # nothing fits (every try is wider than the image): torchvision's centre-crop fallback
    wide = RecombineConfig(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0))
    fb = sample_crop(torch.tensor([[100, 100]]), wide, torch.rand(1, 2 * CROP_TRIES + 2), (32, 32))
    i, j, h, w = v2.RandomResizedCrop.get_params(torch.zeros(1, 100, 100), (1.0, 1.0), (2.0, 2.0))
    assert [int(fb.y0), int(fb.x0), int(fb.h), int(fb.w)] == [i, j, h, w]


def test_loader_is_a_real_loader(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=0)
    loader = ds.loader(5)
    assert isinstance(loader, ForCompLoader)
    assert len(loader) == 3 and loader.dataset is ds and loader.batch_size == 5 and loader.sampler is not None
    e0 = [(x.clone(), y.clone()) for x, y in loader]
    e1 = [(x.clone(), y.clone()) for x, y in loader]  # a second epoch, not an empty one
    assert sum(len(y) for _, y in e0) == sum(len(y) for _, y in e1) == len(ds)
    assert isinstance(e0[0][0], tv_tensors.Image)
    assert not torch.equal(torch.cat([x for x, _ in e0]), torch.cat([x for x, _ in e1]))  # new draws
    loader.set_epoch(0)
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(again, [x for x, _ in e0], strict=True))  # replayable


def test_set_epoch_reaches_a_distributed_sampler_and_the_dataset(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=0)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = ds.loader(3, sampler=sampler)
    assert len(loader) == 2
    loader.set_epoch(4)
    first = torch.cat([y for _, y in loader])
    assert sampler.epoch == 4 and ds.epoch == 4
    # the script's own sampler.set_epoch (torchvision's train.py) is honoured too
    sampler.set_epoch(7)
    list(loader)
    assert ds.epoch == 7
    sampler.set_epoch(4)
    assert torch.equal(torch.cat([y for _, y in loader]), first)


def test_crops_and_flips_differ_within_a_batch_and_loader_equals_ds_i(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=1, return_masks=True)
    crops = torch.stack([ds.load_parts(i)["crop"] for i in range(len(ds))])
    assert len({tuple(c[:4].tolist()) for c in crops}) == len(ds)  # a crop box per sample
    assert 0 < crops[:, 4].sum() < len(ds)  # some flipped, some not
    for workers in (0, 2):
        imgs, _, masks = next(iter(ds.loader(len(ds), shuffle=False, num_workers=workers)))
        for i in (0, 5, 11):
            x, _, m = ds[i]
            torch.testing.assert_close(imgs[i], x.as_subclass(torch.Tensor), atol=1e-6, rtol=0)
            torch.testing.assert_close(masks[i], m.as_subclass(torch.Tensor), atol=1e-6, rtol=0)


def test_masks_stay_on_the_object_through_the_fused_crop_and_flip(train_cache):
    ds = ForComp(
        train_cache, "train", size=48, seed=2, return_masks=True, mask_smoothing_sigma=0, crop_scale=(0.3, 1)
    )
    images, _, masks = next(iter(ds.loader(12, shuffle=False)))
    solid = masks > 0.99
    assert solid.any(dim=(1, 2)).sum() >= 6
    colours = images.permute(0, 2, 3, 1)[solid]
    torch.testing.assert_close(colours.mean(0), YELLOW, atol=0.03, rtol=0)
    away = images.permute(0, 2, 3, 1)[masks == 0]
    assert ((away - YELLOW).abs().sum(1) > 0.3).float().mean() > 0.97


def test_paste_runs_in_the_workers_on_cpu(train_cache, monkeypatch):
    calls = []
    real = tr.Recombine.forward

    def counted(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(tr.Recombine, "forward", counted)
    ds = ForComp(train_cache, "train", size=32, seed=0)
    list(ds.loader(4, num_workers=0))
    assert len(calls) == 3  # serially here: once per batch
    calls.clear()
    loader = ds.loader(4, num_workers=2)
    assert loader.paste_in_workers
    assert sum(len(y) for _, y in loader) == len(ds)
    assert calls == []  # the workers pasted, the main process did not


def test_augment_hooks_move_masks_and_draw_per_sample(train_cache):
    """A torchvision v2 random transform is applied sample by sample (given a batch it would draw
    one crop for all); kornia gets the batch and draws per sample. Masks follow in both."""
    K = pytest.importorskip("kornia.augmentation")
    kw = {"size": 48, "seed": 3, "return_masks": True, "mask_smoothing_sigma": 0, "crop_scale": (0.5, 1)}
    ds = ForComp(train_cache, "train", **kw)
    tv = v2.RandomResizedCrop(40, scale=(0.2, 1.0), antialias=True)
    kornia = K.AugmentationSequential(
        K.RandomResizedCrop((40, 40), scale=(0.2, 1.0), p=1.0), data_keys=["input", "mask"]
    )
    for aug in (tv, kornia):
        torch.manual_seed(0)
        images, _, masks = next(iter(ds.loader(12, shuffle=False, augment=aug)))
        assert images.shape == (12, 3, 40, 40) and masks.shape == (12, 40, 40)
        assert isinstance(images, tv_tensors.Image) and isinstance(masks, tv_tensors.Mask)
        solid = masks > 0.99
        colours = images.permute(0, 2, 3, 1)[solid]
        torch.testing.assert_close(colours.mean(0), YELLOW, atol=0.04, rtol=0)
        shares = masks.flatten(1).mean(1)
        assert len({round(float(s), 4) for s in shares}) > 6  # different crops per sample


def test_random_v2_batch_transform_is_refused_with_the_way_out(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=0)
    for tf in (
        v2.RandomHorizontalFlip(),
        v2.Compose([v2.RandomResizedCrop(24), v2.Normalize([0.5] * 3, [0.5] * 3)]),
    ):
        with pytest.raises(ValueError, match="augment="):
            ds.loader(4, batch_transform=tf)
    ds.loader(4, batch_transform=v2.Normalize([0.5] * 3, [0.5] * 3))  # deterministic: fine
    with pytest.raises(ValueError, match="size=None"):
        ForComp(train_cache, "train", size=None).loader(4)


def test_mix_hook_torchvision_mixup_cutmix(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=0)
    mix = v2.RandomChoice([v2.MixUp(num_classes=3), v2.CutMix(num_classes=3)])
    norm = v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    images, targets = next(iter(ds.loader(6, batch_transform=norm, mix=mix)))
    assert targets.shape == (6, 3) and torch.allclose(targets.sum(1), torch.ones(6))
    assert (targets.max(1).values < 1).any()  # mixed, not one-hot
    assert -1.5 < float(images.mean()) < 1.5 and float(images.std()) > 0.3  # normalised, not near-black


def test_orig_img_prob_with_the_fused_crop_and_the_per_sample_path(built_cache):
    """The untouched source image goes through the same crop and flip as a recombination (fused),
    or whole to the user's transform (size=None); its mask is empty."""
    from PIL import Image

    from forcomp.decode import load_rgb

    source, cache = built_cache
    fused = ForComp(
        cache,
        "val",
        size=48,
        orig_img_prob=1.0,
        return_masks=True,
        seed=0,
        crop_scale=(0.3, 1),
        hflip_prob=0.5,
    )
    parts = fused.load_parts(0)
    x0, y0, w, h, flip = (int(v) for v in parts["crop"].tolist())
    img, _, m = fused[0]
    assert m.sum() == 0
    src = torch.from_numpy(load_rgb(fused.files.source_path(0)).copy()).permute(2, 0, 1)
    ref = (
        torch.nn.functional.interpolate(
            src[None, :, y0 : y0 + h, x0 : x0 + w].float(), size=(48, 48), mode="bilinear", antialias=True
        )[0]
        / 255
    )
    ref = ref.flip(-1) if flip else ref
    assert (img - ref).abs().mean() < 0.01
    per_sample = ForComp(cache, "val", size=None, orig_img_prob=1.0, return_masks=True, seed=0)
    pil, _, pm = per_sample[0]
    assert isinstance(pil, Image.Image) and pil.size == (src.shape[2], src.shape[1]) and pm.sum() == 0
    assert torch.equal(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1), src)


@pytest.mark.gpu
def test_cuda_loader_gives_the_cpu_picture(train_cache):
    """Workers decode and crop, the GPU pastes (compiled matrix kernel): item i equals ds[i] on the
    CPU (window kernel) up to the kernels' float rounding."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    ds = ForComp(train_cache, "train", size=48, seed=0, return_masks=True)
    images, labels, masks = next(iter(ds.loader(12, shuffle=False, device="cuda", num_workers=2)))
    assert images.is_cuda and masks.is_cuda and labels.is_cuda
    for i in range(12):
        x, _, m = ds[i]
        assert (images[i].cpu() - x).abs().max() < 0.03
        assert (masks[i].cpu() - m).abs().max() < 0.05


def test_device_side_path_runs_where_the_workers_do_not_paste(train_cache):
    """The accelerator path (workers decode and crop, the device pastes) on the meta device, which
    stands in for CUDA here: batches come out on the device, with the shapes and types of the
    CPU path, decode failures counted, augment and mix applied there."""
    ds = ForComp(train_cache, "train", size=32, seed=0, return_masks=True)
    loader = ds.loader(4, device="meta", num_workers=0, mix=lambda x, y: (x * 1, y))
    assert not loader.paste_in_workers
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [4, 4, 4]
    images, labels, masks = batches[0]
    assert images.device.type == "meta" and labels.device.type == "meta" and masks.device.type == "meta"
    assert images.shape == (4, 3, 32, 32) and masks.shape == (4, 32, 32)
    assert isinstance(images, tv_tensors.Image) and isinstance(masks, tv_tensors.Mask)


def test_foreground_shrunk_in_the_worker_gives_the_same_picture(train_cache):
    """For a GPU the workers shrink each foreground to its pasted size (premultiplied, so no dark
    fringe); the paste then copies it 1:1. The picture is ds[i]'s (one resample either way)."""
    from forcomp.recombine.transform import collate_parts

    ds = ForComp(train_cache, "train", size=32, seed=5, return_masks=True)
    shrunk = 0
    for i in range(len(ds)):
        small = ds.load_parts(i, fg_at_paste_size=True)
        full = ds.load_parts(i)
        assert small["fg"].shape[1] <= full["fg"].shape[1]
        shrunk += small["fg"].shape[1] < full["fg"].shape[1]
        a, ma = ds.recombine(collate_parts([small]))
        b, mb = ds.recombine(collate_parts([full]))
        assert (a - b).abs().max() < 0.03 and (ma - mb).abs().max() < 0.05
    assert shrunk >= 3


def test_loader_options_object_and_keywords_give_the_same_batches(cache):
    from forcomp import LoaderOptions

    ds = ForComp(cache, "val", size=32, seed=0, return_masks=True)
    opts = LoaderOptions(shuffle=False, drop_last=True)
    a = list(ds.loader(4, opts))
    b = list(ds.loader(4, shuffle=False, drop_last=True))
    assert len(a) == len(b) == len(ds) // 4
    assert all(torch.equal(x, y) for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=True))
    assert ds.loader(4, opts, drop_last=False).options.drop_last is False


def test_loader_has_what_scripts_read_on_a_dataloader(train_cache):
    """timm's train.py/PrefetchLoader/create_loader consumers and torchvision's script read these."""
    from torch.utils.data import BatchSampler

    from forcomp.recombine.sampler import EpochSampler

    ds = ForComp(train_cache, "train", size=32, seed=0)
    loader = ds.loader(5, drop_last=True, num_workers=0)
    assert isinstance(loader.sampler, EpochSampler) and callable(loader.sampler.set_epoch)
    assert isinstance(loader.batch_sampler, BatchSampler) and loader.batch_sampler.sampler is loader.sampler
    assert not hasattr(loader.batch_sampler, "set_epoch")  # timm main then calls loader.sampler.set_epoch
    assert (loader.batch_size, loader.drop_last, loader.num_workers, len(loader)) == (5, True, 0, 2)
    assert loader.pin_memory is False and loader.generator is None and loader.persistent_workers is False
    assert loader.timeout == 0 and loader.prefetch_factor is None and callable(loader.collate_fn)
    assert loader.dataset is ds
    # the batches loaded are the batch sampler's
    loader.sampler.set_epoch(3)
    expected = [torch.as_tensor(ds.labels[b]).long() for b in loader.batch_sampler]
    got = [y for _, y in loader]
    assert ds.epoch == 3 and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_sampler_set_epoch_and_start_epoch_choose_the_draws(train_cache):
    ds = ForComp(train_cache, "train", size=32, seed=0)
    loader = ds.loader(4)
    epochs = [torch.cat([x for x, _ in loader]) for _ in range(3)]  # 0, 1, 2 by itself
    loader.sampler.set_epoch(1)  # what timm main's _set_loader_epoch reaches
    assert torch.equal(torch.cat([x for x, _ in loader]), epochs[1])
    resumed = ForComp(train_cache, "train", size=32, seed=0).loader(4, start_epoch=2)
    assert torch.equal(torch.cat([x for x, _ in resumed]), epochs[2])
    with pytest.raises(ValueError, match="start_epoch"):
        ds.loader(4, start_epoch=-1)


def test_a_device_that_is_not_there_is_refused_at_construction(train_cache, monkeypatch):
    from forcomp.errors import ForcompError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ds = ForComp(train_cache, "train", size=32, seed=0)
    with pytest.raises(ForcompError, match=r"'cuda'.*available: cpu") as e:
        ds.loader(8, device="cuda")
    assert "\n" not in str(e.value)


def test_uint8_output_feeds_timms_prefetch_loader(train_cache):
    """dtype=torch.uint8: 0-255 images as timm's fast_collate gives them; PrefetchLoader normalises
    (mean*255) and the result equals the float path normalised by hand."""
    timm_loader = pytest.importorskip("timm.data.loader")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = ForComp(train_cache, "train", size=32, seed=0)
    fast = ds.loader(4, dtype=torch.uint8)
    x8, _ = next(iter(fast))
    assert x8.dtype == torch.uint8 and int(x8.max()) > 200
    fast.set_epoch(0)
    pre = timm_loader.PrefetchLoader(fast, mean=mean, std=std, device=torch.device("cpu"))
    assert len(pre) == len(fast) and pre.sampler is fast.sampler and pre.dataset is ds
    xp, _ = next(iter(pre))
    ref, _ = next(iter(ds.loader(4, start_epoch=0, batch_transform=v2.Normalize(mean, std))))
    torch.testing.assert_close(xp.as_subclass(torch.Tensor), ref.as_subclass(torch.Tensor), atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="batch_transform"):
        ds.loader(4, dtype=torch.uint8, batch_transform=v2.Normalize(mean, std))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_normalize_batch_transform_runs_in_the_cpu_workers_with_the_same_values(train_cache, workers):
    """A CPU loader's workers normalise their canvas in place (torchvision v1 or v2 ``Normalize``,
    or the recipe helpers' ``NormalizeThenErase``): the values of normalising in the main process."""
    from torchvision import transforms as v1

    from forcomp.recombine.loader import NormalizeThenErase, split_normalize

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    ds = ForComp(train_cache, "train", size=32, seed=0, return_masks=True)
    plain = [(x.clone(), m.clone()) for x, _, m in ds.loader(4, num_workers=workers)]
    for bt in (v2.Normalize(mean, std), v1.Normalize(mean, std), NormalizeThenErase(mean, std)):
        got = list(ds.loader(4, num_workers=workers, batch_transform=bt))
        for (x, _, m), (x0, m0) in zip(got, plain, strict=True):
            assert torch.equal(x, v2.functional.normalize(x0, mean, std)) and torch.equal(m, m0)
    normalize, rest = split_normalize(v2.Normalize(mean, std))
    assert normalize is not None and rest is None
    erase = NormalizeThenErase(mean, std, v2.RandomErasing(p=1.0))
    normalize, rest = split_normalize(erase)
    assert normalize is erase.normalize and rest == erase.erase_only  # erasing stays in the main process
    other = v2.Lambda(lambda x: x * 2)
    assert split_normalize(other) == (None, other)
    erased = next(iter(ds.loader(4, num_workers=workers, batch_transform=erase)))[0]
    assert (erased == 0).float().mean() > 0.05 and not torch.equal(erased, plain[0][0])


def test_cpu_workers_send_masks_only_when_asked_and_batches_in_shared_memory(train_cache, monkeypatch):
    import torch.utils.data as tud

    samples = [ForComp(train_cache, "train", size=32, seed=0).load_parts(i) for i in range(3)]
    for return_masks in (False, True):
        loader = ForComp(train_cache, "train", size=32, seed=0, return_masks=return_masks).loader(3)
        images, labels, masks, failures = loader.collate_fn(samples)
        assert (masks is not None) == return_masks and not images.is_shared()
        monkeypatch.setattr(tud, "get_worker_info", lambda: object())  # as inside a worker
        in_worker = loader.collate_fn(samples)
        monkeypatch.undo()
        # written into shared memory: the main process receives it without a copy
        assert in_worker[0].is_shared() and torch.equal(in_worker[0], images)
        assert torch.equal(in_worker[1], labels) and (in_worker[2] is not None) == return_masks
