"""All pixels of the recombination, no randomness: one batched paste kernel.

``composite`` places each foreground with one batched affine ``grid_sample`` (per-sample scale and
translation), anti-aliases when shrinking (per-sample Gaussian pre-blur), feathers the alpha edge
(per-sample Gaussian, then ForNet's ``2a - 1`` re-hardening) and alpha-blends onto the background.
No Python loop over the batch, no ``.item()``: it runs on the batch's device and under
``torch.compile``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from forcomp.recombine.params import RecombineParams

MAX_AA_SIGMA = 2.0


def gaussian_blur_batched(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each sample of ``x`` ``(B, C, H, W)`` with its own ``sigma`` ``(B,)``; kernel ``2 * radius + 1``.

    A sigma near 0 gives (numerically) the identity. Separable, one grouped convolution per axis.
    """
    if radius <= 0:
        return x
    B, C, H, W = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, K)
    k = k.repeat_interleave(C, 0)  # (B*C, K)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=B * C)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=B * C)
    return y.reshape(B, C, H, W)


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
        smoothing_radius: static radius of the feathering kernel (>= 3 * the largest sigma).

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
    cdt = torch.float32 if is_int or bg.dtype in (torch.float16, torch.bfloat16) else bg.dtype
    scale = 255.0 if is_int else 1.0
    B, _, Hf, Wf = fg.shape
    H, W = bg.shape[-2:]
    f = fg.to(cdt) / (255.0 if not fg.dtype.is_floating_point else 1.0)
    b = bg.to(cdt) / scale
    alpha = f[:, 3:4]
    prem = torch.cat([f[:, :3] * alpha, alpha], 1)

    fh, fw = fg_hw[:, 0].to(cdt), fg_hw[:, 1].to(cdt)
    w, h = params.w.to(cdt), params.h.to(cdt)
    # Anti-aliasing: blur the source by about half its shrink factor before sampling.
    shrink = torch.maximum(fw / w, fh / h)
    aa_sigma = ((shrink - 1) * 0.5).clamp(0, MAX_AA_SIGMA)
    prem = gaussian_blur_batched(prem, aa_sigma, math.ceil(3 * MAX_AA_SIGMA))

    # Output normalised coords -> input normalised coords (align_corners=False), per sample.
    ax = fw * W / (Wf * w)
    bx = 2 * fw / (Wf * w) * (W / 2 - params.x0.to(cdt)) - 1
    ay = fh * H / (Hf * h)
    by = 2 * fh / (Hf * h) * (H / 2 - params.y0.to(cdt)) - 1
    zero = torch.zeros_like(ax)
    theta = torch.stack([torch.stack([ax, zero, bx], 1), torch.stack([zero, ay, by], 1)], 1)
    grid = F.affine_grid(theta, [B, 4, H, W], align_corners=False)
    # Samples beyond the valid (unpadded) part must read as transparent: mask the padding region.
    valid_x = (grid[..., 0] + 1) * Wf / 2 <= fw[:, None, None] + 0.5
    valid_y = (grid[..., 1] + 1) * Hf / 2 <= fh[:, None, None] + 0.5
    warped = F.grid_sample(prem, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped * (valid_x & valid_y)[:, None].to(cdt)

    a = warped[:, 3:4]
    rgb = warped[:, :3] / a.clamp_min(1e-6)
    soft = gaussian_blur_batched(a, params.sigma.to(cdt), smoothing_radius)
    soft = (2 * soft - 1).clamp(0, 1)  # ForNet's edge: blur, then keep the inner half (2p - 255)
    # Where sigma is 0 the kernel is a delta: fall back to the sampled alpha itself.
    a_out = torch.where((params.sigma > 0.05)[:, None, None, None], soft, a)
    out = a_out * rgb.clamp(0, 1) + (1 - a_out) * b
    if is_int:
        out = (out * 255.0).round().clamp(0, 255)
    images = out.to(out_dtype)
    masks = a_out[:, 0].to(torch.float32 if is_int else out_dtype)
    if unbatched:
        return images[0], masks[0]
    return images, masks
