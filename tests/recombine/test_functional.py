"""The paste kernel: contract, batching, compile, and agreement with independent references.

The references resize the premultiplied object with PIL (float images, triangle filter), feather
its alpha with a numpy Gaussian and blend by the documented formula; their objects are random
textures with an L-shaped, graded alpha, so a flip, a transposition or a swapped channel changes
the picture. Fast enough to run for every mutant of ``forcomp/recombine/functional.py``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from forcomp.recombine import functional
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


# ---------------------------------------------------------------- against independent references


def _object(h: int, w: int, seed: int) -> np.ndarray:
    """(4, h, w) float RGBA in [0, 1]: random texture, L-shaped alpha graded from left to right."""
    rng = np.random.default_rng(seed)
    rgba = rng.random((4, h, w))
    alpha = np.zeros((h, w))
    alpha[: h // 3, :] = 1.0  # the top bar of an upside-down L
    alpha[:, : w // 3] = 1.0  # its left stem
    alpha *= np.linspace(0.75, 1.0, w)[None, :]  # strongest at the right edge
    alpha[h // 2, w - 1] = 0.8  # a lone pixel on the right
    rgba[3] = alpha
    return rgba


def _resize(plane: np.ndarray, w: int, h: int, resample=Image.BILINEAR) -> np.ndarray:
    return np.asarray(
        Image.fromarray(plane.astype(np.float32), "F").resize((w, h), resample), dtype=np.float64
    )


def _reference(fg: np.ndarray, bg: np.ndarray, box, sigma: float, r: int, resample=Image.BILINEAR):
    """Object ``fg`` (4, h, w) pasted on ``bg`` (3, H, W), both float [0, 1]: (image, mask)."""
    x, y, w, h = box
    prem = np.concatenate([fg[:3] * fg[3], fg[3:]])
    res = np.stack([_resize(p, w, h, resample) for p in prem])
    if resample == Image.BICUBIC:
        res[3] = res[3].clip(0, 1)
        res[:3] = np.minimum(res[:3].clip(0, None), res[3:4])
    a = res[3].clip(0, 1)
    if sigma > 0.05:
        d = np.arange(-r, r + 1)
        k = np.exp(-0.5 * (d / sigma) ** 2)
        k /= k.sum()
        p = np.pad(a, r)  # no object beyond its box
        rows = sum(k[t] * p[t : t + h, :] for t in range(2 * r + 1))
        blur = sum(k[t] * rows[:, t : t + w] for t in range(2 * r + 1))
        a_out = (2 * blur - 1).clip(0, 1)
    else:
        a_out = a
    rgb = (res[:3] / np.maximum(a, 1e-6)).clip(0, 1)
    H, W = bg.shape[1:]
    out, mask = bg.copy(), np.zeros((H, W))
    ya, yb, xa, xb = max(y, 0), min(y + h, H), max(x, 0), min(x + w, W)
    if ya < yb and xa < xb:
        sl = (slice(ya - y, yb - y), slice(xa - x, xb - x))
        ao, under = a_out[sl], bg[:, ya:yb, xa:xb]
        out[:, ya:yb, xa:xb] = under + ao * (rgb[(slice(None), *sl)] - under)
        mask[ya:yb, xa:xb] = ao
    return out, mask


def _params(boxes, sigmas):
    t = torch.tensor(boxes, dtype=torch.float32)
    return RecombineParams(x0=t[:, 0], y0=t[:, 1], w=t[:, 2], h=t[:, 3], sigma=torch.tensor(sigmas))


# boxes (x, y, w, h) on a 40 x 56 canvas: shrunk, enlarged, past the top-left, past the bottom-right,
# wider than the canvas, entirely outside
BOXES = [
    (5, 4, 14, 9),
    (20, 10, 33, 25),
    (60, 2, 10, 10),
    (45, 30, 18, 14),
    (-10, 8, 80, 12),
    (-6, -5, 20, 15),
]
SRC_HW = [(18, 25), (12, 16), (7, 9), (14, 19), (10, 30), (15, 21)]


def _textured_scene(seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    objs = [_object(h, w, seed + i) for i, (h, w) in enumerate(SRC_HW)]
    fg = np.zeros((len(objs), 4, 20, 32))  # padded bottom/right with *junk*: nothing may read it
    fg[:] = rng.random(fg.shape)
    for i, o in enumerate(objs):
        fg[i, :, : o.shape[1], : o.shape[2]] = o
    bg = rng.random((len(objs), 3, 40, 56))
    return objs, fg, torch.tensor(SRC_HW), bg


@pytest.mark.parametrize("method", ["window", "matrix"])
@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.4])
def test_float_paste_matches_the_reference(method, sigma):
    objs, fg, hw, bg = _textured_scene()
    R = 5  # the window path's 3-sigma support ceil(4.2) = 5 equals the radius: both truncate at 5
    p = _params(BOXES, [sigma] * len(BOXES))
    img, mask = composite(
        torch.tensor(fg, dtype=torch.float32),
        hw,
        torch.tensor(bg, dtype=torch.float32),
        p,
        method=method,
        smoothing_radius=R,
    )
    assert img.dtype == torch.float32 and mask.dtype == torch.float32 and img.shape == (6, 3, 40, 56)
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], sigma, R)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-4, err_msg=f"object {i}")
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-4, err_msg=f"mask {i}")
    assert torch.equal(img[2], torch.tensor(bg[2], dtype=torch.float32)) and not mask[2].any()  # outside


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_float64_paste_matches_the_reference_closely(method):
    objs, fg, hw, bg = _textured_scene(1)
    p = _params(BOXES, [2.0] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method=method, smoothing_radius=6)
    assert img.dtype == torch.float64 and mask.dtype == torch.float64
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], 2.0, 6)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6)  # PIL resizes in float32
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-6)


def test_window_feathering_reads_three_sigmas():
    """Window path: each object's blur is truncated at ceil(3 sigma) when that is under the radius."""
    objs, fg, hw, bg = _textured_scene(2)
    p = _params(BOXES, [1.0] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method="window", smoothing_radius=12)
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], 1.0, 3)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6)
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-6)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x * 255 + 0.5), 0, 255)


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_uint8_paste_rounds_to_the_reference(method):
    objs, fg, hw, bg = _textured_scene(3)
    fg8 = _to_u8(fg).astype(np.uint8)
    bg8 = _to_u8(bg).astype(np.uint8)
    p = _params(BOXES, [1.4] * 6)
    fgt, bgt = torch.tensor(fg8), torch.tensor(bg8)
    img, mask = composite(fgt, hw, bgt, p, method=method, smoothing_radius=5)
    assert img.dtype == torch.uint8 and mask.dtype == torch.float32
    assert torch.equal(fgt, torch.tensor(fg8)) and torch.equal(bgt, torch.tensor(bg8)), "inputs untouched"
    for i in range(6):
        h, w = SRC_HW[i]
        ref, ref_mask = _reference(fg8[i, :, :h, :w] / 255.0, bg8[i] / 255.0, BOXES[i], 1.4, 5)
        diff = np.abs(img[i].numpy().astype(float) - ref * 255)
        # the window path resizes premultiplied uint8 (rounded twice): at most 2 levels off
        assert diff.max() <= (0.5 + 1e-3 if method == "matrix" else 2.0), (i, diff.max())
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=0.012)
    # float output from uint8 inputs: [0, 1], no uint8 round trip
    imgf, maskf = composite(fgt, hw, bgt, p, method=method, smoothing_radius=5, out_dtype=torch.float32)
    assert imgf.dtype == torch.float32 and maskf.dtype == torch.float32
    assert torch.allclose(imgf * 255, img.float(), atol=0.5 + 1e-3)
    assert not torch.equal(imgf * 255, (imgf * 255).round()), "not rounded"


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_uint8_output_is_clamped_and_rounded(method):
    # an opaque white object over white and a black one over black: no wrap-around past 255 or 0
    fg = torch.zeros(2, 4, 8, 8, dtype=torch.uint8)
    fg[0] = 255
    fg[1, 3] = 255
    bg = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    bg[0] = 255
    img, _ = composite(
        fg, torch.tensor([[8, 8]] * 2), bg, _params([(2, 2, 11, 7)] * 2, [0.0, 0.0]), method=method
    )
    assert (img[0] == 255).all() and (img[1] == 0).all()
    # alpha 0.6 (153 / 255), grey 201 over black: 0.6 * 201 = 120.6, rounded to 121 (truncation gives 120)
    fg = torch.zeros(1, 4, 4, 4, dtype=torch.uint8)
    fg[0, :3] = 201
    fg[0, 3] = 153  # 0.6
    img, mask = composite(
        fg,
        torch.tensor([[4, 4]]),
        torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
        _params([(2, 2, 4, 4)], [0.0]),
        method=method,
    )
    assert (img[0, :, 2:6, 2:6] == 121).all() and (img[0, :, :2] == 0).all()
    assert torch.allclose(mask[0, 2:6, 2:6], torch.full((4, 4), 0.6), atol=1e-6)


@pytest.mark.parametrize("method", ["window", "matrix"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_half_outputs_close_to_float32(method, dtype):
    objs, fg, hw, bg = _textured_scene(4)
    p = _params(BOXES, [1.4] * 6)
    ref, ref_mask = composite(
        torch.tensor(fg, dtype=torch.float32),
        hw,
        torch.tensor(bg, dtype=torch.float32),
        p,
        method=method,
        smoothing_radius=5,
    )
    img, mask = composite(
        torch.tensor(fg, dtype=dtype), hw, torch.tensor(bg, dtype=dtype), p, method=method, smoothing_radius=5
    )
    assert img.dtype == dtype and mask.dtype == dtype
    assert (img.float() - ref).abs().max() < 0.02 and (mask.float() - ref_mask).abs().max() < 0.02


def test_unbatched_and_auto_and_autocast():
    objs, fg, hw, bg = _textured_scene(5)
    fgt, bgt = torch.tensor(fg, dtype=torch.float32), torch.tensor(bg, dtype=torch.float32)
    p = _params(BOXES, [1.4] * 6)
    win, wmask = composite(fgt, hw, bgt, p, method="window")
    mat, _ = composite(fgt, hw, bgt, p, method="matrix")
    auto, amask = composite(fgt, hw, bgt, p)
    assert torch.equal(auto, win) and torch.equal(amask, wmask), "auto is the window path on the CPU"
    assert not torch.equal(mat, win), "float rounding differs between the paths"
    one, one_mask = composite(fgt[1], hw[1], bgt[1], RecombineParams(*(t[1] for t in p)), method="matrix")
    assert one.shape == (3, 40, 56) and one_mask.shape == (40, 56)
    assert torch.allclose(one, mat[1], atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amat, _ = composite(fgt, hw, bgt, p, method="matrix")
    assert amat.dtype == torch.float32 and torch.allclose(amat, mat, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 1.4])
def test_bicubic_window_matches_pils_bicubic(sigma):
    objs, fg, hw, bg = _textured_scene(6)
    p = _params(BOXES, [sigma] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method="window", fg_filter="bicubic")
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], sigma, 5, Image.BICUBIC)  # ceil(3 * 1.4)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-3)
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-3)
    assert (mask >= 0).all() and (mask <= 1).all()


def test_window_path_in_float_off_the_cpu(monkeypatch):
    """Where the antialiased resize has no uint8 kernel (CUDA), uint8 objects are resized in float."""
    objs, fg, hw, bg = _textured_scene(7)
    fg8, bg8 = torch.tensor(_to_u8(fg).astype(np.uint8)), torch.tensor(_to_u8(bg).astype(np.uint8))
    p = _params(BOXES, [1.4] * 6)
    assert functional._resize_keeps_uint8(torch.device("cpu"))
    assert not functional._resize_keeps_uint8(torch.device("meta"))
    mat, _ = composite(fg8, hw, bg8, p, method="matrix", smoothing_radius=5)
    monkeypatch.setattr(functional, "_resize_keeps_uint8", lambda device: False)
    win, _ = composite(fg8, hw, bg8, p, method="window", smoothing_radius=5)
    assert (win.int() - mat.int()).abs().max() <= 1  # float resize: as exact as the matrix path


def test_refusals_name_the_value():
    fg, hw = torch.zeros(1, 4, 4, 4), torch.tensor([[4, 4]])
    bg, p = torch.zeros(1, 3, 8, 8), _params([(0, 0, 4, 4)], [0.0])
    with pytest.raises(
        ValueError, match=re.escape("method must be 'auto', 'matrix' or 'window', got 'loop'")
    ):
        composite(fg, hw, bg, p, method="loop")
    with pytest.raises(
        ValueError, match=re.escape("fg_filter must be 'bilinear' or 'bicubic', got 'nearest'")
    ):
        composite(fg, hw, bg, p, fg_filter="nearest")
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape("fg_filter='bicubic' needs method='window' (the matrix kernel is bilinear)")
        + "$",
    ):
        composite(fg, hw, bg, p, fg_filter="bicubic", method="matrix")
    with pytest.raises(
        ValueError,
        match=re.escape("out_dtype must be floating or bg's dtype (torch.float32), got torch.uint8"),
    ):
        composite(fg, hw, bg, p, out_dtype=torch.uint8)
    img, _ = composite(fg, hw, bg, p, out_dtype=torch.float32)  # bg's own dtype is fine
    assert img.dtype == torch.float32


# ---------------------------------------------------------------- the matrices


@pytest.mark.parametrize(("n_valid", "start", "length"), [(10, 3.0, 25.0), (30, -4.0, 11.0), (7, 5.0, 7.0)])
def test_resample_matrix_rows_are_pils_resize(n_valid, start, length):
    n_pad, n_out = 32, 24
    m = resample_matrix(
        n_out,
        n_pad,
        torch.tensor([float(n_valid)], dtype=torch.float64),
        torch.tensor([start], dtype=torch.float64),
        torch.tensor([length], dtype=torch.float64),
    )[0]
    assert m.shape == (n_out, n_pad) and m.dtype == torch.float64
    assert (m[:, n_valid:] == 0).all(), "nothing is read from the padding"
    x = np.random.default_rng(0).random(n_valid)
    ref = _resize(x[None], int(length), 1)[0]  # the row resized to length pixels, placed at start
    got = m[:, :n_valid].numpy() @ x
    for o in range(n_out):
        k = o - int(start)
        if 0 <= k < int(length):
            assert got[o] == pytest.approx(ref[k], abs=1e-6), o
            assert m[o].sum().item() == pytest.approx(1.0), "a constant stays constant"
        else:
            assert (m[o] == 0).all(), f"row {o} outside the span"


def test_gaussian_matrix_rows():
    sig = torch.tensor([1.5, 0.0], dtype=torch.float64)
    g = gaussian_matrix(9, sig, 3)
    assert g.shape == (2, 9, 9) and g.dtype == torch.float64
    d = np.arange(-3, 4)
    k = np.exp(-0.5 * (d / 1.5) ** 2)
    np.testing.assert_allclose(g[0, 4, 1:8].numpy(), k / k.sum(), rtol=1e-12)
    assert (g[0, 4, :1] == 0).all() and (g[0, 4, 8:] == 0).all(), "truncated at the radius"
    edge = np.exp(-0.5 * (np.arange(0, 4) / 1.5) ** 2)  # row 0 reads pixels 0..3 only, renormalised
    np.testing.assert_allclose(g[0, 0, :4].numpy(), edge / edge.sum(), rtol=1e-12)
    assert torch.allclose(g.sum(-1), torch.ones(2, 9, dtype=torch.float64))
    assert torch.equal(g[1], torch.eye(9, dtype=torch.float64)), "sigma 0: a delta"
    assert math.isclose(g[0, 3, 5].item(), g[0, 5, 3].item())  # full kernels: symmetric


def test_float64_is_computed_in_float64_on_both_paths():
    objs, fg, hw, bg = _textured_scene(8)
    p = _params(BOXES, [1.4] * 6)
    fgt, bgt = torch.tensor(fg), torch.tensor(bg)
    win, wmask = composite(fgt, hw, bgt, p, method="window", smoothing_radius=5)
    mat, mmask = composite(fgt, hw, bgt, p, method="matrix", smoothing_radius=5)
    assert (win - mat).abs().max() < 1e-12 and (wmask - mmask).abs().max() < 1e-12  # float32: ~1e-7 apart
    f32, _ = composite(fgt.float(), hw, bgt.float(), p, method="matrix", smoothing_radius=5)
    assert 0 < (f32.double() - mat).abs().max() < 1e-5, "float32 inputs compute in float32"


def test_float_output_dtype_for_half_backgrounds():
    objs, fg, hw, bg = _textured_scene(9)
    p = _params(BOXES, [1.4] * 6)
    for method in ("window", "matrix"):
        img, mask = composite(
            torch.tensor(fg, dtype=torch.float16),
            hw,
            torch.tensor(bg, dtype=torch.float16),
            p,
            method=method,
            out_dtype=torch.float32,
        )
        assert img.dtype == torch.float32 and mask.dtype == torch.float32, method


def test_default_radius_is_twelve():
    objs, fg, hw, bg = _textured_scene(10)
    p = _params(BOXES, [5.0] * 6)  # 3 sigma = 15: both paths truncate at the radius
    for method in ("window", "matrix"):
        img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method=method)
        for i, o in enumerate(objs):
            ref, ref_mask = _reference(o, bg[i], BOXES[i], 5.0, 12)
            np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6, err_msg=method)


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_one_pixel_wide_and_high_objects(method):
    objs, fg, hw, bg = _textured_scene(11)
    boxes = [(10, 5, 1, 12), (3, 20, 15, 1), (30, 30, 1, 1), (40, 4, 2, 9), (8, 33, 9, 2), (50, 10, 0.6, 8)]
    p = _params(boxes, [0.0] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method=method)
    for i, o in enumerate(objs):
        x, y, w, h = boxes[i]
        ref, ref_mask = _reference(o, bg[i], (x, y, max(round(w), 1), h), 0.0, 0)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6, err_msg=str(i))
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-6, err_msg=str(i))


def test_resample_matrix_span_starts_on_a_pixel_centre_and_ends_before_one():
    m = resample_matrix(20, 8, torch.tensor([8.0]), torch.tensor([3.5]), torch.tensor([10.0]))[0]
    assert m[3].sum().item() == pytest.approx(1.0), "centre 3.5 == start: inside"
    assert (m[13] == 0).all(), "centre 13.5 == start + length: outside"
    assert m[12].sum().item() == pytest.approx(1.0) and (m[2] == 0).all()


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_sigma_below_the_threshold_is_not_feathered(method):
    """Sigma <= 0.05 px is a delta: the resampled alpha itself, not ForNet's 2a - 1 edge."""
    objs, fg, hw, bg = _textured_scene(12)
    fgt, bgt = torch.tensor(fg), torch.tensor(bg)
    sharp, sharp_mask = composite(fgt, hw, bgt, _params(BOXES, [0.0] * 6), method=method)
    small, small_mask = composite(fgt, hw, bgt, _params(BOXES, [0.03] * 6), method=method)
    assert torch.equal(small, sharp) and torch.equal(small_mask, sharp_mask)


def test_both_kernels_agree_at_the_feathering_threshold() -> None:
    """sigma exactly float32(0.05): both paths decide "feather or not" in the params' dtype (a
    half-transparent object shows it: feathering re-hardens alpha 0.6 to 2 * 0.6 - 1 = 0.2)."""
    fg = torch.zeros(1, 4, 20, 20, dtype=torch.uint8)
    fg[:, :3] = 200
    fg[:, 3, 2:18, 2:18] = 153
    hw, bg = torch.tensor([[20, 20]]), torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    p = RecombineParams(*(torch.tensor([v], dtype=torch.float32) for v in (10.0, 10.0, 20.0, 20.0, 0.05)))
    _, ma = composite(fg, hw, bg, p, method="window")
    _, mb = composite(fg, hw, bg, p, method="matrix")
    assert torch.equal(ma, mb)


# ---- the window kernel against its plain form: same pixels, less work ----
# The plain form premultiplies and resamples the whole foreground, blurs the whole window and
# blends out of place; the kernel premultiplies only the source pixels its visible outputs read,
# blurs only the visible pixels and blends in place. Kept here as the reference.


def _plain_premultiplied(src: torch.Tensor) -> torch.Tensor:
    out = src.clone()
    out[:3] = (src[:3].float() * (src[3].float() * (1 / 255))).round_().to(torch.uint8)
    return out


def _plain_feather(a: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    h, w = a.shape
    d = torch.arange(-radius, radius + 1, dtype=a.dtype)
    k = torch.exp(-0.5 * (d / max(sigma, 1e-3)) ** 2)
    taps = (k / k.sum()).tolist()
    p = torch.nn.functional.pad(a, (radius, radius, radius, radius))
    rows = torch.zeros(h, w + 2 * radius, dtype=a.dtype)
    for t, kt in enumerate(taps):
        rows.add_(p[t : t + h], alpha=kt)
    cols = rows.t().contiguous()
    blurred_t = torch.zeros(w, h, dtype=a.dtype)
    for t, kt in enumerate(taps):
        blurred_t.add_(cols[t : t + w], alpha=kt)
    return blurred_t.t()


def _plain_window(fg, fg_hw, bg, params, radius, out_dtype, fg_filter):
    """The CPU window kernel for uint8 foregrounds, whole-foreground form (float32 compute)."""
    B, (H, W) = bg.shape[0], bg.shape[-2:]
    int_out = not out_dtype.is_floating_point
    unit = 255.0 if int_out else 1.0
    if int_out or bg.dtype.is_floating_point:
        images = bg.to(out_dtype, copy=True)
    else:
        images = bg.float().mul_(1 / 255)
    masks = torch.zeros(B, H, W)
    box = torch.stack([params.x0, params.y0, params.w.clamp_min(1), params.h.clamp_min(1)], 1)
    for b, ((x, y, w, h), (fh, fw), s, f) in enumerate(
        zip(box.double().round().long().tolist(), fg_hw.tolist(), params.sigma.double().tolist(),
            (params.sigma > 0.05).tolist(), strict=True)
    ):  # fmt: skip
        ya, yb, xa, xb = max(y, 0), min(y + h, H), max(x, 0), min(x + w, W)
        if ya >= yb or xa >= xb:
            continue
        src = _plain_premultiplied(fg[b, :, :fh, :fw])
        r = min(radius, math.ceil(3 * s)) if f else 0
        ea, eb, ec, ed = max(ya - r, y), min(yb + r, y + h), max(xa - r, x), min(xb + r, x + w)
        res = torch.nn.functional.interpolate(
            src[None].contiguous(memory_format=torch.channels_last), size=(h, w), mode=fg_filter,
            antialias=True, align_corners=False,
        )[0, :, ea - y : eb - y, ec - x : ed - x].float() * (1 / 255)  # fmt: skip
        if fg_filter == "bicubic":
            res[3].clamp_(0, 1)
            res[:3] = torch.minimum(res[:3].clamp_min(0), res[3:4])
        vis = (slice(ya - ea, yb - ea), slice(xa - ec, xb - ec))
        if r:
            a_out = (_plain_feather(res[3], s, r)[vis] * 2 - 1).clamp_(0, 1)
        res = res[(slice(None), *vis)]
        if not r:
            a_out = res[3].clamp(0, 1)
        rgb = (res[:3] / res[3].clamp_min(1e-6)).clamp_(0, 1) * unit
        under = images[b, :, ya:yb, xa:xb].float()
        out = torch.addcmul(under, a_out, rgb - under)
        if int_out:
            out = out.round_().clamp_(0, 255)
        images[b, :, ya:yb, xa:xb] = out.to(out_dtype)
        masks[b, ya:yb, xa:xb] = a_out
    return images, masks


def test_premultiply_u8_is_the_float_product_rounded_for_every_pair():
    c = torch.arange(256, dtype=torch.uint8).repeat_interleave(256).reshape(256, 256)
    a = torch.arange(256, dtype=torch.uint8).repeat(256).reshape(256, 256)
    rgba = torch.stack([c, c.flip(0), c.t(), a])
    want = (rgba[:3].float() * (rgba[3].float() * (1 / 255))).round_().to(torch.uint8)
    assert torch.equal(functional.premultiply_u8(rgba), want)
    # a strided view (rows of a larger image), as the kernel hands it over
    assert torch.equal(functional.premultiply_u8(rgba[:, 10:200, 7:99]), want[:, 10:200, 7:99])
    assert torch.equal(functional.premultiplied(rgba, torch.float32, True)[:3], want)


@pytest.mark.parametrize("seed", range(24))
def test_window_kernel_equals_its_whole_foreground_form(seed):
    g = torch.Generator().manual_seed(seed)
    B, H, W = 6, 40 + seed % 3 * 17, 56 - seed % 2 * 9

    def ri(lo, hi, n=B):
        return torch.randint(lo, hi, (n,), generator=g)

    fh, fw = ri(3, 90), ri(3, 110)
    fg = torch.randint(0, 256, (B, 4, 90, 110), generator=g, dtype=torch.uint8)
    fg[:, 3, :, : 110 // 3] = 0  # a transparent band: premultiplication matters
    # objects from tiny to 3x the canvas, many jutting out of it on any side
    w, h = (ri(1, 3 * W).float() + torch.rand(B, generator=g)), (ri(1, 3 * H).float() + 0.3)
    x0 = torch.rand(B, generator=g) * (W + w) - w
    y0 = torch.rand(B, generator=g) * (H + h) - h
    sigma = torch.rand(B, generator=g) * 6 * (torch.rand(B, generator=g) > 0.2)
    params = RecombineParams(x0=x0, y0=y0, w=w, h=h, sigma=sigma)
    hw = torch.stack([fh, fw], 1)
    bg = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    radius = (12, 40)[seed % 2]
    for fg_filter in ("bilinear", "bicubic"):
        for out_dtype in (torch.float32, torch.uint8):
            got = composite(fg, hw, bg, params, smoothing_radius=radius, method="window",
                            out_dtype=out_dtype, fg_filter=fg_filter)  # fmt: skip
            want = _plain_window(fg, hw, bg, params, radius, out_dtype, fg_filter)
            assert torch.equal(got[0], want[0]), (fg_filter, out_dtype)
            assert torch.equal(got[1], want[1]), (fg_filter, out_dtype)
        got = composite(fg, hw, bg.float() / 255, params, smoothing_radius=radius, method="window",
                        fg_filter=fg_filter)  # fmt: skip
        want = _plain_window(fg, hw, bg.float() / 255, params, radius, torch.float32, fg_filter)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_list_of_unpadded_foregrounds_is_refused_without_a_batch():
    fg, hw, bg, params = torch.zeros(1, 4, 5, 5, dtype=torch.uint8), torch.tensor([[5, 5]]), None, None
    bg = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    params = RecombineParams(*(torch.ones(2) for _ in range(5)))
    with pytest.raises(ValueError, match="1 foregrounds for 2 backgrounds"):
        composite([fg[0]], hw, bg, params)
    with pytest.raises(ValueError, match="batched"):
        composite([fg[0]], hw, bg[0], RecombineParams(*(torch.ones(()) for _ in range(5))))


def test_unit_float_is_torchs_convert_and_multiply_for_every_value():
    every = torch.arange(256, dtype=torch.uint8).reshape(1, 4, 8, 8).expand(3, 4, 8, 8)
    want = every.float().mul_(1 / 255)
    got = functional.unit_float(every)
    assert got.dtype == torch.float32 and got.shape == every.shape and torch.equal(got, want)
    assert torch.equal(functional.unit_float(every[:, 1:, 2:5]), want[:, 1:, 2:5])  # a strided view


def test_pad_foregrounds_keeps_each_object_and_zeroes_only_the_padding() -> None:
    from forcomp.recombine.functional import pad_foregrounds

    g = torch.Generator().manual_seed(0)
    fgs = [
        torch.randint(1, 256, (4, h, w), generator=g, dtype=torch.uint8) for h, w in ((3, 5), (6, 2), (1, 1))
    ]
    out = pad_foregrounds(fgs)
    assert out.shape == (3, 4, 6, 5) and out.dtype == torch.uint8
    for i, f in enumerate(fgs):
        h, w = f.shape[1:]
        assert torch.equal(out[i, :, :h, :w], f)
        assert int(out[i].sum()) == int(f.sum())  # everything else is zero


def test_shrink_premultiplied_resamples_colour_weighted_by_alpha() -> None:
    """Transparent pixels' colour must not bleed into the edge: a red object beside a transparent
    green area shrinks to pure red wherever alpha is left."""
    from forcomp.recombine.functional import shrink_premultiplied

    fg = torch.zeros(4, 16, 16, dtype=torch.uint8)
    fg[1] = 255  # green everywhere ...
    fg[0, :, :8], fg[1, :, :8], fg[3, :, :8] = 255, 0, 255  # ... but the opaque left half is red
    out = shrink_premultiplied(fg, (8, 8))
    assert out.shape == (4, 8, 8) and out.dtype == torch.uint8
    seen = out[3] > 0
    assert bool(seen[:, :4].all()) and not bool(seen[:, 5:].any())
    assert bool((out[0][seen] == 255).all()) and bool((out[1][seen] == 0).all())  # no green fringe
    straight = torch.nn.functional.interpolate(
        fg[None].float(), size=(8, 8), mode="bilinear", antialias=True
    )[0]
    assert float(straight[1][seen].max()) > 0  # a straight-alpha resize would have bled green


def test_crop_parts_crops_resizes_and_flips_all_three_parts_alike() -> None:
    from forcomp.recombine.functional import crop_parts, resize_cover, resize_u8

    g = torch.Generator().manual_seed(1)
    bg = torch.randint(0, 256, (3, 40, 60), generator=g, dtype=torch.uint8)
    orig = torch.randint(0, 256, (3, 40, 60), generator=g, dtype=torch.uint8)
    fg = torch.randint(0, 256, (4, 20, 30), generator=g, dtype=torch.uint8)
    box, size = (10, 5, 30, 20), (16, 24)
    f, b, o = crop_parts(fg, bg, orig, box, False, size)
    assert torch.equal(b, resize_u8(bg[:, 5:25, 10:40], size)) and torch.equal(
        o, resize_u8(orig[:, 5:25, 10:40], size)
    )
    assert torch.equal(f, fg)  # no fg_size: left for the paste kernel
    ff, fb, fo = crop_parts(fg, bg, orig, box, True, size)
    assert torch.equal(fb, b.flip(-1)) and torch.equal(fo, o.flip(-1)) and torch.equal(ff, fg.flip(-1))
    other = torch.randint(0, 256, (3, 30, 30), generator=g, dtype=torch.uint8)  # not the background's size
    _, _, whole = crop_parts(fg, bg, other, box, False, size)
    assert torch.equal(whole, resize_cover(other, size))
    small, _, _ = crop_parts(fg, bg, None, box, False, size, fg_size=(10, 15))
    assert small.shape == (4, 10, 15)
    same, _, _ = crop_parts(fg, bg, None, box, False, size, fg_size=(20, 15))  # not smaller in both
    assert torch.equal(same, fg)


def test_premultiplied_support_is_the_float_product_rounded_for_every_pair_in_any_layout():
    from forcomp.recombine.functional import _premultiplied_support

    c = torch.arange(256, dtype=torch.uint8).repeat_interleave(256).reshape(256, 256)
    a = torch.arange(256, dtype=torch.uint8).repeat(256).reshape(256, 256)
    rgba = torch.stack([c, c.flip(0), c.t(), a])
    want = (rgba[:3].float() * (rgba[3].float() * (1 / 255))).round_().to(torch.uint8)
    interleaved = rgba.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # as the decoders hand it over
    for src in (rgba, interleaved, rgba.flip(-1).flip(-1)):
        got = _premultiplied_support(src, (0, 256), (0, 256))
        assert got.shape == (1, 4, 256, 256) and got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got[0, :3], want) and torch.equal(got[0, 3], a)
        part = _premultiplied_support(src, (10, 200), (7, 99))  # only the window is written
        assert torch.equal(part[0, :3, 10:200, 7:99], want[:, 10:200, 7:99])
        assert torch.equal(part[0, 3, 10:200, 7:99], a[10:200, 7:99])
    assert _premultiplied_support(rgba, (5, 5), (0, 9)).shape == (1, 4, 256, 256)  # empty window


@pytest.mark.parametrize("seed", range(4))
def test_window_kernel_reads_interleaved_foregrounds_as_planar_ones(seed):
    """The cache's decoders give (4, h, w) views of pixel-interleaved memory: same picture."""
    g = torch.Generator().manual_seed(seed)
    B, H, W = 5, 48, 64
    fg = torch.randint(0, 256, (B, 4, 70, 90), generator=g, dtype=torch.uint8)
    fg[:, 3, :, :30] = 0
    interleaved = [f.permute(1, 2, 0).contiguous().permute(2, 0, 1) for f in fg]
    hw = torch.tensor([[70, 90]] * B)
    params = RecombineParams(
        x0=torch.rand(B, generator=g) * 60 - 20, y0=torch.rand(B, generator=g) * 40 - 15,
        w=torch.rand(B, generator=g) * 80 + 5, h=torch.rand(B, generator=g) * 60 + 5,
        sigma=torch.rand(B, generator=g) * 3,
    )  # fmt: skip
    bg = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    want = composite(fg, hw, bg, params, method="window", out_dtype=torch.float32)
    got = composite(interleaved, hw, bg, params, method="window", out_dtype=torch.float32)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_composite_writes_into_out_and_refuses_a_wrong_one(method):
    g = torch.Generator().manual_seed(3)
    B, H, W = 3, 32, 40
    fg = torch.randint(0, 256, (B, 4, 20, 24), generator=g, dtype=torch.uint8)
    hw = torch.tensor([[20, 24]] * B)
    params = RecombineParams(*(torch.tensor([4.0, -3.0, 10.0]) for _ in range(2)),
                             torch.tensor([12.0, 30.0, 8.0]), torch.tensor([10.0, 25.0, 6.0]),
                             torch.tensor([1.0, 0.0, 2.0]))  # fmt: skip
    bg = torch.randint(0, 256, (B, 3, H, W), generator=g, dtype=torch.uint8)
    want = composite(fg, hw, bg, params, method=method, out_dtype=torch.float32)
    out = torch.full((B, 3, H, W), -7.0)
    got = composite(fg, hw, bg, params, method=method, out_dtype=torch.float32, out=out)
    assert got[0] is out and torch.equal(out, want[0]) and torch.equal(got[1], want[1])
    for bad in (torch.empty(B, 3, H, W + 1), torch.empty(B, 3, H, W, dtype=torch.float64)):
        with pytest.raises(ValueError, match="out must be"):
            composite(fg, hw, bg, params, method=method, out_dtype=torch.float32, out=bad)


def test_unit_float_writes_into_out_and_refuses_a_wrong_one():
    img = torch.arange(256, dtype=torch.uint8).reshape(1, 4, 8, 8).expand(3, 4, 8, 8)
    out = torch.empty(3, 4, 8, 8)
    assert functional.unit_float(img, out) is out and torch.equal(out, img.float().mul_(1 / 255))
    with pytest.raises(ValueError, match="contiguous float32"):
        functional.unit_float(img, torch.empty(3, 4, 8, 9))
    with pytest.raises(ValueError, match="contiguous float32"):
        functional.unit_float(img, torch.empty(3, 4, 8, 8).transpose(-1, -2))


def test_opencv_row_chunks_partition_the_rows_in_calls_of_bounded_size():
    from forcomp.recombine.functional import _CV_CHUNK_PX, _row_chunks

    for n_rows, width in ((0, 10), (1, 1), (7, 3), (300, 224), (1000, 65536), (5, 70000), (3, 0)):
        chunks = _row_chunks(n_rows, width)
        rows = [r for c in chunks for r in range(n_rows)[c]]
        assert rows == list(range(n_rows)), (n_rows, width)  # each row once, in order
        assert all(c.step is None and c.start < c.stop for c in chunks)
        # as large as allowed: each call but the last has the most rows that fit (one if a row is wider)
        step = max(1, _CV_CHUNK_PX // max(width, 1))
        assert all(c.stop - c.start == step for c in chunks[:-1])
        assert all((c.stop - c.start) * width <= max(_CV_CHUNK_PX, width) for c in chunks)


def test_premultiply_of_strided_views_reads_the_right_pixels():
    g = torch.Generator().manual_seed(0)
    five = torch.randint(0, 256, (37, 29, 5), generator=g, dtype=torch.uint8)  # RGBA + one more channel
    rgba = five[..., :4].permute(2, 0, 1)  # a view: pixels 5 bytes apart
    want = (rgba[:3].float() * (rgba[3].float() * (1 / 255))).round_().to(torch.uint8)
    interleaved = rgba.contiguous().permute(1, 2, 0).contiguous().permute(2, 0, 1)  # pixels 4 bytes apart
    for src in (rgba, interleaved):
        assert torch.equal(functional.premultiply_u8(src), want)
        from forcomp.recombine.functional import _premultiplied_support

        got = _premultiplied_support(src, (3, 30), (2, 20))
        assert torch.equal(got[0, :3, 3:30, 2:20], want[:, 3:30, 2:20])
        assert torch.equal(got[0, 3, 3:30, 2:20], rgba[3, 3:30, 2:20])
