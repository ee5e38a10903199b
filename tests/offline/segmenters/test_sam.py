"""SAM segmenter: checkpoint → architecture, batching, masks, errors; a full build with SAM + LaMa."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # _tiny_models
from _tiny_models import LAMA_FILE, SAM_FILE, make_sam, weights_with  # noqa: E402
from scenes import blob_folder, noise_images  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.masks import clean_mask  # noqa: E402
from forcomp.offline.segmenters import SEGMENTERS  # noqa: E402
from forcomp.offline.segmenters.sam import SamSegmenter, build_sam_segmenter  # noqa: E402
from forcomp.offline.segmenters.sam_checkpoint import infer_sam_config, load_sam  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _skip_without(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.fixture
def sam_weights(tmp_path_factory, tmp_path) -> Path:
    return weights_with(tmp_path_factory, tmp_path / "weights", SAM_FILE)


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_config_inferred_from_official_shapes(variant):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # real shapes, no memory, no weights
        sd = sam_model_registry[variant]().state_dict()
    expected = {
        "vit_b": (768, 12, 12, [2, 5, 8, 11]),
        "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
        "vit_h": (1280, 32, 16, [7, 15, 23, 31]),
    }[variant]
    cfg = infer_sam_config(sd, path=Path(f"{variant}.pth"))
    got = (
        cfg["encoder_embed_dim"],
        cfg["encoder_depth"],
        cfg["encoder_num_heads"],
        cfg["encoder_global_attn_indexes"],
    )
    assert got == expected


def test_tiny_checkpoint_loads_under_official_name(tmp_path):
    path = make_sam(tmp_path / SAM_FILE, depth=3, embed_dim=48, heads=3, global_attn=(1,))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    cfg = infer_sam_config(sd, path=path)
    assert cfg == {
        "encoder_embed_dim": 48,
        "encoder_depth": 3,
        "encoder_num_heads": 3,
        "encoder_global_attn_indexes": [1],
    }
    seg = build_sam_segmenter(weights_dir=tmp_path, device="cpu")
    assert seg.weights_id == SAM_FILE and seg.name == "sam"
    loaded = seg.predictor.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items()), "weights must be the file's"


@pytest.mark.parametrize("device", DEVICES)
def test_segment_batch(sam_weights, device):
    _skip_without(device)
    seg = SEGMENTERS.build("sam", weights_dir=sam_weights, device=device, encoder_batch_size=2)
    assert isinstance(seg, SamSegmenter)
    assert seg.device.type == torch.device(device).type
    calls: list[tuple[int, ...]] = []
    seg.predictor.model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    imgs = noise_images()
    out = seg.segment(imgs, ["n01440764"] * 3)
    # the image encoder saw the images in batches of encoder_batch_size, at SAM's 1024 input
    assert calls == [(2, 3, 1024, 1024), (1, 3, 1024, 1024)]
    assert len(out) == 3
    for img, cands in zip(imgs, out, strict=True):
        assert 0 < len(cands) <= 3
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
        for c in cands:
            assert c.mask.shape == img.shape[:2] and c.mask.dtype == bool
            assert 0 < c.mask.mean() <= 0.9
            assert 0 <= c.score <= 1 and c.label in ("center", "image")
    assert seg.segment([], []) == []


def test_clean_mask_removes_specks_and_holes():
    m = np.zeros((100, 100), bool)
    m[20:80, 20:80] = True
    m[50, 50] = False  # a one-pixel hole
    m[5, 5] = True  # a speck
    m[90:95, 90:95] = True  # a small separate blob
    out = clean_mask(m, min_region_ratio=0.001, keep_frac=0.25)
    assert out[50, 50] and not out[5, 5] and not out[90:95, 90:95].any()
    assert out[20:80, 20:80].all()


def test_auto_picks_largest_checkpoint(tmp_path):
    make_sam(tmp_path / "sam_vit_b_01ec64.pth", global_attn=())
    make_sam(tmp_path / "sam_vit_l_0b3195.pth", global_attn=())
    assert build_sam_segmenter(weights_dir=tmp_path, device="cpu").weights_id == "sam_vit_l_0b3195.pth"
    assert build_sam_segmenter(weights_dir=tmp_path, device="cpu", model="vit_b").weights_id == SAM_FILE


def test_missing_checkpoint_names_expected_path(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        build_sam_segmenter(weights_dir=tmp_path, device="cpu")
    msg = str(e.value)
    assert str(tmp_path / "sam_vit_h_4b8939.pth") in msg and str(tmp_path / SAM_FILE) in msg
    assert "segment-anything" in msg
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / SAM_FILE).replace(".", r"\.")):
        build_sam_segmenter(weights_dir=tmp_path, device="cpu", model="vit_b")


def test_wrong_checkpoint_names_file(tmp_path):
    import torchvision

    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / SAM_FILE)
    with pytest.raises(ForcompError, match=r"sam_vit_b_01ec64\.pth is not a segment-anything checkpoint"):
        build_sam_segmenter(weights_dir=tmp_path, device="cpu")
    (tmp_path / SAM_FILE).write_bytes(b"truncated download")
    with pytest.raises(ForcompError, match=r"cannot load SAM checkpoint .*sam_vit_b_01ec64\.pth"):
        build_sam_segmenter(weights_dir=tmp_path, device="cpu")


def test_bad_options_raise(sam_weights):
    with pytest.raises(ValueError, match="prompts"):
        build_sam_segmenter(weights_dir=sam_weights, device="cpu", prompts=["points"])
    with pytest.raises(ValueError, match="max_candidates"):
        build_sam_segmenter(weights_dir=sam_weights, device="cpu", max_candidates=0)


def test_registry_auto(tmp_path_factory, tmp_path):
    from forcomp.offline.inpainters import INPAINTERS

    empty = tmp_path / "empty"
    empty.mkdir()
    assert SEGMENTERS.resolve("auto", empty).name == "classical"
    assert INPAINTERS.resolve("auto", empty).name == "telea"
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE, LAMA_FILE)
    assert SEGMENTERS.resolve("auto", w).name == "sam"
    assert INPAINTERS.resolve("auto", w).name == "lama"


@pytest.mark.slow
def test_full_build_sam_lama(tmp_path_factory, tmp_path):
    """A complete build through SAM + LaMa (+ the sam-score scorer): files, index provenance, the fill."""
    from PIL import Image

    from forcomp.cache.index import read_index
    from forcomp.cache.layout import CacheLayout
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    w = weights_with(tmp_path_factory, tmp_path / "weights", SAM_FILE, LAMA_FILE)
    src = blob_folder(tmp_path / "src")
    cfg = BuildConfig(
        split="val",
        segmenter="auto",
        inpainter="auto",
        weights_dir=str(w),
        device="cpu",
        batch_size=3,
        scorer="sam-score",
    )
    summary = build_cache(src, tmp_path / "cache", cfg)
    assert summary.exit_code == 0, summary.format()
    assert (summary.segmenter, summary.inpainter) == ("sam", "lama")
    layout = CacheLayout(tmp_path / "cache", "val")
    index = read_index(layout)
    assert len(index) == 4
    ratios = json.loads(layout.ratios_path.read_text())
    for key, rec in index.items():
        assert rec.status == "ok", rec.message
        assert (rec.segmenter, rec.segmenter_weights) == ("sam", SAM_FILE)
        assert (rec.inpainter, rec.inpainter_weights) == ("lama", LAMA_FILE)
        assert ratios[key] == pytest.approx(rec.ratio)
        fg = Image.open(layout.fg_path(rec.cls, rec.stem))
        bg = np.asarray(Image.open(layout.bg_path(rec.cls, rec.stem)).convert("RGB")).astype(int)
        assert fg.mode == "RGBA" and bg.shape[:2] == (48, 64)
        # the tiny LaMa paints holes magenta: the object's box in the background shows it
        x0, y0, x1, y1 = rec.bbox
        alpha = np.asarray(fg)[..., 3] > 0
        core = bg[y0:y1, x0:x1][alpha]
        assert (np.abs(core - [255, 0, 255]).sum(-1) < 90).mean() > 0.5


# ----------------------------------------------------------------------------- encoder batch vs memory


@pytest.fixture
def global_sam(tmp_path) -> Path:
    """A tiny SAM whose second block attends globally over the 64×64 tokens, as ViT-B/L/H do."""
    return make_sam(tmp_path / SAM_FILE, depth=2, embed_dim=32, heads=2, global_attn=(1,))


def test_encoder_batch_follows_free_memory(global_sam, monkeypatch):
    from forcomp.offline.segmenters import sam_predictor as sam_mod

    with torch.device("meta"):
        from segment_anything import sam_model_registry

        vit_h = sam_model_registry["vit_h"]().image_encoder
    # a global block's attention maps dominate: 3 maps of heads x 4096 x 4096 per image
    assert sam_mod.encoder_bytes_per_image(vit_h, dtype_bytes=2) >= 3 * 16 * 4096**2 * 2
    assert sam_mod.encoder_bytes_per_image(vit_h, dtype_bytes=4) > 3 * 2**30
    enc = load_sam(global_sam).image_encoder
    per_image = sam_mod.encoder_bytes_per_image(enc, dtype_bytes=4)
    assert per_image >= 3 * 2 * 4096**2 * 4, "the tiny model's global block is counted"
    queried: list[torch.device] = []
    for images_that_fit, expected in ((3, 3), (0, 1), (100, 16)):
        free = int((images_that_fit * per_image + per_image // 2) / 0.6)

        def fake_free(device, free=free):
            queried.append(device)
            return free

        monkeypatch.setattr(sam_mod, "free_memory_bytes", fake_free)
        seg = build_sam_segmenter(weights_dir=global_sam.parent, device="cpu")
        assert seg.predictor.encoder_batch_size == expected
    # the encoder then sees batches of the chosen size (last one: 3 images fit, 4 to encode)
    monkeypatch.setattr(sam_mod, "free_memory_bytes", lambda device: int(3.5 * per_image / 0.6))
    seg = build_sam_segmenter(weights_dir=global_sam.parent, device="cpu")
    calls: list[int] = []
    seg.predictor.model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    seg.predictor.embed(noise_images() + noise_images()[:1])
    assert calls == [3, 1]
    assert queried and all(d.type == "cpu" for d in queried)
    # an explicit batch is kept; no query then
    queried.clear()
    monkeypatch.setattr(sam_mod, "free_memory_bytes", lambda device: queried.append(device))
    seg = build_sam_segmenter(weights_dir=global_sam.parent, device="cpu", encoder_batch_size=5)
    assert seg.predictor.encoder_batch_size == 5 and not queried
    with pytest.raises(ValueError, match="encoder_batch_size"):
        build_sam_segmenter(weights_dir=global_sam.parent, device="cpu", encoder_batch_size=0)


def test_out_of_memory_batch_is_split_and_retried(global_sam, monkeypatch):
    imgs = noise_images()  # 3 images
    ref = build_sam_segmenter(weights_dir=global_sam.parent, device="cpu", encoder_batch_size=1)
    want_emb = ref.predictor.embed(imgs)
    want = ref.segment(imgs, ["x"] * 3)

    seg = build_sam_segmenter(weights_dir=global_sam.parent, device="cpu", encoder_batch_size=3)
    enc = seg.predictor.model.image_encoder
    real_forward = enc.forward
    seen: list[int] = []

    def forward_with_limit(x):
        seen.append(x.shape[0])
        if x.shape[0] > 1:  # the device holds one image at a time
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real_forward(x)

    monkeypatch.setattr(enc, "forward", forward_with_limit)
    emb = seg.predictor.embed(imgs)
    assert seen == [3, 1, 2, 1, 1], "3 fails, halves 1 + 2, and the 2 again as 1 + 1"
    torch.testing.assert_close(emb, want_emb, rtol=1e-5, atol=1e-5)
    assert seg.predictor.encoder_batch_size == 1, "later batches use the size that fitted"
    seen.clear()
    got = seg.segment(imgs, ["x"] * 3)
    assert seen == [1] * 3
    for g, w in zip(got, want, strict=True):
        assert [c.label for c in g] == [c.label for c in w]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(g, w, strict=True))

    # a CPU allocator failure counts as out of memory too; a single image that does not fit, or
    # another error, is raised
    def cpu_oom(x):
        if x.shape[0] > 1:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
            )
        return real_forward(x)

    seg.predictor.encoder_batch_size = 2
    monkeypatch.setattr(enc, "forward", cpu_oom)
    torch.testing.assert_close(seg.predictor.embed(imgs[:2]), want_emb[:2], rtol=1e-5, atol=1e-5)

    def always_oom(x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(enc, "forward", always_oom)
    with pytest.raises(torch.OutOfMemoryError):
        seg.predictor.embed(imgs[:2])

    def other_error(x):
        raise RuntimeError("shape mismatch")

    seg.predictor.encoder_batch_size = 2
    monkeypatch.setattr(enc, "forward", other_error)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        seg.predictor.embed(imgs[:2])


@pytest.mark.gpu
def test_encoder_batch_from_cuda_free_memory(global_sam):
    """On CUDA the batch follows ``torch.cuda.mem_get_info``; the encoder then runs at that batch."""
    _skip_without("cuda")
    from forcomp.offline.segmenters import sam_predictor as sam_mod

    seg = build_sam_segmenter(weights_dir=global_sam.parent, device="cuda")
    free, _ = torch.cuda.mem_get_info()
    per_image = sam_mod.encoder_bytes_per_image(seg.predictor.model.image_encoder, dtype_bytes=2)
    expected = max(1, min(16, int(free * 0.6) // per_image))
    assert abs(seg.predictor.encoder_batch_size - expected) <= 1  # free memory moves a little
    emb = seg.predictor.embed(noise_images())
    assert emb.shape == (3, 256, 64, 64) and emb.device.type == "cuda"


def test_free_memory_query_on_cpu():
    import os

    from forcomp.offline.segmenters.sam_predictor import free_memory_bytes

    free = free_memory_bytes(torch.device("cpu"))
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert free is not None and 0 < free <= total
