"""Diffusers inpainter: local pipeline, batching by working size, determinism, only the hole changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # _tiny_models
from _tiny_models import SD_DIR, weights_with  # noqa: E402
from scenes import noise_with_holes  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.inpainters import INPAINTERS  # noqa: E402
from forcomp.offline.inpainters.diffusion import DiffusionInpainter, build_sd_inpainter  # noqa: E402

SIZES = ((48, 64), (64, 40), (48, 64))
MIDDLE = ((1, 4), (3, 4))  # the hole: the middle half of each side
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture
def sd_weights(tmp_path_factory, tmp_path) -> Path:
    return weights_with(tmp_path_factory, tmp_path / "w", SD_DIR)


@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_fills_the_hole(sd_weights, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    inp = INPAINTERS.build("sd", weights_dir=sd_weights, device=device, steps=2)
    assert isinstance(inp, DiffusionInpainter) and inp.weights_id == SD_DIR
    assert inp.pipe.unet.device.type == device
    assert inp.pipe.unet.dtype == (torch.float16 if device == "cuda" else torch.float32)
    assert inp.work_px == 32  # the tiny UNet's sample_size 16 × VAE scale 2
    calls: list[int] = []
    inp.pipe.unet.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    imgs, masks = noise_with_holes(SIZES, rows=MIDDLE, cols=MIDDLE)
    out = inp.inpaint(imgs, masks)
    # landscape 48×64 images share a working size (24×32) and one batch; the portrait runs alone.
    # Per step the UNet sees 2×batch latents (classifier-free guidance).
    assert sorted(set(calls)) == [2, 4] and calls.count(2) == calls.count(4) >= 2
    for im, m, o in zip(imgs, masks, out, strict=True):
        assert o.shape == im.shape and o.dtype == np.uint8
        assert np.array_equal(o[~m], im[~m])
        assert np.abs(o[m].astype(int) - im[m]).mean() > 5


def test_deterministic_whatever_the_batch(sd_weights):
    inp = build_sd_inpainter(weights_dir=sd_weights, device="cpu", steps=2)
    imgs, masks = noise_with_holes(SIZES, rows=MIDDLE, cols=MIDDLE)
    a = inp.inpaint(imgs, masks)
    b = inp.inpaint(imgs[::-1], masks[::-1])[::-1]
    c = inp.inpaint(imgs[:1], masks[:1])
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(a[0], c[0])


def test_work_size():
    class _Pipe:
        class unet:  # noqa: N801
            class config:  # noqa: N801
                sample_size = 64

        vae_scale_factor = 8

    inp = DiffusionInpainter(_Pipe(), torch.device("cpu"), weights_id="x")
    assert inp.work_px == 512
    assert inp.work_size(375, 500) == (384, 512) and inp.work_size(500, 333) == (512, 344)
    with pytest.raises(ValueError, match="steps"):
        DiffusionInpainter(_Pipe(), torch.device("cpu"), weights_id="x", steps=0)


def test_missing_pipeline_names_paths(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        build_sd_inpainter(weights_dir=tmp_path, device="cpu")
    assert str(tmp_path / "stable-diffusion-2-inpainting") in str(e.value)
    assert "stabilityai/stable-diffusion-2-inpainting" in str(e.value)


def test_broken_pipeline_dir_names_it(tmp_path):
    d = tmp_path / SD_DIR
    d.mkdir()
    (d / "model_index.json").write_text(
        json.dumps(
            {"_class_name": "StableDiffusionInpaintPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
        )
    )
    with pytest.raises(
        ForcompError, match=r"stable-diffusion-2-inpainting/unet is missing \(component 'unet'"
    ):
        build_sd_inpainter(weights_dir=tmp_path, device="cpu")
    # components present (weights checked elsewhere) but not a loadable pipeline: the loader names the dir
    (d / "unet").mkdir()
    with pytest.raises(
        ForcompError, match=r"cannot load the inpainting pipeline from .*stable-diffusion-2-inpainting"
    ):
        build_sd_inpainter(weights_dir=tmp_path, device="cpu")
