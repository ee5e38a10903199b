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
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from forcomp.recombine.params import RecombineParams
from forcomp.recombine.threads import opencv_serial


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


def pad_foregrounds(fgs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(B, 4, Hmax, Wmax)`` of ``(4, h, w)`` foregrounds, zero-padded bottom/right."""
    hmax, wmax = max(int(f.shape[1]) for f in fgs), max(int(f.shape[2]) for f in fgs)
    # written once: each foreground, then zeros only in its padding (not a zeroed batch first)
    out = torch.empty(len(fgs), 4, hmax, wmax, dtype=fgs[0].dtype, device=fgs[0].device)
    for i, f in enumerate(fgs):
        _, h, w = f.shape
        out[i, :, :h, :w] = f
        out[i, :, :h, w:] = 0
        out[i, :, h:] = 0
    return out


def composite(
    fg: torch.Tensor | Sequence[torch.Tensor],
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    *,
    smoothing_radius: int = 12,
    method: Literal["auto", "matrix", "window"] = "auto",
    out_dtype: torch.dtype | None = None,
    fg_filter: Literal["bilinear", "bicubic"] = "bilinear",
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste foregrounds onto backgrounds.

    Args:
        fg: ``(B, 4, Hf, Wf)`` RGBA foregrounds, padded at the bottom/right; uint8 or float in [0, 1].
            Or a list of ``B`` unpadded ``(4, h, w)`` ones: the window kernel reads them as they
            are (no padded copy; the matrix kernel pads them first).
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
        out: a ``(B, 3, H, W)`` tensor of ``out_dtype`` on ``bg``'s device to write the images
            into (e.g. one in shared memory, which a DataLoader worker then hands over without
            a copy); returned as the images.

    Returns:
        ``(images, masks)``: ``(B, 3, H, W)`` in ``bg``'s dtype and device, and ``(B, H, W)`` float
        alpha of the pasted object (what was blended, in [0, 1]). Unbatched ``(C, H, W)`` inputs
        give unbatched outputs. Inputs are never modified.

    Shape:
        fg ``(B, 4, Hf, Wf)``, fg_hw ``(B, 2)``, bg ``(B, 3, H, W)`` → ``(B, 3, H, W)``, ``(B, H, W)``.
    """
    unbatched = bg.dim() == 3
    if not isinstance(fg, torch.Tensor):
        if unbatched:
            raise ValueError("a list of foregrounds needs a batched (B, 3, H, W) background")
        if len(fg) != bg.shape[0]:
            raise ValueError(f"got {len(fg)} foregrounds for {bg.shape[0]} backgrounds")
    if unbatched and isinstance(fg, torch.Tensor):
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
    if out is not None and (
        unbatched or out.shape != bg.shape or out.dtype != out_dtype or out.device != bg.device
    ):
        raise ValueError(
            f"out must be a batched {tuple(bg.shape)} {out_dtype} tensor on {bg.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    # Autocast off: under a user's autocast the matmuls and convolutions would run in bf16/fp16
    # (8-11 bit mantissas: 3/255 off, measured); the kernel computes in float32 and casts back to
    # the input's dtype itself.
    # (a device without autocast, e.g. "meta" in tests, takes the CPU's guard: nothing to disable)
    amp_device = bg.device.type if bg.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=amp_device, enabled=False):
        if method == "window":
            with opencv_serial():
                images, masks = _composite_window(
                    fg, fg_hw, bg, params, smoothing_radius, cdt, out_dtype, fg_filter, out
                )
        else:
            if not isinstance(fg, torch.Tensor):
                fg = pad_foregrounds(fg)
            images, masks = _composite_matrix(fg, fg_hw, bg, params, smoothing_radius, cdt, out_dtype)
            if out is not None:
                images = out.copy_(images)
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
    out[:3] = premultiply_u8(src)
    return out


def unit_float(img: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 CPU ``img`` as float32 ``x * (1/255)``: the values of ``img.float().mul_(1 / 255)``,
    looked up in one pass (OpenCV's ``LUT`` into a float table; 1.8x faster than torch's convert
    and multiply on a 64x224² batch, measured). Written into ``out`` (contiguous float32 of
    ``img``'s shape) when given."""
    import cv2

    table = torch.arange(256, dtype=torch.float32).mul_(1 / 255).numpy()
    src = img.contiguous().numpy().reshape(-1, img.shape[-1])
    if out is None:
        out = torch.empty(img.shape, dtype=torch.float32)
    elif out.shape != img.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be contiguous float32 of shape {tuple(img.shape)}")
    dst = out.numpy().reshape(src.shape)
    with opencv_serial():
        for rows in _row_chunks(src.shape[0], src.shape[1]):
            cv2.LUT(src[rows], table, dst=dst[rows])
    return out


# OpenCV splits a large call over its own thread pool (all cores, whatever torch's thread count):
# on a 2-core machine a 64x224² LUT then took 1.7 cores and more wall time than one thread
# (12.3 vs 9.0 ms, measured). Calls of at most this many pixels stay on the calling thread.
_CV_CHUNK_PX = 1 << 16


def _row_chunks(n_rows: int, width: int) -> list[slice]:
    step = max(1, _CV_CHUNK_PX // max(width, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def premultiply_u8(src: torch.Tensor) -> torch.Tensor:
    """``(3, h, w)`` uint8 ``round(colour * alpha / 255)`` of ``(4, h, w)`` uint8 RGBA.

    The float32 product ``colour * (alpha * (1/255))`` rounded is this exact integer for all 65536
    pairs (no pair lies within float error of a half; the tests check every pair), so any exact
    method gives the same pixels. On the CPU OpenCV's saturating ``multiply`` computes it per
    plane in one pass (4x faster than torch's six passes in float, measured on a 300x260 object).
    """
    if src.device.type != "cpu":
        f = torch.float32
        return (src[:3].to(f) * (src[3].to(f) * (1 / 255))).round_().to(torch.uint8)
    import cv2

    # a view (rows may be strided: OpenCV takes a row step), contiguous along each row
    planes = (src if src.stride(-1) == 1 else src.contiguous()).numpy()
    out = np.empty((3, *planes.shape[1:]), dtype=np.uint8)
    with opencv_serial():
        for rows in _row_chunks(planes.shape[1], planes.shape[2]):
            for c in range(3):
                cv2.multiply(planes[c, rows], planes[3, rows], dst=out[c, rows], scale=1 / 255)
    return torch.from_numpy(out)


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


def _feather(a: torch.Tensor, sigma: float, radius: int, rows: slice, cols: slice) -> torch.Tensor:
    """Gaussian blur of an object's alpha at ``a[rows, cols]``, zero beyond ``a`` (the object's own
    box: no object there).

    ``a`` holds every row and column of the object within ``radius`` of the pixels wanted, so the
    result there is the blur of the whole object, wherever the canvas ends (``gaussian_matrix`` on
    the matrix path's grown canvas, truncated at ``radius``). Only the wanted pixels are blurred
    (the rows pass over the wanted rows, the columns pass over the wanted columns): each sum has
    the same terms in the same order as a blur of all of ``a``.
    """
    dt, dev = a.dtype, a.device
    r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
    d = torch.arange(-radius, radius + 1, dtype=dt, device=dev)
    k = torch.exp(-0.5 * (d / max(sigma, 1e-3)) ** 2)
    k = k / k.sum()
    # Separable blur as shifted adds (one per tap, each over the whole window): 3.6x faster on a
    # CPU than two single-channel conv2d calls (0.58 vs 2.1 ms on a 250x200 window, r=12, measured).
    taps = k.tolist()
    p = F.pad(a, (radius, radius, radius, radius))[:, c0 : c1 + 2 * radius]
    out_rows = torch.zeros(r1 - r0, c1 - c0 + 2 * radius, dtype=dt, device=dev)
    for t, kt in enumerate(taps):
        out_rows.add_(p[r0 + t : r1 + t], alpha=kt)
    cols_t = out_rows.t().contiguous()  # columns as rows: the adds stay contiguous
    blurred_t = torch.zeros(c1 - c0, r1 - r0, dtype=dt, device=dev)
    for t, kt in enumerate(taps):
        blurred_t.add_(cols_t[t : t + c1 - c0], alpha=kt)
    return blurred_t.t()


def _support(o0: int, o1: int, n_in: int, n_out: int, taps: int) -> tuple[int, int]:
    """Source pixels ``[s0, s1)`` that an antialiased resize of ``n_in`` to ``n_out`` pixels reads
    for outputs ``[o0, o1)`` (torch's and PIL's rule: a filter of ``taps`` taps, widened by the
    shrink factor), with a pixel of margin on each side."""
    scale = n_in / n_out
    support = taps / 2 * max(scale, 1.0)
    s0 = math.floor(scale * o0 - support) - 1
    s1 = math.ceil(scale * o1 + support) + 2
    return max(s0, 0), min(s1, n_in)


def _premultiplied_support(src: torch.Tensor, ys: tuple[int, int], xs: tuple[int, int]) -> torch.Tensor:
    """``(1, 4, h, w)`` channels_last uint8 for torch's SIMD resize, premultiplied (as
    :func:`premultiplied`) on rows ``ys`` and columns ``xs``: the pixels the wanted outputs read.
    The rest is left unwritten: only outputs that are thrown away read it.

    Computed pixel-interleaved, in the layout the resize reads: ``RGBA * (a, a, a, 255) / 255``
    rounded, one saturating OpenCV multiply over the window (alpha times 255/255 is alpha). The
    cache's decoders hand foregrounds over interleaved already (a view, no copy); per plane and
    then scattered into the interleaved layout it took 3x longer (0.43 vs 0.14 ms, 300x260).
    """
    import cv2

    _, h, w = src.shape
    out = torch.empty((1, 4, h, w), dtype=torch.uint8, device=src.device, memory_format=torch.channels_last)
    (y0, y1), (x0, x1) = ys, xs
    window = src[:, y0:y1, x0:x1].permute(1, 2, 0)  # (rows, cols, 4)
    if window.stride(2) != 1 or window.stride(1) != 4:
        window = window.contiguous()
    rgba = window.numpy()
    dst = out[0].permute(1, 2, 0).numpy()[y0:y1, x0:x1]
    for rows in _row_chunks(rgba.shape[0], rgba.shape[1]) if rgba.size else []:
        alpha4 = cv2.cvtColor(np.ascontiguousarray(rgba[rows, :, 3]), cv2.COLOR_GRAY2BGRA)  # a, a, a, 255
        cv2.multiply(rgba[rows], alpha4, dst=dst[rows], scale=1 / 255)
    return out


def _composite_window(
    fg: torch.Tensor | Sequence[torch.Tensor],
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    radius: int,
    cdt: torch.dtype,
    out_dtype: torch.dtype,
    fg_filter: str = "bilinear",
    out: torch.Tensor | None = None,
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
    if bg.dtype == torch.uint8 and out_dtype == torch.float32 and bg.device.type == "cpu" and bg.numel():
        images = unit_float(bg, None if out is None or not out.is_contiguous() else out)
    elif bg.dtype.is_floating_point or int_out:
        images = bg.to(out_dtype, copy=True)
    else:
        images = bg.to(out_dtype).mul_(1 / 255)  # uint8 in, float out (faster than a mixed-dtype mul)
    if out is not None and images is not out:
        images = out.copy_(images)
    masks = torch.zeros(B, H, W, dtype=torch.float32 if int_out else out_dtype, device=bg.device)
    # what premultiplied hands the resize: uint8 [0, 255] on the CPU, float [0, 1] elsewhere
    fg0 = fg[0] if len(fg) else bg
    keep_uint8 = not fg0.dtype.is_floating_point and _resize_keeps_uint8(fg0.device)
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
        r = min(radius, math.ceil(3 * s)) if f else 0  # this sample's 3-sigma support
        # the object's rows/columns within r of the visible window: what its edge's blur reads
        ea, eb, ec, ed = max(ya - r, y), min(yb + r, y + h), max(xa - r, x), min(xb + r, x + w)
        if keep_uint8 and cdt == torch.float32:
            # premultiplied only where the kept outputs read: the visible window's support, not
            # the whole foreground (an object jutting out of the canvas is mostly not read)
            n_taps = 4 if fg_filter == "bicubic" else 2
            ys = _support(ea - y, eb - y, fh, h, n_taps)
            xs = _support(ec - x, ed - x, fw, w, n_taps)
            src_cl = _premultiplied_support(fg[b][:, :fh, :fw], ys, xs)
        else:
            # channels_last selects torch's SIMD kernel for uint8 (several times faster than planar)
            src_cl = premultiplied(fg[b][:, :fh, :fw], cdt, keep_uint8)[None].contiguous(
                memory_format=torch.channels_last
            )
        res = (
            F.interpolate(src_cl, size=(h, w), mode=fg_filter, antialias=True, align_corners=False)[
                0, :, ea - y : eb - y, ec - x : ed - x
            ].to(cdt)
            * fg_unit
        )
        if fg_filter == "bicubic":  # cubic overshoot: alpha and premultiplied colour stay in range
            res[3].clamp_(0, 1)
            res[:3] = torch.minimum(res[:3].clamp_min(0), res[3:4])
        vis = (slice(ya - ea, yb - ea), slice(xa - ec, xb - ec))
        if r:
            a_out = (_feather(res[3], s, r, *vis) * 2 - 1).clamp_(0, 1)  # ForNet's edge
        res = res[(slice(None), *vis)]
        a = res[3]
        if not r:
            a_out = a.clamp(0, 1)
        rgb = (res[:3] / a.clamp_min(1e-6)).clamp_(0, 1)
        if int_out:
            under = images[b, :, ya:yb, xa:xb].to(cdt)
            out = torch.addcmul(under, a_out, rgb.mul_(unit) - under).round_().clamp_(0, 255)
            images[b, :, ya:yb, xa:xb] = out.to(out_dtype)
        elif out_dtype == cdt:  # blended in place: the canvas is already this dtype
            under = images[b, :, ya:yb, xa:xb]
            under.addcmul_(a_out, rgb.sub_(under))
        else:
            under = images[b, :, ya:yb, xa:xb].to(cdt)
            images[b, :, ya:yb, xa:xb] = torch.addcmul(under, a_out, rgb - under).to(out_dtype)
        masks[b, ya:yb, xa:xb] = a_out.to(masks.dtype)
    return images, masks
