"""All pixels of the recombination, no randomness: one batched paste kernel.

The placement is an axis-aligned scale and translation per sample, so it is *separable*: each
foreground is resampled onto the canvas as ``Ry @ fg @ Rxᵀ`` with per-sample resampling matrices
``Ry (B, H, Hf)`` and ``Rx (B, W, Wf)`` (two batched matmuls). The matrices hold a triangle
filter whose support widens with the shrink factor — bilinear when enlarging, anti-aliased like
PIL's ``resize`` when shrinking — and zero columns for the foreground's padding. Boxes are whole
pixels, as ForNet's ``round()`` placement. Edge feathering is
the same trick with per-sample Gaussian matrices on the pasted alpha, then ForNet's ``2a - 1``
re-hardening; alpha blending is premultiplied. No Python loop over the batch, no ``.item()``: it
runs on the batch's device and under ``torch.compile``.

On the CPU the dense matrices are the wrong trade: they cost ``canvas x padded foreground`` per
row where a banded filter costs a few taps, and a CPU gains nothing from one big launch. There
``composite`` takes the *window* path instead: each object is resampled at its own size by
torch's SIMD uint8 anti-aliased resize (PIL's triangle filter), feathered and blended inside its
own box, at a cost proportional to the object's area (3.2x the matrix path on a 2-core CPU in
``benchmarks/online.py``). Both paths give the same picture (PSNR 65-77 dB between them on test
scenes: float rounding), so ``ds[i]`` on a CPU shows what a GPU batch trains on; ``method=`` picks
one explicitly.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from forcomp.recombine.params import RecombineParams


def resample_matrix(
    n_out: int, n_pad: int, n_valid: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Per-sample 1-D resampling matrices ``(B, n_out, n_pad)``.

    Source pixels ``[0, n_valid)`` (of a row padded to ``n_pad``) are mapped onto output pixels
    ``[start, start + length)`` (output pixel units; may leave the canvas). Each row holds the
    weights of a triangle filter of half-width ``max(1, n_valid / length)`` source pixels
    (bilinear when enlarging, area-like anti-aliasing when shrinking), renormalised over the valid
    source pixels as PIL's and torch's antialiased resizes do at an image's border. Rows whose
    pixel centre lies outside the span are zero, and so are the padding columns.
    """
    dev, dt = start.device, start.dtype
    step = n_valid / length  # source pixels per output pixel
    half = step.clamp_min(1.0)
    u = torch.arange(n_out, device=dev, dtype=dt) + 0.5
    s = (u[None, :] - start[:, None]) * step[:, None]  # (B, n_out) source coordinate of each output centre
    j = torch.arange(n_pad, device=dev, dtype=dt) + 0.5
    w = (1 - (j[None, None, :] - s[:, :, None]).abs() / half[:, None, None]).clamp_min(0)
    w = w * (j[None, None, :] < n_valid[:, None, None]).to(dt)
    inside = (u[None, :] >= start[:, None]) & (u[None, :] < (start + length)[:, None])
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12) * inside[:, :, None].to(dt)


def gaussian_matrix(n: int, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-sample Gaussian blur matrices ``(B, n, n)`` truncated at ``radius``; rows sum to 1.

    Rows near the edges are renormalised over the pixels that exist (a constant stays constant);
    the paste kernel uses only rows whose whole kernel lies inside, on a canvas grown by ``radius``.
    """
    dev, dt = sigma.device, sigma.dtype
    i = torch.arange(n, device=dev, dtype=dt)
    d = i[:, None] - i[None, :]
    s = sigma.clamp_min(1e-3)[:, None, None]
    k = torch.exp(-0.5 * (d[None] / s) ** 2) * (d.abs() <= radius)[None].to(dt)
    return k / k.sum(-1, keepdim=True)


def composite(
    fg: torch.Tensor,
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    *,
    smoothing_radius: int = 12,
    method: Literal["auto", "matrix", "window"] = "auto",
    out_dtype: torch.dtype | None = None,
    fg_filter: Literal["bilinear", "bicubic"] = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste foregrounds onto backgrounds.

    Args:
        fg: ``(B, 4, Hf, Wf)`` RGBA foregrounds, padded at the bottom/right; uint8 or float in [0, 1].
        fg_hw: ``(B, 2)`` valid height, width of each foreground inside the padding.
        bg: ``(B, 3, H, W)`` backgrounds (the output canvas), same dtype family as ``fg``.
        params: placement ``x0, y0, w, h`` and edge ``sigma`` (output pixels), each ``(B,)``.
        smoothing_radius: radius of the feathering kernel (>= 3 * the largest sigma).
        method: ``matrix`` (batched matmuls; GPUs and ``torch.compile``), ``window`` (a loop over
            the objects' boxes, cost ~ object area; CPUs), or ``auto``: ``window``
            for CPU tensors in eager mode, else ``matrix``.
        out_dtype: dtype of the images; default ``bg``'s. A floating dtype with uint8 inputs gives
            [0, 1] images without a uint8 round trip (what ``Recombine`` uses).
        fg_filter: the object's resampling filter: ``bilinear`` (triangle, antialiased; both
            kernels) or ``bicubic`` (antialiased, PIL's ``resize`` default that ForNet uses; window
            kernel only, for ``ForComp(size=None)``'s full-resolution composites).

    Returns:
        ``(images, masks)``: ``(B, 3, H, W)`` in ``bg``'s dtype and device, and ``(B, H, W)`` float
        alpha of the pasted object (what was blended, in [0, 1]). Unbatched ``(C, H, W)`` inputs
        give unbatched outputs. Inputs are never modified.

    Shape:
        fg ``(B, 4, Hf, Wf)``, fg_hw ``(B, 2)``, bg ``(B, 3, H, W)`` → ``(B, 3, H, W)``, ``(B, H, W)``.
    """
    unbatched = bg.dim() == 3
    if unbatched:
        fg, bg, fg_hw = fg[None], bg[None], fg_hw.reshape(1, 2)
        params = RecombineParams(*(p.reshape(1) for p in params))
    if out_dtype is None:
        out_dtype = bg.dtype
    elif not out_dtype.is_floating_point and out_dtype != bg.dtype:
        raise ValueError(f"out_dtype must be floating or bg's dtype ({bg.dtype}), got {out_dtype}")
    # float64 inputs compute in float64; everything else in float32 (half inputs included: the
    # matmuls accumulate in float32 and the result is cast back).
    cdt = torch.float64 if bg.dtype == torch.float64 else torch.float32
    if method == "auto":
        method = "window" if bg.device.type == "cpu" and not torch.compiler.is_compiling() else "matrix"
    if method not in ("matrix", "window"):
        raise ValueError(f"method must be 'auto', 'matrix' or 'window', got {method!r}")
    if fg_filter not in ("bilinear", "bicubic"):
        raise ValueError(f"fg_filter must be 'bilinear' or 'bicubic', got {fg_filter!r}")
    if fg_filter == "bicubic" and method != "window":
        raise ValueError("fg_filter='bicubic' needs method='window' (the matrix kernel is bilinear)")
    # Autocast off: under a user's autocast the matmuls and convolutions would run in bf16/fp16
    # (8-11 bit mantissas: 3/255 off, measured); the kernel computes in float32 and casts back to
    # the input's dtype itself.
    # (a device without autocast, e.g. "meta" in tests, takes the CPU's guard: nothing to disable)
    amp_device = bg.device.type if bg.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=amp_device, enabled=False):
        if method == "window":
            images, masks = _composite_window(
                fg, fg_hw, bg, params, smoothing_radius, cdt, out_dtype, fg_filter
            )
        else:
            images, masks = _composite_matrix(fg, fg_hw, bg, params, smoothing_radius, cdt, out_dtype)
    return (images[0], masks[0]) if unbatched else (images, masks)


def _composite_matrix(
    fg: torch.Tensor,
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    smoothing_radius: int,
    cdt: torch.dtype,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batched path: every sample at once, as matmuls over the whole canvas."""
    B, _, Hf, Wf = fg.shape
    H, W = bg.shape[-2:]
    is_int = not out_dtype.is_floating_point
    fg_scale = 255.0 if not fg.dtype.is_floating_point else 1.0
    fh, fw = fg_hw[:, 0].to(cdt), fg_hw[:, 1].to(cdt)
    # Whole-pixel boxes, as ForNet (round()) and the window path: the same picture on every device.
    # Sub-pixel placement softened all four edges by half a pixel, which ForNet's 2a - 1
    # re-hardening then eroded: a 3 px object kept 5.7 of its 9 px² (now 8.4, as the window path).
    y0, x0 = params.y0.to(cdt).round(), params.x0.to(cdt).round()
    h, w = params.h.to(cdt).clamp_min(1).round(), params.w.to(cdt).clamp_min(1).round()
    # The feathered alpha must not depend on where the canvas ends (a crop of the object pasted on
    # a larger canvas, as ForNet pastes on the full image and crops after): the alpha is resampled
    # on the canvas grown by the blur radius R on every side, so the blur of an edge pixel reads the
    # object's real alpha beyond the border (or its absence), never a renormalised remainder.
    R = int(smoothing_radius)
    # 1/255 (uint8 input) is folded into the row matrix: one pass less over the pixels.
    ry_e = resample_matrix(H + 2 * R, Hf, fh, y0 + R, h) / fg_scale  # (B, H + 2R, Hf)
    rx_e = resample_matrix(W + 2 * R, Wf, fw, x0 + R, w)  # (B, W + 2R, Wf)
    ry, rx = ry_e[:, R : R + H], rx_e[:, R : R + W]

    # Premultiply at the source resolution (in fg's units: 255² for uint8, folded into the matrices).
    a_src = fg[:, 3].to(cdt)  # (B, Hf, Wf)
    prem = fg[:, :3].to(cdt) * a_src[:, None]  # (B, 3, Hf, Wf)
    rxt = rx.transpose(1, 2)  # (B, Wf, W)
    # Columns first as one plain bmm over (B, 3·Hf, Wf), then rows channel by channel (bmm, no copies).
    cols = prem.reshape(B, 3 * Hf, Wf) @ (rxt / fg_scale)
    a_e = (ry_e @ (a_src @ rx_e.transpose(1, 2))).clamp_(0, 1)  # (B, H + 2R, W + 2R) resampled alpha
    a = a_e[:, R : R + H, R : R + W]
    prem_out = torch.stack([torch.bmm(ry, cols[:, c * Hf : (c + 1) * Hf]) for c in range(3)], 1)

    sig = params.sigma.to(cdt)
    # rows of the grown canvas that the visible ones read: the full kernel fits, no renormalisation
    gy = gaussian_matrix(H + 2 * R, sig, R)[:, R : R + H]  # (B, H, H + 2R)
    gx = gaussian_matrix(W + 2 * R, sig, R)[:, R : R + W] if W != H else gy
    soft = ((gy @ a_e) @ gx.transpose(1, 2) * 2 - 1).clamp(0, 1)  # ForNet's edge: blur, keep the inner half
    # The feathered edge stays inside the pasted box, as ForNet's (it blurs the foreground's own
    # mask) and the window path.
    iy = torch.arange(H, device=a.device, dtype=cdt) + 0.5
    ix = torch.arange(W, device=a.device, dtype=cdt) + 0.5
    in_y = ((iy[None] >= y0[:, None]) & (iy[None] < (y0 + h)[:, None])).to(cdt)
    in_x = ((ix[None] >= x0[:, None]) & (ix[None] < (x0 + w)[:, None])).to(cdt)
    soft = soft * in_y[:, :, None] * in_x[:, None, :]
    # Where sigma is 0 the kernel is a delta: the sampled alpha itself.
    a_out = torch.where((params.sigma > 0.05)[:, None, None], soft, a)[:, None]
    # Un-premultiply where the object is, then blend: out = a_out * rgb + (1 - a_out) * bg.
    rgb = (prem_out / a[:, None].clamp_min(1e-6)).clamp_(0, 1)
    b = bg.to(cdt)
    if is_int:
        out = torch.addcmul(b, a_out, rgb * 255.0 - b).round_().clamp_(0, 255)
    else:
        if not bg.dtype.is_floating_point:  # uint8 in, float out: [0, 1]
            b = b / 255.0
        out = torch.addcmul(b, a_out, rgb - b)
    return out.to(out_dtype), a_out[:, 0].to(torch.float32 if is_int else out_dtype)


def _resize_keeps_uint8(device: torch.device) -> bool:
    """Whether antialiased ``interpolate`` takes uint8 on ``device``: only the CPU has that kernel
    (CUDA raises "not implemented for 'Byte'"), so the window path resizes in float elsewhere."""
    return device.type == "cpu"


def premultiplied(src: torch.Tensor, cdt: torch.dtype, keep_uint8: bool) -> torch.Tensor:
    """``(4, h, w)`` RGBA with colour multiplied by alpha, ready for the antialiased resize.

    uint8 stays uint8 when ``keep_uint8`` (the CPU's SIMD uint8 kernel), else becomes ``cdt`` in
    [0, 1]. Floats become ``cdt``.
    """
    if not src.dtype.is_floating_point and not keep_uint8:
        src = src.to(cdt) * (1 / 255)
    if src.dtype.is_floating_point:
        out = src.to(cdt, copy=True)
        out[:3] *= out[3]
        return out
    out = src.clone()
    out[:3] = (src[:3].to(cdt) * (src[3].to(cdt) * (1 / 255))).round_().to(torch.uint8)
    return out


def resize_u8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(C, h, w)`` uint8 (PIL's filter), staying in uint8.

    channels_last selects torch's SIMD uint8 kernel: several times faster than a float round trip.
    """
    out = F.interpolate(
        img[None].contiguous(memory_format=torch.channels_last),
        size=size,
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return out[0].contiguous()


def resize_cover(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(C, h, w)`` uint8 to cover ``size`` keeping the aspect ratio, then centre-crop."""
    H, W = size
    _, h, w = img.shape
    s = max(H / h, W / w)
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    if (nh, nw) != (h, w):
        img = resize_u8(img, (nh, nw))
    y, x = (nh - H) // 2, (nw - W) // 2
    return img[:, y : y + H, x : x + W].contiguous()


def shrink(img: torch.Tensor, max_side: int) -> torch.Tensor:
    """``(C, h, w)`` uint8 resized so that its longer side is at most ``max_side`` (aspect kept)."""
    _, h, w = img.shape
    if max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return resize_u8(img, (max(1, round(h * s)), max(1, round(w * s))))


def shrink_premultiplied(fg: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(4, h, w)`` uint8 RGBA with premultiplied colour (as the paste kernel resamples),
    back to straight alpha: transparent pixels' colour does not bleed into the object's edge."""
    pm = resize_u8(premultiplied(fg, torch.float32, True), size)
    a = pm[3].float()
    rgb = (pm[:3].float() * (255.0 / a.clamp_min(1.0))).round_().clamp_(0, 255).to(torch.uint8)
    return torch.cat([rgb, pm[3:]])


def crop_parts(
    fg: torch.Tensor,
    bg: torch.Tensor,
    orig: torch.Tensor | None,
    box: tuple[int, int, int, int],
    flip: bool,
    size: tuple[int, int],
    fg_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One sample's parts for a fused crop and flip: ``(fg, bg, orig)`` at the output.

    The background's ``box`` (``x, y, w, h`` in its pixels) is resized once to ``size``; ``orig``
    too when it has the background's size, else it is resized to cover ``size`` whole. ``fg`` is
    shrunk (premultiplied) to ``fg_size`` when given and smaller, else left for the paste kernel.
    With ``flip`` all three are mirrored. uint8 ``(C, h, w)`` in and out.
    """
    x, y, w, h = box
    hb, wb = int(bg.shape[1]), int(bg.shape[2])
    out_bg = resize_u8(bg[:, y : y + h, x : x + w], size)
    if orig is not None:
        if tuple(orig.shape[1:]) == (hb, wb):
            orig = resize_u8(orig[:, y : y + h, x : x + w], size)
        else:  # a source image of another size than its background: whole image
            orig = resize_cover(orig, size)
    if fg_size is not None and fg_size[0] < fg.shape[1] and fg_size[1] < fg.shape[2]:
        fg = shrink_premultiplied(fg, fg_size)
    if flip:
        out_bg, fg = out_bg.flip(-1), fg.flip(-1)
        orig = None if orig is None else orig.flip(-1)
    return fg, out_bg, orig


def _feather(a: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Gaussian blur of an object's alpha, zero beyond ``a`` (the object's own box: no object there).

    ``a`` holds every row and column of the object within ``radius`` of the pixels wanted, so the
    result there is the blur of the whole object, wherever the canvas ends (``gaussian_matrix`` on
    the matrix path's grown canvas, truncated at ``radius``).
    """
    h, w = a.shape
    dt, dev = a.dtype, a.device
    d = torch.arange(-radius, radius + 1, dtype=dt, device=dev)
    k = torch.exp(-0.5 * (d / max(sigma, 1e-3)) ** 2)
    k = k / k.sum()
    # Separable blur as shifted adds (one per tap, each over the whole window): 3.6x faster on a
    # CPU than two single-channel conv2d calls (0.58 vs 2.1 ms on a 250x200 window, r=12, measured).
    taps = k.tolist()
    p = F.pad(a, (radius, radius, radius, radius))
    rows = torch.zeros(h, w + 2 * radius, dtype=dt, device=dev)
    for t, kt in enumerate(taps):
        rows.add_(p[t : t + h], alpha=kt)
    cols = rows.t().contiguous()  # columns as rows: the adds stay contiguous
    blurred_t = torch.zeros(w, h, dtype=dt, device=dev)
    for t, kt in enumerate(taps):
        blurred_t.add_(cols[t : t + w], alpha=kt)
    return blurred_t.t()


def _composite_window(
    fg: torch.Tensor,
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    radius: int,
    cdt: torch.dtype,
    out_dtype: torch.dtype,
    fg_filter: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU path: each object resampled at its own (whole-pixel) size, blended inside its box.

    Outside an object's box the output is the background (the feathered alpha ``2·blur - 1`` is
    zero there), so no work is spent on it: the cost follows the object's area, not the canvas.
    """
    B = bg.shape[0]
    H, W = bg.shape[-2:]
    int_out = not out_dtype.is_floating_point
    # the canvas in its output units: [0, 255] for uint8 output, [0, 1] for float output
    unit = 255.0 if int_out else 1.0
    if bg.dtype.is_floating_point or int_out:
        images = bg.to(out_dtype, copy=True)
    else:
        images = bg.to(out_dtype).mul_(1 / 255)  # uint8 in, float out (faster than a mixed-dtype mul)
    masks = torch.zeros(B, H, W, dtype=torch.float32 if int_out else out_dtype, device=bg.device)
    # what premultiplied hands the resize: uint8 [0, 255] on the CPU, float [0, 1] elsewhere
    keep_uint8 = not fg.dtype.is_floating_point and _resize_keeps_uint8(fg.device)
    fg_unit = 1 / 255 if keep_uint8 else 1.0
    box = torch.stack([params.x0, params.y0, params.w.clamp_min(1), params.h.clamp_min(1)], 1)
    boxes = box.double().round().long().tolist()
    sigmas = params.sigma.double().tolist()
    # the matrix path's test, in the params' own dtype: float32(0.05) > 0.05 only in float64
    feathered = (params.sigma > 0.05).tolist()
    for b, ((x, y, w, h), (fh, fw), s, f) in enumerate(
        zip(boxes, fg_hw.tolist(), sigmas, feathered, strict=True)
    ):
        ya, yb, xa, xb = max(y, 0), min(y + h, H), max(x, 0), min(x + w, W)
        if ya >= yb or xa >= xb:
            continue
        src = premultiplied(fg[b, :, :fh, :fw], cdt, keep_uint8)
        r = min(radius, math.ceil(3 * s)) if f else 0  # this sample's 3-sigma support
        # the object's rows/columns within r of the visible window: what its edge's blur reads
        ea, eb, ec, ed = max(ya - r, y), min(yb + r, y + h), max(xa - r, x), min(xb + r, x + w)
        # channels_last selects torch's SIMD kernel for uint8 (several times faster than planar)
        res = (
            F.interpolate(
                src[None].contiguous(memory_format=torch.channels_last),
                size=(h, w),
                mode=fg_filter,
                antialias=True,
                align_corners=False,
            )[0, :, ea - y : eb - y, ec - x : ed - x].to(cdt)
            * fg_unit
        )
        if fg_filter == "bicubic":  # cubic overshoot: alpha and premultiplied colour stay in range
            res[3].clamp_(0, 1)
            res[:3] = torch.minimum(res[:3].clamp_min(0), res[3:4])
        vis = (slice(ya - ea, yb - ea), slice(xa - ec, xb - ec))
        if r:
            a_out = (_feather(res[3], s, r)[vis] * 2 - 1).clamp_(0, 1)  # ForNet's edge
        res = res[(slice(None), *vis)]
        a = res[3]
        if not r:
            a_out = a.clamp(0, 1)
        rgb = (res[:3] / a.clamp_min(1e-6)).clamp_(0, 1) * unit
        under = images[b, :, ya:yb, xa:xb].to(cdt)
        out = torch.addcmul(under, a_out, rgb - under)
        if int_out:
            out = out.round_().clamp_(0, 255)
        images[b, :, ya:yb, xa:xb] = out.to(out_dtype)
        masks[b, ya:yb, xa:xb] = a_out.to(masks.dtype)
    return images, masks
