"""All pixels of the recombination, no randomness: one batched paste kernel.

The placement is an axis-aligned scale and translation per sample, so it is *separable*: each
foreground is resampled onto the canvas as ``Ry @ fg @ Rxᵀ`` with per-sample resampling matrices
``Ry (B, H, Hf)`` and ``Rx (B, W, Wf)`` (two batched matmuls). The matrices hold a triangle
filter whose support widens with the shrink factor — bilinear when enlarging, anti-aliased like
PIL's ``resize`` when shrinking — and zero columns for the foreground's padding. Edge feathering is
the same trick with per-sample Gaussian matrices on the pasted alpha, then ForNet's ``2a - 1``
re-hardening; alpha blending is premultiplied. No Python loop over the batch, no ``.item()``: it
runs on the batch's device (matmuls are what CPUs and GPUs do fastest) and under ``torch.compile``.
"""

from __future__ import annotations

import torch

from forcomp.recombine.params import RecombineParams


def resample_matrix(
    n_out: int, n_pad: int, n_valid: torch.Tensor, start: torch.Tensor, length: torch.Tensor
) -> torch.Tensor:
    """Per-sample 1-D resampling matrices ``(B, n_out, n_pad)``.

    Source pixels ``[0, n_valid)`` (of a row padded to ``n_pad``) are mapped onto output pixels
    ``[start, start + length)`` (floats, output pixel units; may leave the canvas). Each row holds
    the weights of a triangle filter of half-width ``max(1, n_valid / length)`` source pixels
    (bilinear when enlarging, area-like anti-aliasing when shrinking), normalised as if the source
    continued past its edges, so the object's border fades over one output pixel as with
    zero padding, and padding columns are zero.
    """
    dev, dt = start.device, start.dtype
    step = n_valid / length  # source pixels per output pixel
    half = step.clamp_min(1.0)
    u = torch.arange(n_out, device=dev, dtype=dt) + 0.5
    s = (u[None, :] - start[:, None]) * step[:, None]  # (B, n_out) source coordinate of each output centre
    j = torch.arange(n_pad, device=dev, dtype=dt) + 0.5
    w = (1 - (j[None, None, :] - s[:, :, None]).abs() / half[:, None, None]).clamp_min(0)
    # Normaliser of an unbounded source, sum_j tri((j + 0.5 - s) / r) over all integers j, in closed
    # form (arithmetic series on each side of s): exact, and no data-dependent shapes.
    d0 = torch.ceil(s - 0.5) + 0.5 - s  # distance to the first sample at or right of s, in [0, 1)
    r = half[:, None]
    norm = _tri_side_sum(d0, r) + _tri_side_sum(1 - d0, r)
    w = w / norm[:, :, None].clamp_min(1e-6)
    return w * (j[None, None, :] < n_valid[:, None, None]).to(dt)


def gaussian_matrix(n: int, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-sample Gaussian blur matrices ``(B, n, n)`` truncated at ``radius``; rows sum to 1.

    Rows near the edges are renormalised over the pixels that exist, so a constant stays constant
    (an object touching the canvas edge is not faded there).
    """
    dev, dt = sigma.device, sigma.dtype
    i = torch.arange(n, device=dev, dtype=dt)
    d = i[:, None] - i[None, :]
    s = sigma.clamp_min(1e-3)[:, None, None]
    k = torch.exp(-0.5 * (d[None] / s) ** 2) * (d.abs() <= radius)[None].to(dt)
    return k / k.sum(-1, keepdim=True)


def _tri_side_sum(first: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Sum of ``1 - d / r`` over the samples ``d = first, first + 1, ...`` with ``d < r``."""
    n = torch.ceil(r - first).clamp_min(0)
    return n - (n * first + n * (n - 1) / 2) / r


def composite(
    fg: torch.Tensor,
    fg_hw: torch.Tensor,
    bg: torch.Tensor,
    params: RecombineParams,
    *,
    smoothing_radius: int = 12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste foregrounds onto backgrounds.

    Args:
        fg: ``(B, 4, Hf, Wf)`` RGBA foregrounds, padded at the bottom/right; uint8 or float in [0, 1].
        fg_hw: ``(B, 2)`` valid height, width of each foreground inside the padding.
        bg: ``(B, 3, H, W)`` backgrounds (the output canvas), same dtype family as ``fg``.
        params: placement ``x0, y0, w, h`` and edge ``sigma`` (output pixels), each ``(B,)``.
        smoothing_radius: radius of the feathering kernel (>= 3 * the largest sigma).

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
    out_dtype = bg.dtype
    is_int = not bg.dtype.is_floating_point
    # float64 inputs compute in float64; everything else in float32 (half inputs included: the
    # matmuls accumulate in float32 and the result is cast back).
    cdt = torch.float64 if bg.dtype == torch.float64 else torch.float32
    B, _, Hf, Wf = fg.shape
    H, W = bg.shape[-2:]
    fg_scale = 255.0 if not fg.dtype.is_floating_point else 1.0

    fh, fw = fg_hw[:, 0].to(cdt), fg_hw[:, 1].to(cdt)
    # 1/255 (uint8 input) is folded into the row matrix: one pass less over the pixels.
    ry = resample_matrix(H, Hf, fh, params.y0.to(cdt), params.h.to(cdt)) / fg_scale
    rx = resample_matrix(W, Wf, fw, params.x0.to(cdt), params.w.to(cdt))

    # Premultiply at the source resolution (in fg's units: 255² for uint8, folded into the matrices).
    a_src = fg[:, 3].to(cdt)  # (B, Hf, Wf)
    prem = fg[:, :3].to(cdt) * a_src[:, None]  # (B, 3, Hf, Wf)
    rxt = rx.transpose(1, 2)  # (B, Wf, W)
    # Columns first as one plain bmm over (B, 3·Hf, Wf), then rows channel by channel (bmm, no copies).
    cols = prem.reshape(B, 3 * Hf, Wf) @ (rxt / fg_scale)
    a = (ry @ (a_src @ rxt)).clamp_(0, 1)  # (B, H, W) resampled alpha
    prem_out = torch.stack([torch.bmm(ry, cols[:, c * Hf : (c + 1) * Hf]) for c in range(3)], 1)

    sig = params.sigma.to(cdt)
    gy = gaussian_matrix(H, sig, smoothing_radius)
    gx = gaussian_matrix(W, sig, smoothing_radius) if W != H else gy
    soft = ((gy @ a) @ gx.transpose(1, 2) * 2 - 1).clamp(0, 1)  # ForNet's edge: blur, keep the inner half
    # Where sigma is 0 the kernel is a delta: the sampled alpha itself.
    a_out = torch.where((params.sigma > 0.05)[:, None, None], soft, a)[:, None]
    # Un-premultiply where the object is, then blend: out = a_out * rgb + (1 - a_out) * bg.
    rgb = (prem_out / a[:, None].clamp_min(1e-6)).clamp_(0, 1)
    b = bg.to(cdt)
    if is_int:
        out = torch.addcmul(b, a_out, rgb * 255.0 - b).round_().clamp_(0, 255)
    else:
        out = torch.addcmul(b, a_out, rgb - b)
    images = out.to(out_dtype)
    masks = a_out[:, 0].to(torch.float32 if is_int else out_dtype)
    if unbatched:
        return images[0], masks[0]
    return images, masks
