"""The paste kernel on the GPU against the CPU reference, per dtype, with masks and determinism.

Every test also runs with ``device="cpu"`` (where it checks the matrix path against the window
path on the same CPU), so the comparisons themselves are exercised without a GPU; the ``cuda``
cases run in the GPU check (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forcomp.recombine.functional import composite
from forcomp.recombine.params import RecombineConfig, RecombineParams, sample_params

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
DTYPES = [torch.uint8, torch.float32, torch.float16, torch.bfloat16]
# half types store 8 (bf16) or 11 (fp16) significant bits: the output itself is rounded to them
MIN_PSNR = {torch.uint8: 50.0, torch.float32: 50.0, torch.float16: 48.0, torch.bfloat16: 40.0}


def _need(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _scene(
    B: int = 8, seed: int = 0, *, interior: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, RecombineParams]:
    """Textured, asymmetric objects (a flip or shift of the object shows) on noisy backgrounds.

    ``interior``: every object and its feathered edge stay 8 px inside the canvas (the window
    and matrix paths treat the canvas border differently when an edge is feathered across it).
    """
    g = torch.Generator().manual_seed(seed)
    hf, wf = 48, 64
    fg = torch.zeros(B, 4, hf, wf, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(hf), torch.arange(wf), indexing="ij")
    hw = []
    for i in range(B):
        h, w = 24 + 2 * i, 30 + 4 * i
        hw.append([h, w])
        blob = ((yy - h / 3) / (h / 2)) ** 2 + ((xx - w / 3) / (w / 2)) ** 2 <= 1  # off-centre: not symmetric
        fg[i, 0] = (xx * 4 + 17 * i).clamp(0, 255).to(torch.uint8)
        fg[i, 1] = (yy * 5).clamp(0, 255).to(torch.uint8)
        fg[i, 2] = torch.randint(0, 256, (hf, wf), generator=g, dtype=torch.uint8)
        fg[i, 3] = blob.to(torch.uint8) * 255
        fg[i, :, h:, :] = 0
        fg[i, :, :, w:] = 0
    hw_t = torch.tensor(hw)
    bg = torch.randint(0, 256, (B, 3, 72, 96), generator=g, dtype=torch.uint8)
    ones = torch.ones(B)
    fill = fg[:, 3].float().sum((1, 2)) / 255 / (hw_t[:, 0] * hw_t[:, 1])
    cfg = RecombineConfig(mask_smoothing_sigma=3.0, rel_jut_out=0.2)
    params = sample_params(0.1 * ones, 0.3 * ones, hw_t, fill, (72, 96), cfg, generator=g)
    if interior:
        margin = 8.0
        w, h = params.w.clamp(max=96 - 2 * margin), params.h.clamp(max=72 - 2 * margin)
        u = torch.rand(2, B, generator=g)
        params = params._replace(
            x0=margin + u[0] * (96 - 2 * margin - w),
            y0=margin + u[1] * (72 - 2 * margin - h),
            w=w,
            h=h,
            sigma=params.sigma.clamp(max=2.5),
        )
    return fg, hw_t, bg, params


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * float(np.log10(255.0**2 / max(mse, 1e-12)))


def _on(device: str, dtype: torch.dtype, fg, hw, bg, p):  # noqa: ANN001, ANN202
    if dtype.is_floating_point:
        fg, bg = fg.to(dtype) / 255, bg.to(dtype) / 255
    return fg.to(device), hw.to(device), bg.to(device), RecombineParams(*(t.to(device) for t in p))


def _as_255(img: torch.Tensor) -> torch.Tensor:
    return img.float().cpu() if img.dtype == torch.uint8 else img.float().cpu() * 255


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matrix_kernel_on_device_matches_it_on_the_cpu(device: str, dtype: torch.dtype) -> None:
    """Same algorithm, other device: objects jutting out of the canvas, feathered edges, each dtype."""
    _need(device)
    fg, hw, bg, p = _scene()
    ref, ref_mask = composite(fg, hw, bg, p, method="matrix")
    img, mask = composite(*_on(device, dtype, fg, hw, bg, p), method="matrix")
    assert img.dtype == dtype and img.device.type == device
    if dtype in (torch.uint8, torch.float32):
        assert (_as_255(img) - ref.float()).abs().max() <= 1.0 + 1e-3
    for i in range(fg.shape[0]):
        assert _psnr(_as_255(img[i]), ref[i].float()) >= MIN_PSNR[dtype], f"image {i}"
    assert (mask.float().cpu() - ref_mask).abs().max() < 0.01


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_matrix_kernel_matches_the_cpu_window_reference(device: str, dtype: torch.dtype) -> None:
    """The batched kernel on ``device`` gives the CPU window path's picture and mask."""
    _need(device)
    fg, hw, bg, p = _scene(interior=True)
    ref, ref_mask = composite(fg, hw, bg, p, method="window")
    img, mask = composite(*_on(device, dtype, fg, hw, bg, p), method="matrix")
    assert img.dtype == dtype and img.device.type == device
    for i in range(fg.shape[0]):
        assert _psnr(_as_255(img[i]), ref[i].float()) >= MIN_PSNR[dtype], f"image {i}"
    assert (mask.float().cpu() - ref_mask).abs().max() < 0.02


@pytest.mark.parametrize("device", DEVICES)
def test_auto_method_works_for_uint8_on_every_device(device: str) -> None:
    """``auto`` must pick a path that exists for uint8 on the device (CUDA has no uint8 antialias)."""
    _need(device)
    fg, hw, bg, p = _scene(interior=True)
    ref, _ = composite(fg, hw, bg, p, method="window")
    img, _ = composite(*_on(device, torch.uint8, fg, hw, bg, p))
    assert img.dtype == torch.uint8
    assert _psnr(img.cpu().float(), ref.float()) >= 50


@pytest.mark.parametrize("device", DEVICES)
def test_same_inputs_same_output_bit_for_bit(device: str) -> None:
    _need(device)
    args = _on(device, torch.uint8, *_scene())
    a, ma = composite(*args, method="matrix")
    b, mb = composite(*args, method="matrix")
    assert torch.equal(a, b) and torch.equal(ma, mb)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_equals_per_sample(device: str) -> None:
    _need(device)
    fg, hw, bg, p = _on(device, torch.float32, *_scene())
    batch, _ = composite(fg, hw, bg, p, method="matrix")
    for i in range(fg.shape[0]):
        one, _ = composite(fg[i], hw[i], bg[i], RecombineParams(*(t[i] for t in p)), method="matrix")
        torch.testing.assert_close(one, batch[i], atol=2e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_equals_eager(device: str) -> None:
    _need(device)
    args = _on(device, torch.uint8, *_scene())
    eager, _ = composite(*args, method="matrix")
    torch._dynamo.reset()
    compiled = torch.compile(composite, fullgraph=True)
    out, _ = compiled(*args, method="matrix")
    assert (out.int() - eager.int()).abs().max() <= 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_keeps_float32_math(dtype: torch.dtype) -> None:
    _need("cuda")
    fg, hw, bg, p = _on("cuda", torch.float32, *_scene())
    ref, _ = composite(fg, hw, bg, p, method="matrix")
    with torch.autocast("cuda", dtype=dtype):
        out, _ = composite(fg, hw, bg, p, method="matrix")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
