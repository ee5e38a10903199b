"""The paste kernel against an independent numpy/PIL reference, on textured, asymmetric objects (issue 17).

Fast (about a second of test time) so that mutmut can run it for every mutant of
``forcomp/recombine/functional.py``. The reference resizes the premultiplied object with PIL (float
images, triangle filter), feathers its alpha with a numpy Gaussian and blends by the documented formula;
the objects are random textures with an L-shaped, graded alpha, so a flip, a transposition or a swapped
channel changes the picture.
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
from forcomp.recombine.params import RecombineParams


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


def _scene(seed: int = 0):
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
    objs, fg, hw, bg = _scene()
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
    objs, fg, hw, bg = _scene(1)
    p = _params(BOXES, [2.0] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method=method, smoothing_radius=6)
    assert img.dtype == torch.float64 and mask.dtype == torch.float64
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], 2.0, 6)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6)  # PIL resizes in float32
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-6)


def test_window_feathering_reads_three_sigmas():
    """Window path: each object's blur is truncated at ceil(3 sigma) when that is under the radius."""
    objs, fg, hw, bg = _scene(2)
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
    objs, fg, hw, bg = _scene(3)
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
    objs, fg, hw, bg = _scene(4)
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
    objs, fg, hw, bg = _scene(5)
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
    objs, fg, hw, bg = _scene(6)
    p = _params(BOXES, [sigma] * 6)
    img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method="window", fg_filter="bicubic")
    for i, o in enumerate(objs):
        ref, ref_mask = _reference(o, bg[i], BOXES[i], sigma, 5, Image.BICUBIC)  # ceil(3 * 1.4)
        np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-3)
        np.testing.assert_allclose(mask[i].numpy(), ref_mask, atol=2e-3)
    assert (mask >= 0).all() and (mask <= 1).all()


def test_window_path_in_float_off_the_cpu(monkeypatch):
    """Where the antialiased resize has no uint8 kernel (CUDA), uint8 objects are resized in float."""
    objs, fg, hw, bg = _scene(7)
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
    objs, fg, hw, bg = _scene(8)
    p = _params(BOXES, [1.4] * 6)
    fgt, bgt = torch.tensor(fg), torch.tensor(bg)
    win, wmask = composite(fgt, hw, bgt, p, method="window", smoothing_radius=5)
    mat, mmask = composite(fgt, hw, bgt, p, method="matrix", smoothing_radius=5)
    assert (win - mat).abs().max() < 1e-12 and (wmask - mmask).abs().max() < 1e-12  # float32: ~1e-7 apart
    f32, _ = composite(fgt.float(), hw, bgt.float(), p, method="matrix", smoothing_radius=5)
    assert 0 < (f32.double() - mat).abs().max() < 1e-5, "float32 inputs compute in float32"


def test_float_output_dtype_for_half_backgrounds():
    objs, fg, hw, bg = _scene(9)
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
    objs, fg, hw, bg = _scene(10)
    p = _params(BOXES, [5.0] * 6)  # 3 sigma = 15: both paths truncate at the radius
    for method in ("window", "matrix"):
        img, mask = composite(torch.tensor(fg), hw, torch.tensor(bg), p, method=method)
        for i, o in enumerate(objs):
            ref, ref_mask = _reference(o, bg[i], BOXES[i], 5.0, 12)
            np.testing.assert_allclose(img[i].numpy(), ref, atol=2e-6, err_msg=method)


@pytest.mark.parametrize("method", ["window", "matrix"])
def test_one_pixel_wide_and_high_objects(method):
    objs, fg, hw, bg = _scene(11)
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
    objs, fg, hw, bg = _scene(12)
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
