"""ForComp: each parameter's effect, masks, backgrounds, determinism, workers, loaders, zips."""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
import torch
from recombine.conftest import CLASS_BG, make_cache, zip_cache
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from forcomp import ForComp, Recombine
from forcomp.errors import CacheFormatError

YELLOW = torch.tensor([250, 250, 0]) / 255


def _centroid(mask):
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


@pytest.mark.parametrize("k", range(9))
def test_nonant_puts_object_in_cell(cache, k):
    ds = ForComp(cache, "val", size=96, nonant=k, return_masks=True, seed=k)
    for i in range(len(ds)):
        _, _, m = ds[i]
        cx, cy = _centroid(m)
        assert int(cx // 32) == k % 3 and int(cy // 32) == k // 3


def test_bates_zero_centres(cache):
    ds = ForComp(cache, "val", size=(64, 96), fg_bates_n=0, return_masks=True, seed=0)
    for i in range(len(ds)):
        cx, cy = _centroid(ds[i][2])
        assert abs(cx - 47.5) < 1.0 and abs(cy - 31.5) < 1.0


def test_size_factor_scales_pasted_area(cache):
    kw = dict(
        size=96, fg_scale_jitter=0.0, mask_smoothing_sigma=0.0, return_masks=True, seed=0, background="orig"
    )
    a1 = np.mean([float(ForComp(cache, "val", size_factor=1.0, **kw)[i][2].sum()) for i in range(9)])
    a2 = np.mean([float(ForComp(cache, "val", size_factor=0.5, **kw)[i][2].sum()) for i in range(9)])
    assert a2 / a1 == pytest.approx(0.5, rel=0.08)
    # and the natural size is the ratio's share of the canvas (ratio = 1600 / 10800)
    assert a1 / 96**2 == pytest.approx(1600 / 10800, rel=0.08)


def _bg_class(img):
    corner = img[:, :3, :3].reshape(3, -1).mean(1) * 255
    return min(CLASS_BG, key=lambda c: float(((corner - torch.tensor(CLASS_BG[c])) ** 2).sum()))


def test_background_modes_draw_from_the_right_pools(cache):
    for mode in ("orig", "same"):
        ds = ForComp(cache, "val", size=48, background=mode, seed=0)
        for i in range(len(ds)):
            for e in range(3):
                ds.epoch = e
                assert _bg_class(ds[i][0]) == ds.classes[int(ds.labels[i])]
    ds = ForComp(cache, "val", size=48, background="all", seed=0)
    seen = set()
    for e in range(6):
        ds.epoch = e
        seen |= {_bg_class(ds[i][0]) for i in range(len(ds))}
    assert seen == set(CLASS_BG)


def test_pruning_removes_large_object_backgrounds(tmp_path, caplog):
    ratios = {f"n00000001/img{i}.JPEG": 0.9 for i in range(3)} | {"n00000002/img0.JPEG": 0.85}
    cache = make_cache(tmp_path / "c", ratios=ratios)
    ds = ForComp(cache, "val", size=48, background="all", pruning_ratio=0.8, seed=0)
    pruned = {ds.reader.bg_key(int(i)) for i in ds.pools.all}
    assert not pruned & set(ratios) and len(pruned) == 9 - 4
    with caplog.at_level(logging.WARNING):
        same = ForComp(cache, "val", size=48, background="same", pruning_ratio=0.8, seed=0)
    assert "every background pruned" in caplog.text  # class 1 falls back to its own backgrounds
    label = same.class_to_idx
    assert (
        len(same.pools.of_class(label["n00000001"])) == 3
        and len(same.pools.of_class(label["n00000002"])) == 2
    )


def test_rel_jut_out_bounds(cache):
    def outside_share(jut):
        shares = []
        ds = ForComp(cache, "val", size=64, rel_jut_out=jut, fg_bates_n=-1, mask_smoothing_sigma=0, seed=0)
        rec = ds.recombine
        from forcomp.recombine.dataset import collate_parts

        for e in range(20):
            ds.epoch = e
            parts = collate_parts([ds.load_parts(i) for i in range(len(ds))])
            p = rec.make_params(parts)
            vis_w = (
                torch.minimum(p.x0 + p.w, torch.tensor(64.0)) - torch.maximum(p.x0, torch.tensor(0.0))
            ).clamp_min(0)
            vis_h = (
                torch.minimum(p.y0 + p.h, torch.tensor(64.0)) - torch.maximum(p.y0, torch.tensor(0.0))
            ).clamp_min(0)
            shares.append(1 - vis_w / p.w)
            shares.append(1 - vis_h / p.h)
        return torch.cat(shares)

    assert outside_share(0.0).max() <= 1e-5
    s = outside_share(0.3)
    assert s.max() <= 0.3 + 1e-5 and s.max() > 0.2


def test_masks_equal_what_was_pasted_also_after_v2_geometry(cache):
    tf = v2.Compose(
        [v2.RandomResizedCrop(48, scale=(0.3, 1.0), antialias=True), v2.RandomHorizontalFlip(1.0)]
    )
    for transform in (None, tf):
        ds = ForComp(
            cache, "val", size=64, return_masks=True, seed=1, transform=transform, mask_smoothing_sigma=0
        )
        torch.manual_seed(0)
        for i in range(len(ds)):
            img, _, m = ds[i]
            # interior of the mask (3x3 erosion): edge pixels are interpolated by the geometry
            padded = torch.nn.functional.pad(m[None, None].float(), (1, 1, 1, 1))  # outside counts as empty
            solid = -torch.nn.functional.max_pool2d(-padded, 3, 1, 0)[0, 0] > 0.99
            if solid.sum() < 5:
                continue
            pix = img[:, solid]
            assert torch.allclose(pix.mean(1), YELLOW, atol=0.03)
            away = m == 0
            assert ((img[:, away] - YELLOW[:, None]).abs().sum(0) > 0.3).float().mean() > 0.97


def test_seed_determinism(cache):
    a = ForComp(cache, "val", size=48, seed=5)
    b = ForComp(cache, "val", size=48, seed=5)
    c = ForComp(cache, "val", size=48, seed=6)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(9))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(9))
    la = [x[0] for x in a.loader(4, shuffle=False)]
    lb = [x[0] for x in b.loader(4, shuffle=False)]
    assert all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def test_a_samples_draw_does_not_depend_on_its_batch(cache):
    """Item i looks the same from ds[i], in a batch of 4 or of 9, with or without workers: reports
    and training runs do not change with batch size or worker count."""
    ds = ForComp(cache, "val", size=48, seed=3, return_masks=True)
    single = torch.stack([ds[i][0] for i in range(len(ds))])
    for bs, workers in ((4, 0), (9, 2)):
        batched = torch.cat([x[0] for x in ds.loader(bs, num_workers=workers, shuffle=False)])
        torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)


def test_dataloader_workers_draw_differently(tmp_path):
    """Every foreground is the same: identical draws in two workers would give identical images."""
    cache = make_cache(tmp_path / "c", per_class=4)
    ds = ForComp(cache, "val", size=48, background="all", seed=None)
    dl = DataLoader(ds, batch_size=None, num_workers=2, shuffle=False)
    imgs = [x[0] for x in dl]
    # items 0 and 1 go to different workers; with numpy's global RNG (ForNet) they would repeat
    firsts = [imgs[i] for i in range(0, 6)]
    assert len({hash(t.numpy().tobytes()) for t in firsts}) == len(firsts)


def test_loader_batches_and_masks(cache):
    ds = ForComp(cache, "val", size=48, return_masks=True, seed=0)
    batches = list(ds.loader(4, num_workers=2, batch_transform=v2.Normalize([0.5] * 3, [0.5] * 3)))
    assert [b[0].shape[0] for b in batches] == [4, 4, 1]
    img, lab, m = batches[0]
    assert img.dtype == torch.float32 and img.min() < -0.5 and m.shape == (4, 48, 48)
    assert lab.tolist() == ds.targets[:4]


def test_imagefolder_attributes(cache):
    ds = ForComp(cache, "val", size=32)
    assert ds.classes == sorted(CLASS_BG) and ds.class_to_idx["n00000002"] == 1
    assert ds.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2] and len(ds) == 9
    img, label = ds[4]
    assert (
        img.shape == (3, 32, 32)
        and img.dtype == torch.float32
        and 0 <= img.min()
        and img.max() <= 1
        and label == 1
    )


def test_reads_fornet_zips(cache, tmp_path):
    z = zip_cache(cache, tmp_path / "zipped")
    a = ForComp(cache, "val", size=32, seed=0)
    b = ForComp(z, "val", size=32, seed=0)
    assert b.reader.mode == "zip" and [b.key(i) for i in range(len(b))] == [a.key(i) for i in range(len(a))]
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_zip_member_cannot_escape(cache, tmp_path):
    import zipfile

    z = zip_cache(cache, tmp_path / "zipped")
    with zipfile.ZipFile(z / "foregrounds_val.zip", "a") as f:
        f.writestr("../../../evil.WEBP", b"x")
        f.writestr("val/foregrounds/../evil.WEBP", b"x")
    ds = ForComp(z, "val", size=32)
    assert len(ds) == 9 and all(".." not in ds.key(i) for i in range(len(ds)))


def test_fg_transform_v2_and_albumentations(cache):
    import albumentations as A

    grey = v2.Lambda(lambda t: torch.cat([t[:3] // 2, t[3:]]))
    ds = ForComp(cache, "val", size=48, fg_transform=grey, return_masks=True, seed=0, mask_smoothing_sigma=0)
    img, _, m = ds[0]
    assert torch.allclose(img[:, m > 0.99].mean(1), YELLOW / 2, atol=0.03)
    alb = A.Compose([A.HorizontalFlip(p=1.0)])
    ds2 = ForComp(cache, "val", size=48, fg_transform=alb, seed=0)
    assert ds2[0][0].shape == (3, 48, 48)


def test_decode_failure_replaced_by_same_class(cache, caplog):
    bad = cache / "val" / "foregrounds" / "n00000002" / "img1.WEBP"
    bad.write_bytes(b"broken")
    ds = ForComp(cache, "val", size=32, seed=0)
    with caplog.at_level(logging.WARNING):
        _, label = ds[4]
    assert label == 1 and ds.decode_failures >= 1 and "img1.WEBP" in caplog.text


def test_orig_img_prob_returns_source(built_cache):
    source, cache = built_cache
    ds = ForComp(cache, "val", size=64, orig_img_prob=1.0, return_masks=True, seed=0)
    img, label, mask = ds[0]
    assert mask.sum() == 0
    ref = ForComp(cache, "val", size=64, seed=0)[0][0]
    assert not torch.equal(img, ref)
    batches = list(ds.loader(9, shuffle=False))
    assert batches[0][2].sum() == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"background": "x"}, "background"),
        ({"nonant": 9}, "nonant"),
        ({"size_factor": 0}, "size_factor"),
        ({"fg_scale_jitter": -1}, "fg_scale_jitter"),
        ({"size": 2}, "size"),
        ({"size": 64.0}, "size must be an int or"),
        ({"size": "64"}, "size must be an int or"),
        ({"size": (64, 32.5)}, "size must be an int or"),
    ],
)
def test_invalid_parameters(cache, kw, match):
    with pytest.raises(ValueError, match=match):
        ForComp(cache, "val", **kw)


def test_empty_cache_and_class_without_backgrounds(tmp_path, cache):
    (tmp_path / "empty" / "val" / "foregrounds").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "backgrounds").mkdir(parents=True)
    with pytest.raises(CacheFormatError, match="no foregrounds"):
        ForComp(tmp_path / "empty", "val")
    for p in (cache / "val" / "backgrounds" / "n00000003").iterdir():
        p.unlink()
    with pytest.raises(CacheFormatError, match="n00000003"):
        ForComp(cache, "val", background="same")


def test_recombine_pickles_and_replays(cache):
    from forcomp.recombine.dataset import collate_parts

    ds = ForComp(cache, "val", size=48, seed=0)
    parts = collate_parts([ds.load_parts(i) for i in range(4)])
    rec = Recombine(seed=3)
    img, m, params = rec(parts, return_params=True)
    img2, m2 = rec(parts, params)
    assert torch.equal(img, img2) and torch.equal(m, m2)
    clone = pickle.loads(pickle.dumps(Recombine(seed=3)))
    img3, _ = clone(parts)
    assert torch.equal(img3, img)
    assert json.dumps(rec.config.to_dict())


def test_recombine_kernels_agree_and_method_is_checked(cache):
    """``Recombine(method=...)``: the CPU window kernel and the GPU matrix kernel give the same
    recombination from the same draws, as float images in [0, 1]: what ``ds[i]`` shows on a CPU
    is what a GPU batch trains on."""
    from forcomp.recombine.dataset import collate_parts

    ds = ForComp(cache, "val", size=64, seed=0)
    parts = collate_parts([ds.load_parts(i) for i in range(6)])
    window, mw, params = Recombine(seed=1, method="window")(parts, return_params=True)
    matrix, mm = Recombine(seed=1, method="matrix")(parts, params)
    for img in (window, matrix):
        assert img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert (window - matrix).abs().max() < 0.02 and (mw - mm).abs().max() < 0.02
    torch.testing.assert_close(mw.sum((1, 2)), mm.sum((1, 2)), rtol=0.01, atol=0.5)  # same pasted area
    with pytest.raises(ValueError, match="method"):
        Recombine(method="pil")  # type: ignore[arg-type]


def test_unseeded_workers_differ_even_after_ds_i_in_the_parent(tmp_path):
    """A ds[i] before training must not hand the parent's generator to forked workers (they would
    repeat each other's draws), and unseeded loaders draw anew at every call."""
    from forcomp.recombine.dataset import collate_parts
    from forcomp.recombine.loader import PartsView

    cache = make_cache(tmp_path / "c", per_class=4)
    ds = ForComp(cache, "val", size=32, seed=None)
    ds[0]  # a sanity check before training creates the parent's generator
    dl = DataLoader(PartsView(ds), batch_size=2, num_workers=2, collate_fn=collate_parts)
    draws = torch.cat([p.draws.paste_uniforms() for p in dl])
    assert len({tuple(r.tolist()) for r in draws}) == len(draws)
    a = torch.cat([b[0] for b in ds.loader(6, num_workers=2, shuffle=False)])
    b = torch.cat([b[0] for b in ds.loader(6, num_workers=2, shuffle=False)])
    assert not torch.equal(a, b)


def test_unseeded_shuffle_order_changes_between_epochs(tmp_path):
    cache = make_cache(tmp_path / "c", split="train", per_class=4)
    ds = ForComp(cache, "train", size=16, seed=None)
    orders = {tuple(torch.cat([y for _, y in ds.loader(12)]).tolist()) for _ in range(4)}
    assert len(orders) > 1


def test_seeded_random_fg_transform_is_reproducible_and_leaves_global_rng_alone(cache):
    import albumentations as A

    for tf in (
        v2.RandomResizedCrop(24, scale=(0.3, 1.0)),
        A.Compose([A.RandomResizedCrop(size=(24, 24), scale=(0.3, 1.0))]),
    ):
        ds = ForComp(cache, "val", size=48, seed=0, fg_transform=tf, return_masks=True)
        torch.manual_seed(123)
        before = torch.get_rng_state()
        first = [ds[i][2] for i in range(4)]
        assert torch.equal(torch.get_rng_state(), before)
        again = [ds[i][2] for i in range(4)]
        assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
        loaded = torch.cat([m for *_, m in ds.loader(4, num_workers=2, shuffle=False)])
        torch.testing.assert_close(loaded[:4], torch.stack(first), atol=1e-6, rtol=0)


def test_fg_transform_errors_name_the_transform_and_colour_transforms_wrap_in_keep_alpha(cache, caplog):
    import albumentations as A

    import forcomp

    ds = ForComp(cache, "val", size=48, seed=0, fg_transform=v2.ColorJitter(0.4, 0.4, 0.4))
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(ValueError, match=r"ColorJitter.*img0\.WEBP.*KeepAlpha"),
    ):
        ds[0]
    assert ds.decode_failures == 0 and "cannot decode" not in caplog.text  # not blamed on the cache
    for colour in (v2.ColorJitter(0.4, 0.4, 0.4, 0.1), A.Compose([A.ColorJitter(p=1.0)])):
        kept = ForComp(
            cache, "val", size=48, seed=0, fg_transform=forcomp.KeepAlpha(colour), return_masks=True
        )
        plain = ForComp(cache, "val", size=48, seed=0, return_masks=True)
        img, _, m = kept[0]
        ref, _, m_ref = plain[0]
        assert torch.equal(m, m_ref)  # alpha untouched
        assert not torch.allclose(img[:, m > 0.99], ref[:, m_ref > 0.99])  # colour changed
    with pytest.raises(ValueError, match="must return a \\(4, h, w\\) RGBA"):
        ForComp(cache, "val", size=48, fg_transform=v2.Lambda(lambda t: t[:3]))[0]


def test_float_fg_transform_output_is_taken_as_0_1(cache):
    ds = ForComp(
        cache, "val", size=48, seed=0, return_masks=True, fg_transform=v2.ToDtype(torch.float32, scale=True)
    )
    ref = ForComp(cache, "val", size=48, seed=0, return_masks=True)
    img, _, m = ds[0]
    img_ref, _, m_ref = ref[0]
    assert m.sum() > 100
    torch.testing.assert_close(m, m_ref)
    torch.testing.assert_close(img, img_ref, atol=1 / 255, rtol=0)


def test_decode_failures_counted_with_workers_and_orig_background_falls_back(cache, caplog):
    (cache / "val" / "foregrounds" / "n00000002" / "img1.WEBP").write_bytes(b"broken")
    (cache / "val" / "backgrounds" / "n00000003" / "img0.JPEG").write_bytes(b"broken")
    for workers in (0, 2):
        ds = ForComp(cache, "val", size=32, seed=0, background="orig")
        with caplog.at_level(logging.WARNING):
            labels = torch.cat([y for _, y in ds.loader(3, num_workers=workers, shuffle=False)])
        assert labels.tolist() == ds.targets  # every item delivered, with its own label
        assert ds.decode_failures == 2, workers
    assert "drawing another of its class" in caplog.text
    img = ForComp(cache, "val", size=32, seed=0, background="orig")[6][0]  # n00000003/img0: no crash
    assert img.shape == (3, 32, 32)


def test_loader_and_index_arguments_checked_like_torch(cache):
    from torch.utils.data import SequentialSampler

    ds = ForComp(cache, "val", size=32, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ds.loader(0)  # at the call, not at the first next()
    with pytest.raises(ValueError, match="exclusive"):
        ds.loader(2, sampler=SequentialSampler(ds), shuffle=True)
    torch.testing.assert_close(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError):
        ds[len(ds)]
    np = pytest.importorskip("numpy")
    assert ForComp(cache, "val", size=np.int64(32), seed=np.int64(0), nonant=np.int64(4))[0][0].shape == (
        3,
        32,
        32,
    )


def test_a_file_is_not_a_cache(tmp_path):
    f = tmp_path / "mk.py"
    f.write_text("")
    with pytest.raises(CacheFormatError, match="is a file, not a cache directory"):
        ForComp(f)


def test_batches_feed_kornia_with_masks_and_timm_mixup(cache):
    """After pasting, GPU-side batch pipelines take the loader's output as it is: kornia moves
    image and mask together, timm's Mixup/CutMix mixes images and labels."""
    K = pytest.importorskip("kornia.augmentation")
    from timm.data import Mixup

    ds = ForComp(cache, "val", size=48, seed=0, return_masks=True, mask_smoothing_sigma=0)
    images, labels, masks = next(iter(ds.loader(6, shuffle=False)))
    aug = K.AugmentationSequential(
        K.RandomResizedCrop((40, 40), scale=(0.5, 1.0), p=1.0),
        K.RandomHorizontalFlip(p=1.0),
        data_keys=["input", "mask"],
    )
    out, out_mask = aug(images, masks[:, None])
    assert out.shape == (6, 3, 40, 40) and out_mask.shape == (6, 1, 40, 40)
    on_object = out_mask[:, 0] > 0.99
    assert on_object.any(dim=(1, 2)).all()
    colours = out.permute(0, 2, 3, 1)[on_object]  # every pixel the mask calls object is the object
    torch.testing.assert_close(colours.mean(0), YELLOW, atol=0.03, rtol=0)
    mixed, targets = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3)(images, labels)
    assert mixed.shape == images.shape and targets.shape == (6, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_a_class_without_objects_keeps_its_label(tmp_path, caplog):
    """Labels are the source ImageFolder's: a class whose images all had no object (no foreground,
    but backgrounds or index records) keeps its place in ``classes``, so later labels do not shift."""
    import shutil

    cache = make_cache(tmp_path / "c", per_class=2)
    shutil.rmtree(cache / "val" / "foregrounds" / "n00000001")
    ds = ForComp(cache, "val", size=32, seed=0, background="same")
    assert ds.classes == sorted(CLASS_BG) and ds.class_to_idx["n00000002"] == 1
    assert set(ds.targets) == {1, 2} and ds[0][1] == 1


@pytest.mark.slow
def test_spawned_workers_after_ds_i(tmp_path):
    """DataLoader workers started with spawn (macOS/Windows default) receive a pickled dataset: the
    parent's generator, made by a ds[0] before training, must not travel with it."""
    cache = make_cache(tmp_path / "c", per_class=2)
    ds = ForComp(cache, "val", size=32, seed=None)
    ds[0]
    dl = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    assert sum(len(y) for _, y in dl) == len(ds)
    rec = Recombine(seed=0)
    rec._generator()  # a used transform pickles too
    assert pickle.loads(pickle.dumps(rec))._generators == {}


RED, BLUE, GREEN, GREY = (220, 20, 20), (20, 20, 220), (20, 200, 20), (128, 128, 128)


def _two_tone_cache(root, bg_size=(64, 48), fg_size=(24, 16)):
    """One class: an object red on its left half and blue on its right, on a background green on
    its left half and grey on its right. Neither is mirror-symmetric."""
    from PIL import Image

    (w, h), (fw, fh) = bg_size, fg_size
    fgd, bgd = root / "train" / "foregrounds" / "n00000001", root / "train" / "backgrounds" / "n00000001"
    fgd.mkdir(parents=True)
    bgd.mkdir(parents=True)
    rgba = np.zeros((fh, fw, 4), np.uint8)
    rgba[:, : fw // 2, :3], rgba[:, fw // 2 :, :3], rgba[..., 3] = RED, BLUE, 255
    Image.fromarray(rgba, "RGBA").save(fgd / "img0.WEBP", lossless=True)
    bg = np.zeros((h, w, 3), np.uint8)
    bg[:, : w // 2], bg[:, w // 2 :] = GREEN, GREY
    Image.fromarray(bg).save(bgd / "img0.JPEG", quality=98)
    (root / "fg_bg_ratios_train.json").write_text(json.dumps({"n00000001/img0.JPEG": fw * fh / (w * h)}))
    return root


def _colour_x(img, mask, colour):
    """Mean column of the object's pixels (mask > 0.9) closest to ``colour``."""
    px = (img * 255).permute(1, 2, 0)
    d = (px - torch.tensor(colour, dtype=px.dtype)).abs().amax(-1)
    ys, xs = torch.nonzero((d < 40) & (mask > 0.9), as_tuple=True)
    assert len(xs) > 4, f"no object pixels of colour {colour}"
    return xs.float().mean().item()


@pytest.mark.parametrize("seed", range(4))
def test_fused_flip_mirrors_background_and_object(tmp_path, seed):
    """The fused flip mirrors the whole picture: background, the object's position *and* the object
    itself (an asymmetric object on an asymmetric background; the crop box is the whole image)."""
    cache = _two_tone_cache(tmp_path / "c")
    kw = dict(size=(48, 64), crop_scale=(1.0, 1.0), crop_ratio=(4 / 3, 4 / 3), return_masks=True, seed=seed)
    img0, _, m0 = ForComp(cache, "train", hflip_prob=0.0, **kw)[0]
    img1, _, m1 = ForComp(cache, "train", hflip_prob=1.0, **kw)[0]
    # the background: green left, grey right unflipped; mirrored when flipped
    far = (m0 == 0) & (m1 == 0)
    assert (img1 - img0.flip(-1)).abs()[:, far & far.flip(-1)].max() < 0.05
    assert img0[1, 0, 0] > 0.6 and img1[1, 0, -1] > 0.6  # green where it belongs
    # the object lands mirrored and is mirrored itself: red left of blue, then right of it
    (cx0, cy0), (cx1, cy1) = _centroid(m0), _centroid(m1)
    assert abs(cx1 - (63 - cx0)) <= 1.0 and abs(cy1 - cy0) <= 0.5  # whole-pixel boxes: 1 px rounding
    assert abs(float(m1.sum() - m0.sum())) < 0.15 * float(m0.sum())
    assert _colour_x(img0, m0, RED) < _colour_x(img0, m0, BLUE)
    assert _colour_x(img1, m1, RED) > _colour_x(img1, m1, BLUE)


@pytest.mark.parametrize("seed", range(4))
def test_per_sample_composite_puts_the_object_where_its_mask_says(tmp_path, seed):
    """``size=None``: the PIL composite at the background's resolution is the kernel's composite
    of the sample's planned geometry; the object's colours are inside the mask, in their order,
    and the background's outside it."""
    from forcomp.recombine.functional import composite

    cache = _two_tone_cache(tmp_path / "c")
    ds = ForComp(cache, "train", size=None, return_masks=True, seed=seed)
    pil, _, mask = ds[0]
    img = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    assert pil.size == (64, 48) and mask.shape == (48, 64)
    s = ds.load_parts(0)
    p = ds.plan(s["fg"], s["bg"], s["fg_ratio"], s["bg_ratio"], s["draws"]).params
    ref, ref_mask = composite(
        s["fg"], torch.tensor(s["fg"].shape[1:]), s["bg"], _unbatched(p),
        smoothing_radius=ds.recombine.smoothing_radius, method="window", fg_filter="bicubic",
    )  # fmt: skip
    assert torch.equal(img, ref) and torch.equal(mask.as_subclass(torch.Tensor), ref_mask)
    # the mask is the planned box (whole pixels), feathered only at its edge
    x0, y0, w, h = (int(round(float(v))) for v in (p.x0, p.y0, p.w, p.h))
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    assert x0 <= int(xs.min()) and int(xs.max()) < x0 + w and y0 <= int(ys.min()) and int(ys.max()) < y0 + h
    assert float(mask.sum()) > 0.5 * w * h
    f = img.float() / 255
    assert _colour_x(f, mask, RED) < _colour_x(f, mask, BLUE)
    outside = (mask == 0).clone()
    outside[:, 28:36] = False  # the background's own green/grey seam (JPEG)
    bg = np.asarray(pil)[outside.numpy()]
    expected = np.where(np.argwhere(outside.numpy())[:, 1:2] < 32, GREEN, GREY)
    assert np.abs(bg.astype(int) - expected).max() <= 6


def _unbatched(p):
    """B = 1 params as the unbatched kernel call takes them."""
    return type(p)(*(t.reshape(()) for t in p))


def test_a_config_object_is_passed_and_keywords_override_it(cache):
    from forcomp import RecombineConfig

    cfg = RecombineConfig(nonant=4, fg_size_mode="max", crop_scale="auto", hflip_prob="auto")
    by_config = ForComp(cache, "val", size=48, config=cfg, seed=3)
    by_keywords = ForComp(cache, "val", size=48, nonant=4, fg_size_mode="max", seed=3)
    assert by_config.config == by_keywords.config
    assert torch.equal(by_config[2][0], by_keywords[2][0])
    assert ForComp(cache, "val", size=48, config=cfg, nonant=0).config.nonant == 0
    assert ForComp(cache, "val", size=48, config=cfg, background="same").config.background == "same"
    with pytest.raises(TypeError, match="crop_scle"):
        ForComp(cache, "val", size=48, crop_scle=(0.5, 1.0))


def test_auto_crop_and_flip_are_resolved_by_the_config():
    from forcomp import RecombineConfig

    auto = RecombineConfig(crop_scale="auto", hflip_prob="auto")
    train, val = auto.resolved("train", (32, 32)), auto.resolved("val", (32, 32))
    assert (train.crop_scale, train.hflip_prob, train.fused) == ((0.08, 1.0), 0.5, True)
    assert (val.crop_scale, val.hflip_prob, val.fused) == (None, 0.0, False)
    per_sample = auto.resolved("train", None)
    assert (per_sample.crop_scale, per_sample.hflip_prob) == (None, 0.0)
    with pytest.raises(ValueError, match="need size"):
        RecombineConfig(hflip_prob=0.5).resolved("train", None)
    with pytest.raises(ValueError, match="resolved"):
        _ = auto.fused
