"""The paste kernel: contract, batching, reference equivalence, compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from forcomp.recombine.functional import composite, gaussian_matrix, resample_matrix
from forcomp.recombine.params import RecombineConfig, RecombineParams, sample_params

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
METHODS = ["window", "matrix"]


def _skip_no_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")


def _scene(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    hf, wf = 40, 56
    fg = torch.zeros(B, 4, hf, wf, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(hf), torch.arange(wf), indexing="ij")
    hw = []
    for i in range(B):
        h, w = 20 + 3 * i, 30 + 4 * i
        hw.append([h, w])
        disk = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1
        fg[i, 0] = (xx * 4 + 20 * i).clamp(0, 255).to(torch.uint8)
        fg[i, 1] = (yy * 5).clamp(0, 255).to(torch.uint8)
        fg[i, 2] = 120
        fg[i, 3] = disk.to(torch.uint8) * 255
        fg[i, :, h:, :] = 0
        fg[i, :, :, w:] = 0
    hw = torch.tensor(hw)
    bg = torch.randint(0, 256, (B, 3, 64, 80), generator=g, dtype=torch.uint8)
    ones = torch.ones(B)
    fill = fg[:, 3].float().sum((1, 2)) / 255 / (hw[:, 0] * hw[:, 1])
    params = sample_params(
        0.15 * ones, 0.2 * ones, hw, fill, (64, 80), RecombineConfig(mask_smoothing_sigma=2.0), generator=g
    )
    return fg, hw, bg, params


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16, torch.bfloat16])
def test_dtype_device_preserved_and_input_untouched(device, dtype, method):
    _skip_no_cuda(device)
    fg, hw, bg, p = _scene()
    if dtype.is_floating_point:
        fg, bg = fg.to(dtype) / 255, bg.to(dtype) / 255
    fg, bg, hw = fg.to(device), bg.to(device), hw.to(device)
    p = RecombineParams(*(t.to(device) for t in p))
    versions = (fg._version, bg._version)
    fg_copy, bg_copy = fg.clone(), bg.clone()
    img, mask = composite(fg, hw, bg, p, method=method)
    assert img.dtype == dtype and img.device.type == device and img.shape == bg.shape
    assert mask.shape == (bg.shape[0], 64, 80) and mask.device.type == device
    assert (fg._version, bg._version) == versions and torch.equal(fg, fg_copy) and torch.equal(bg, bg_copy)


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_sample_and_unbatched(method):
    fg, hw, bg, p = _scene()
    img, mask = composite(fg, hw, bg, p, method=method)
    for i in range(fg.shape[0]):
        pi = RecombineParams(*(t[i] for t in p))
        one, m = composite(fg[i, :, : hw[i, 0], : hw[i, 1]], hw[i], bg[i], pi, method=method)
        assert one.shape == bg[i].shape
        assert (one.int() - img[i].int()).abs().max() <= 1
        assert torch.allclose(m, mask[i], atol=1e-4)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


@pytest.mark.parametrize("method", METHODS)
def test_matches_pil_reference(method):
    """PIL resize + paste with the same sampled geometry (no feathering): PSNR >= 30 dB."""
    fg, hw, bg, p = _scene(seed=3)
    p = p._replace(sigma=torch.zeros_like(p.sigma))
    img, _ = composite(fg, hw, bg, p, method=method)
    for i in range(fg.shape[0]):
        h, w = hw[i].tolist()
        f = Image.fromarray(fg[i, :, :h, :w].permute(1, 2, 0).numpy(), "RGBA")
        W, H = round(p.w[i].item()), round(p.h[i].item())
        f = f.resize((W, H), Image.BILINEAR)
        ref = Image.fromarray(bg[i].permute(1, 2, 0).numpy(), "RGB")
        ref.paste(f.convert("RGB"), (round(p.x0[i].item()), round(p.y0[i].item())), f.split()[-1])
        assert _psnr(np.asarray(ref), img[i].permute(1, 2, 0).numpy()) >= 30


@pytest.mark.parametrize("method", METHODS)
def test_replay_is_bit_identical(method):
    fg, hw, bg, p = _scene()
    a, ma = composite(fg, hw, bg, p, method=method)
    b, mb = composite(fg, hw, bg, p, method=method)
    assert torch.equal(a, b) and torch.equal(ma, mb)


@pytest.mark.slow
def test_compiled_equals_eager():
    fg, hw, bg, p = _scene(B=3)
    eager, _ = composite(fg, hw, bg, p, method="matrix")  # under compile, "auto" is the matrix path
    compiled = torch.compile(composite, fullgraph=True)
    out, _ = compiled(fg, hw, bg, p)
    assert (out.int() - eager.int()).abs().max() <= 1


@pytest.mark.gpu
def test_cpu_matches_cuda():
    _skip_no_cuda("cuda")
    fg, hw, bg, p = _scene()
    cpu, _ = composite(fg, hw, bg, p, method="matrix")
    gpu, _ = composite(fg.cuda(), hw.cuda(), bg.cuda(), RecombineParams(*(t.cuda() for t in p)))
    assert (cpu.int() - gpu.cpu().int()).abs().max() <= 2


@pytest.mark.gpu
def test_autocast():
    _skip_no_cuda("cuda")
    fg, hw, bg, p = _scene()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = composite(
            fg.cuda().float() / 255,
            hw.cuda(),
            bg.cuda().float() / 255,
            RecombineParams(*(t.cuda() for t in p)),
        )
    assert out.dtype == torch.float32


@pytest.mark.parametrize("n_valid, length", [(100.0, 37.0), (100.0, 250.0), (64.0, 64.0), (200.0, 14.0)])
def test_resample_matrix_keeps_constants_and_zeroes_padding(n_valid, length):
    """A constant foreground stays constant over the whole pasted span, up to its border pixels
    (any shrink or zoom), nothing is read from the padding, and nothing lands outside the span."""
    start = 30.0
    m = resample_matrix(224, 256, torch.tensor([n_valid]), torch.tensor([start]), torch.tensor([length]))[0]
    inside = m[int(start) : int(start + length)]
    torch.testing.assert_close(inside.sum(1), torch.ones(len(inside)), atol=1e-5, rtol=0)
    assert m[:, int(n_valid) :].abs().sum() == 0
    assert m[: int(start)].abs().sum() == 0 and m[int(start + length) :].abs().sum() == 0
    # shrinking spreads each output pixel over ~2·n_valid/length source pixels (anti-aliasing)
    taps = int((m[int(start) + 2] > 0).sum())
    assert taps >= (1.8 * n_valid / length if n_valid > length else 1)


def test_gaussian_matrix_rows_sum_to_one_and_sigma_zero_is_identity():
    g = gaussian_matrix(50, torch.tensor([0.0, 3.0]), 12)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 50))
    torch.testing.assert_close(g[0], torch.eye(50))
    assert (g[1].diagonal(3) > 0.5 * g[1].diagonal(0)[:-3]).all()


@pytest.mark.parametrize("seed", range(3))
def test_window_path_agrees_with_matrix_path(seed):
    """The CPU window path and the batched matrix path give the same picture (feathering on,
    objects leaving the canvas): PSNR >= 55 dB per image, masks within 0.02 everywhere."""
    fg, hw, bg, p = _scene(seed=seed)
    p = p._replace(x0=p.x0 - 10 * (seed == 1), y0=p.y0 + 30 * (seed == 2))  # objects jutting out
    a, ma = composite(fg, hw, bg, p, method="matrix")
    b, mb = composite(fg, hw, bg, p, method="window")
    for i in range(fg.shape[0]):
        assert _psnr(a[i].numpy(), b[i].numpy()) >= 55
    assert (ma - mb).abs().max() < 0.02


def test_auto_is_window_on_cpu_and_float_output_skips_uint8_round_trip():
    fg, hw, bg, p = _scene()
    auto, _ = composite(fg, hw, bg, p)
    window, _ = composite(fg, hw, bg, p, method="window")
    assert torch.equal(auto, window)
    f, _ = composite(fg, hw, bg, p, out_dtype=torch.float32)
    assert f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    assert (f * 255 - auto.float()).abs().max() <= 0.5 + 1e-4  # only uint8 rounding apart
    with pytest.raises(ValueError, match="method"):
        composite(fg, hw, bg, p, method="pil")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_dtype"):
        composite(fg, hw, bg.float() / 255, p, out_dtype=torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_does_not_lower_the_kernels_precision(device):
    """Under a training script's autocast the matmuls would drop to bfloat16 (8-bit mantissa):
    the kernel computes in float32 regardless and returns the input's dtype."""
    _skip_no_cuda(device)
    fg, hw, bg, p = _scene()
    fg, bg, hw = (fg.float() / 255).to(device), (bg.float() / 255).to(device), hw.to(device)
    p = RecombineParams(*(t.to(device) for t in p))
    for method in METHODS:
        ref, _ = composite(fg, hw, bg, p, method=method)
        with torch.autocast(device, dtype=torch.bfloat16):
            out, _ = composite(fg, hw, bg, p, method=method)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_window_path_resizes_uint8_in_float_off_the_cpu(monkeypatch):
    """CUDA has no uint8 antialiased ``interpolate``: off the CPU the window path converts the
    foreground to float before resizing. Checked here by making the CPU take that branch: the
    picture stays the uint8 path's (rounding apart), and the resize really gets float input."""
    import forcomp.recombine.functional as fn

    assert fn._resize_keeps_uint8(torch.device("cpu"))
    assert not fn._resize_keeps_uint8(torch.device("cuda"))
    assert not fn._resize_keeps_uint8(torch.device("meta"))
    fg, hw, bg, p = _scene()
    ref, mref = composite(fg, hw, bg, p, method="window")
    seen = []
    real = fn.F.interpolate

    def spy(x, *a, **k):
        seen.append(x.dtype)
        return real(x, *a, **k)

    monkeypatch.setattr(fn, "_resize_keeps_uint8", lambda device: False)
    monkeypatch.setattr(fn.F, "interpolate", spy)
    out, m = composite(fg, hw, bg, p, method="window")
    assert seen and all(d == torch.float32 for d in seen)
    assert out.dtype == torch.uint8
    assert (out.int() - ref.int()).abs().max() <= 2
    assert (m - mref).abs().max() < 0.02


@pytest.mark.gpu
def test_window_path_runs_uint8_on_cuda():
    _skip_no_cuda("cuda")
    fg, hw, bg, p = _scene()
    ref, _ = composite(fg, hw, bg, p, method="window")
    out, _ = composite(
        fg.cuda(), hw.cuda(), bg.cuda(), RecombineParams(*(t.cuda() for t in p)), method="window"
    )
    assert out.dtype == torch.uint8 and out.is_cuda
    assert (out.cpu().int() - ref.int()).abs().max() <= 2
