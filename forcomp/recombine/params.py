"""All randomness and geometry of the recombination, no pixels.

A sample's random numbers are drawn once, as a :class:`SampleDraws` record whose fields name
what each number decides (object size, position, edge sigma, crop box, flip, original image);
:func:`plan` turns draws into geometry: the paste (:func:`sample_params`), composed with the
fused crop and flip (:func:`sample_crop`, :func:`compose_crop`) when the config asks for them.
Every draw comes from an explicit ``torch.Generator`` (no numpy global RNG, so DataLoader workers
never repeat each other).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from forcomp.recombine.config import MAX_BATES_N, SCHEDULES, Background, RecombineConfig, SizeMode

__all__ = [
    "CROP_TRIES",
    "MAX_BATES_N",
    "SCHEDULES",
    "Background",
    "CropParams",
    "Plan",
    "RecombineConfig",
    "RecombineParams",
    "SampleDraws",
    "SizeMode",
    "bates_from",
    "compose_crop",
    "derive_seed",
    "draw_batch",
    "draw_sample",
    "fg_fill",
    "n_paste_uniforms",
    "n_uniforms",
    "plan",
    "sample_crop",
    "sample_params",
]


class RecombineParams(NamedTuple):
    """Geometry of one batch, all ``(B,)`` tensors on the batch's device, in output pixels.

    ``x0, y0`` is the top-left corner of the pasted foreground crop, ``w, h`` its size (it may
    extend past the canvas), ``sigma`` the edge-feathering sigma. Replaying the same params gives
    bit-identical output (kornia's ``params=``).
    """

    x0: torch.Tensor
    y0: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    sigma: torch.Tensor


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32)


CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params


def n_paste_uniforms(cfg: RecombineConfig) -> int:
    """Uniforms of the paste itself (size, x and y position, edge sigma): the first of a sample's."""
    return 2 + 2 * abs(cfg.fg_bates_n)


def n_uniforms(cfg: RecombineConfig) -> int:
    """How many uniform draws one sample uses: the paste's, then the crop's (2 per try + the
    position), then the flip's. Extras come last, so the paste's draws do not depend on them."""
    n = n_paste_uniforms(cfg)
    if cfg.crop_range is not None:
        n += 2 * CROP_TRIES + 2
    return n + (1 if cfg.flip_prob > 0 else 0)


class SampleDraws(NamedTuple):
    """A batch's random numbers, each uniform in [0, 1) and named by what it decides.

    Attributes:
        size: ``(B,)`` the object's area within its size range.
        x, y: ``(B, |fg_bates_n|)`` the position's Bates draws per axis.
        sigma: ``(B,)`` the edge sigma within ``[0.1, 1] * mask_smoothing_sigma``.
        crop_area, crop_aspect: ``(B, CROP_TRIES)`` the crop box's tries (None without a crop).
        crop_y, crop_x: ``(B,)`` the crop box's position (None without a crop).
        flip: ``(B,)`` the flip's draw (None when ``hflip_prob`` is 0).
        use_orig: ``(B,)`` bool: the untouched source image instead (None when never).
    """

    size: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    sigma: torch.Tensor
    crop_area: torch.Tensor | None = None
    crop_aspect: torch.Tensor | None = None
    crop_y: torch.Tensor | None = None
    crop_x: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    use_orig: torch.Tensor | None = None

    @classmethod
    def from_uniforms(
        cls, u: torch.Tensor, cfg: RecombineConfig, use_orig: torch.Tensor | None = None
    ) -> SampleDraws:
        """Name the columns of ``u`` ``(B, n)``: the paste's first, then the crop's, then the flip's
        (``n_uniforms(cfg)`` columns; the paste's alone when ``n = n_paste_uniforms(cfg)``)."""
        n, k = abs(cfg.fg_bates_n), n_paste_uniforms(cfg)
        B = u.shape[0]
        out = {"size": u[:, 0], "x": u[:, 1 : 1 + n], "y": u[:, 1 + n : 1 + 2 * n], "sigma": u[:, k - 1]}
        j = k
        if u.shape[1] > k and cfg.crop_range is not None:
            t = u[:, j : j + 2 * CROP_TRIES].reshape(B, CROP_TRIES, 2)
            out |= {"crop_area": t[..., 0], "crop_aspect": t[..., 1]}
            out |= {"crop_y": u[:, j + 2 * CROP_TRIES], "crop_x": u[:, j + 2 * CROP_TRIES + 1]}
            j += 2 * CROP_TRIES + 2
        if u.shape[1] > j and cfg.flip_prob > 0:
            out["flip"] = u[:, j]
        return cls(**out, use_orig=use_orig)

    def paste_uniforms(self) -> torch.Tensor:
        """``(B, n_paste_uniforms)``: what :func:`sample_params` reads."""
        return torch.cat([self.size[:, None], self.x, self.y, self.sigma[:, None]], 1)

    def crop_uniforms(self) -> torch.Tensor:
        """``(B, n)``: what :func:`sample_crop` reads (the crop's tries and position, the flip)."""
        cols: list[torch.Tensor] = []
        if self.crop_area is not None and self.crop_aspect is not None:
            B = self.crop_area.shape[0]
            cols.append(torch.stack([self.crop_area, self.crop_aspect], -1).reshape(B, 2 * CROP_TRIES))
            cols += [self.crop_y[:, None], self.crop_x[:, None]]  # type: ignore[index]
        if self.flip is not None:
            cols.append(self.flip[:, None])
        return torch.cat(cols, 1) if cols else self.size.new_empty((self.size.shape[0], 0))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SampleDraws:
        return SampleDraws(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in self))  # type: ignore[arg-type]

    @staticmethod
    def cat(draws: list[SampleDraws]) -> SampleDraws:
        """One batch of draws from per-sample ones."""
        fields = (None if f[0] is None else torch.cat(list(f)) for f in zip(*draws, strict=True))
        return SampleDraws(*fields)  # type: ignore[arg-type]


def draw_sample(cfg: RecombineConfig, epoch: int, *, generator: torch.Generator) -> SampleDraws:
    """One sample's draws (a ``B = 1`` record), in a fixed order: the original-image coin (when
    ``orig_img_prob`` is above 0 at ``epoch``), then the paste's, crop's and flip's uniforms."""
    p = cfg.orig_prob(epoch)
    use_orig = None
    if p > 0:
        use_orig = torch.tensor([float(torch.rand((), generator=generator)) < p])
    u = torch.rand(n_uniforms(cfg), generator=generator)
    return SampleDraws.from_uniforms(u[None], cfg, use_orig)


def draw_batch(
    cfg: RecombineConfig, batch: int, *, generator: torch.Generator, paste_only: bool = False
) -> SampleDraws:
    """A batch's draws on ``generator``'s device (row by row, as :func:`draw_sample`'s uniforms)."""
    n = n_paste_uniforms(cfg) if paste_only else n_uniforms(cfg)
    return SampleDraws.from_uniforms(_uniform((batch, n), generator, generator.device), cfg)


def fg_fill(fg: torch.Tensor, fg_hw: torch.Tensor) -> torch.Tensor:
    """``(B,)`` share of each valid foreground crop covered by the object (mean alpha) of a padded
    ``(B, 4, Hf, Wf)`` uint8 batch; the size rule divides the object's area by it."""
    a = fg[:, 3].float().sum((1, 2)) / 255.0
    return a / (fg_hw[:, 0] * fg_hw[:, 1]).float().clamp_min(1)


class Plan(NamedTuple):
    """A batch's geometry: ``params`` in output pixels (what the kernel reads) and, where a crop or
    flip is fused, ``crop``: the box in full-background pixels and the flip bit."""

    params: RecombineParams
    crop: CropParams | None = None


def plan(
    fg_ratio: torch.Tensor,
    bg_ratio: torch.Tensor,
    fg_hw: torch.Tensor,
    fg_fill: torch.Tensor,
    canvas: tuple[int, int] | torch.Tensor,
    cfg: RecombineConfig,
    draws: SampleDraws,
    *,
    out_hw: tuple[int, int] | None = None,
) -> Plan:
    """The geometry of a batch from its draws: the paste on ``canvas``, composed with the fused crop
    and flip into ``out_hw`` when ``out_hw`` is given (``canvas`` is then the ``(B, 2)``
    full-resolution backgrounds' sizes). Arguments as :func:`sample_params`'s."""
    if _one_cpu_sample(fg_ratio, bg_ratio, fg_hw, fg_fill, canvas, draws):
        return _plan_one(fg_ratio, bg_ratio, fg_hw, fg_fill, canvas, cfg, draws, out_hw)
    paste = sample_params(fg_ratio, bg_ratio, fg_hw, fg_fill, canvas, cfg, uniforms=draws)
    if out_hw is None:
        return Plan(paste)
    if not isinstance(canvas, torch.Tensor):
        canvas = torch.tensor([list(canvas)] * fg_ratio.shape[0])
    crop = sample_crop(canvas, cfg, draws, out_hw)
    return Plan(compose_crop(paste, crop, out_hw), crop)


def _size_bounds(mode: str, fr: Any, br: Any, minimum: Any, maximum: Any, two: Any) -> tuple[Any, Any]:
    """The object's area-share bounds ``(lo, hi)`` from its own and the background's ratios, per
    ``fg_size_mode``; one rule for the batched plan (torch) and the one-sample plan (numpy float32)."""
    if mode == "range":
        return minimum(fr, br), maximum(fr, br)
    if mode == "min":
        lo = minimum(fr, br)
    elif mode == "max":
        lo = maximum(fr, br)
    else:
        lo = (fr + br) / two
    return lo, lo


def _one_cpu_sample(
    fg_ratio: torch.Tensor,
    bg_ratio: torch.Tensor,
    fg_hw: torch.Tensor,
    fg_fill: torch.Tensor,
    canvas: tuple[int, int] | torch.Tensor,
    draws: SampleDraws,
) -> bool:
    """Whether :func:`plan` may take the one-sample path (what each ``ForComp`` item plans)."""
    tensors = [fg_ratio, bg_ratio, fg_hw, fg_fill, *(t for t in draws if t is not None)]
    if isinstance(canvas, torch.Tensor):
        tensors.append(canvas)
    return (
        isinstance(draws, SampleDraws)
        and fg_ratio.shape == (1,)
        and draws.size.shape == (1,)
        and all(t.device.type == "cpu" for t in tensors)
        and all(t.dtype == torch.float32 for t in (fg_ratio, bg_ratio, fg_fill, draws.size, draws.x))
    )


_f32 = np.float32


def _plan_one(
    fg_ratio: torch.Tensor,
    bg_ratio: torch.Tensor,
    fg_hw: torch.Tensor,
    fill: torch.Tensor,
    canvas: tuple[int, int] | torch.Tensor,
    cfg: RecombineConfig,
    draws: SampleDraws,
    out_hw: tuple[int, int] | None,
) -> Plan:
    """:func:`plan` for one sample on the CPU in scalars: the same operations in the same order
    and precision (float32 as numpy scalars; float64 as Python floats; torch's own ``exp`` for the
    crop's aspects), about 60 one-element torch operations fewer. Batches take the tensor path;
    the tests compare both bit for bit."""
    f = _f32
    H: np.float32 | float
    W: np.float32 | float
    if isinstance(canvas, torch.Tensor):
        ch, cw = (int(v) for v in canvas.reshape(2).tolist())
        H, W = f(ch), f(cw)
        area: np.float32 | float = H * W / f(9.0 if cfg.nonant is not None else 1.0)
    else:
        ch, cw = int(canvas[0]), int(canvas[1])
        H, W = float(canvas[0]), float(canvas[1])
        area = f(H * W / (9.0 if cfg.nonant is not None else 1.0))
    fr, br = f(fg_ratio.item()), f(bg_ratio.item())
    lo, hi = _size_bounds(cfg.fg_size_mode, fr, br, np.minimum, np.maximum, f(2))
    n, j = abs(cfg.fg_bates_n), cfg.fg_scale_jitter
    u = f(draws.size.item())
    ratio = (lo * f(1 - j) + u * (hi * f(1 + j) - lo * f(1 - j))) * f(cfg.size_factor)
    crop_area = f(area) * ratio / np.maximum(f(fill.item()), f(1e-6))
    fh_i, fw_i = (int(v) for v in fg_hw.reshape(2).tolist())
    fh, fw = np.maximum(f(fh_i), f(1)), np.maximum(f(fw_i), f(1))
    # torch's sqrt, not numpy's: torch's float32 sqrt is not always correctly rounded
    h, w = (np.maximum(f(v), f(1.0)) for v in _torch_sqrt([crop_area * fh / fw, crop_area * fw / fh]))
    if cfg.nonant is not None:
        r, c = divmod(cfg.nonant, 3)
        Wf, Hf = f(W), f(H)
        if isinstance(canvas, torch.Tensor):
            x_lo, x_hi = f(c) * Wf / f(3) + f(0) * w, f(c + 1) * Wf / f(3) - w
            y_lo, y_hi = f(r) * Hf / f(3) + f(0) * h, f(r + 1) * Hf / f(3) - h
        else:
            x_lo, x_hi = f(c * W / 3) + f(0) * w, f((c + 1) * W / 3) - w
            y_lo, y_hi = f(r * H / 3) + f(0) * h, f((r + 1) * H / 3) - h
        x_mid, y_mid = (x_lo + x_hi) / f(2), (y_lo + y_hi) / f(2)
        if x_lo > x_hi:
            x_lo = x_hi = x_mid
        if y_lo > y_hi:
            y_lo = y_hi = y_mid
    else:
        jo = cfg.rel_jut_out
        a_lo, a_hi = f(-jo) * w, f(W) - w * f(1 - jo)
        b_lo, b_hi = f(-jo) * h, f(H) - h * f(1 - jo)
        x_lo, x_hi = np.minimum(a_lo, a_hi), np.maximum(a_lo, a_hi)
        y_lo, y_hi = np.minimum(b_lo, b_hi), np.maximum(b_lo, b_hi)
    if cfg.fg_bates_n == 0:
        zx = zy = f(0.5)
    elif n == 1:
        zx, zy = f(draws.x.item()), f(draws.y.item())
    else:  # torch's float32 sum order
        zx, zy = f(draws.x.mean(1).item()), f(draws.y.mean(1).item())
    if cfg.fg_bates_n < 0:
        zx, zy = ((z + f(0.5)) % f(1.0) for z in (zx, zy))
    x0 = x_lo + zx * (x_hi - x_lo)
    y0 = y_lo + zy * (y_hi - y_lo)
    sigma = (f(draws.sigma.item()) * f(0.9) + f(0.1)) * f(cfg.mask_smoothing_sigma)
    sigma = np.minimum(sigma, np.minimum(w, h) / f(8))
    if out_hw is None:
        return Plan(_params_of(x0, y0, w, h, sigma))
    crop = _crop_one(ch, cw, cfg, draws, out_hw)
    Ho, Wo = out_hw
    sx, sy = f(1) / f(crop[2]) * f(Wo), f(1) / f(crop[3]) * f(Ho)  # int / tensor: reciprocal, times
    x0, y0 = (x0 - f(crop[0])) * sx, (y0 - f(crop[1])) * sy
    w, h = w * sx, h * sy
    if crop[4]:
        x0 = f(Wo) - (x0 + w)
    cx, cy, cw_t, ch_t = torch.tensor([[v] for v in crop[:4]], dtype=torch.float32).unbind(0)
    return Plan(
        _params_of(x0, y0, w, h, sigma * f(_torch_sqrt([sx * sy])[0])),
        CropParams(x0=cx, y0=cy, w=cw_t, h=ch_t, flip=torch.tensor([crop[4]])),
    )


def _torch_sqrt(values: list[np.float32] | list[float], dtype: torch.dtype = torch.float32) -> list[float]:
    """torch's ``sqrt`` of ``values`` (one row, as the tensor path lays them out)."""
    return torch.tensor([float(v) for v in values], dtype=dtype).sqrt_().tolist()


def _params_of(*values: np.float32) -> RecombineParams:
    return RecombineParams(*torch.from_numpy(np.array(values, dtype=np.float32).reshape(5, 1)).unbind(0))


def _crop_one(
    H_i: int, W_i: int, cfg: RecombineConfig, draws: SampleDraws, out_hw: tuple[int, int]
) -> tuple[float, float, float, float, bool]:
    """:func:`sample_crop` for one sample in Python floats (its float64, operation by operation)."""
    H, W = float(H_i), float(W_i)
    u = draws.crop_uniforms()[0].tolist()
    crop_range = cfg.crop_range
    x0: float
    y0: float
    if crop_range is None:
        s = max((1.0 / H) * out_hw[0], (1.0 / W) * out_hw[1])  # int / tensor: reciprocal, times
        w, h = min(round((1.0 / s) * out_hw[1]), W), min(round((1.0 / s) * out_hw[0]), H)
        x0, y0 = float(math.floor((W - w) / 2)), float(math.floor((H - h) / 2))
        k = 0
    else:
        lo, hi = crop_range
        lr = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        areas = [(H * W) * (lo + u[2 * i] * (hi - lo)) for i in range(CROP_TRIES)]
        # torch's exp (vectorised for part of the row): the same aspects to the last bit
        logs = [lr[0] + u[2 * i + 1] * (lr[1] - lr[0]) for i in range(CROP_TRIES)]
        e = torch.tensor([logs], dtype=torch.float64)
        aspects = e.exp_()[0].tolist()
        tws = _torch_sqrt([a * asp for a, asp in zip(areas, aspects, strict=True)], torch.float64)
        ths = _torch_sqrt([a / asp for a, asp in zip(areas, aspects, strict=True)], torch.float64)
        x0 = y0 = w = h = 0.0
        for tw_raw, th_raw in zip(tws, ths, strict=True):
            tw, th = float(round(tw_raw)), float(round(th_raw))
            if 0 < tw <= W and 0 < th <= H:
                w, h = tw, th
                py, px = u[2 * CROP_TRIES], u[2 * CROP_TRIES + 1]
                y0 = min(float(math.floor(py * (H - h + 1))), H - h)
                x0 = min(float(math.floor(px * (W - w + 1))), W - w)
                break
        else:
            in_ratio = W / H
            r0, r1 = cfg.crop_ratio
            w = W if in_ratio < r0 else (float(round(H * r1)) if in_ratio > r1 else W)
            h = float(round(W / r0)) if in_ratio < r0 else H
            x0, y0 = float(math.floor((W - w) / 2)), float(math.floor((H - h) / 2))
        k = 2 * CROP_TRIES + 2
    flip = cfg.flip_prob > 0 and u[k] < cfg.flip_prob
    return float(x0), float(y0), float(w), float(h), bool(flip)


class CropParams(NamedTuple):
    """Crop box of each sample in full-resolution background pixels (whole pixels, as
    torchvision's ``get_params``) and its flip bit; all ``(B,)``."""

    x0: torch.Tensor
    y0: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    flip: torch.Tensor


def sample_crop(
    bg_hw: torch.Tensor, cfg: RecombineConfig, uniforms: torch.Tensor | SampleDraws, out_hw: tuple[int, int]
) -> CropParams:
    """torchvision's ``RandomResizedCrop.get_params`` for a batch, from explicit uniforms.

    Args:
        bg_hw: ``(B, 2)`` full background height, width.
        cfg: ``crop_scale``, ``crop_ratio`` and ``hflip_prob`` are used (``crop_scale`` None: the
            whole background, centred box of the output's aspect, as resize-to-cover + centre crop).
        uniforms: the batch's :class:`SampleDraws`, or ``(B, n)`` uniforms: a sample's *after* the
            paste's (``n_uniforms - n_paste``).
        out_hw: the output size (for the whole-background box).

    Same distribution as torchvision: up to 10 tries of (area share ~ U(scale), log aspect ~
    U(log ratio)), the first whose rounded box fits wins, its position uniform over whole pixels;
    if none fits, the centre crop clamped to ``ratio``. Vectorised: all tries are evaluated and the
    first fitting one is selected without ``.item()``.
    """
    if isinstance(uniforms, SampleDraws):
        uniforms = uniforms.crop_uniforms()
    B = bg_hw.shape[0]
    H, W = bg_hw[:, 0].double(), bg_hw[:, 1].double()
    u = uniforms.double()
    crop_range = cfg.crop_range
    if crop_range is None:
        s = torch.maximum(out_hw[0] / H, out_hw[1] / W)  # resize_cover's scale
        w, h = torch.minimum((out_hw[1] / s).round(), W), torch.minimum((out_hw[0] / s).round(), H)
        x0, y0 = torch.div(W - w, 2, rounding_mode="floor"), torch.div(H - h, 2, rounding_mode="floor")
        k = 0
    else:
        lo, hi = crop_range
        lr = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        t = u[:, : 2 * CROP_TRIES].reshape(B, CROP_TRIES, 2)
        area = (H * W)[:, None] * (lo + t[..., 0] * (hi - lo))
        aspect = torch.exp(lr[0] + t[..., 1] * (lr[1] - lr[0]))
        tw = torch.sqrt(area * aspect).round()
        th = torch.sqrt(area / aspect).round()
        fits = (tw > 0) & (tw <= W[:, None]) & (th > 0) & (th <= H[:, None])
        first = torch.argmax(fits.to(torch.int8), 1, keepdim=True)  # first fitting try (0 if none)
        any_fit = fits.any(1)
        cw, ch = tw.gather(1, first)[:, 0], th.gather(1, first)[:, 0]
        pos = u[:, 2 * CROP_TRIES : 2 * CROP_TRIES + 2]
        # torch.randint(0, H - h + 1): a whole pixel, uniform
        cy = torch.floor(pos[:, 0] * (H - ch + 1)).clamp_max(H - ch)
        cx = torch.floor(pos[:, 1] * (W - cw + 1)).clamp_max(W - cw)
        # fallback: centre crop clamped to the ratio range
        in_ratio = W / H
        fw = torch.where(
            in_ratio < cfg.crop_ratio[0],
            W,
            torch.where(in_ratio > cfg.crop_ratio[1], (H * cfg.crop_ratio[1]).round(), W),
        )
        fh = torch.where(in_ratio < cfg.crop_ratio[0], (W / cfg.crop_ratio[0]).round(), H)
        fx, fy = torch.div(W - fw, 2, rounding_mode="floor"), torch.div(H - fh, 2, rounding_mode="floor")
        x0, y0 = torch.where(any_fit, cx, fx), torch.where(any_fit, cy, fy)
        w, h = torch.where(any_fit, cw, fw), torch.where(any_fit, ch, fh)
        k = 2 * CROP_TRIES + 2
    if cfg.flip_prob > 0:
        flip = u[:, k] < cfg.flip_prob
    else:
        flip = torch.zeros(B, dtype=torch.bool, device=bg_hw.device)
    f = torch.float32
    return CropParams(x0=x0.to(f), y0=y0.to(f), w=w.to(f), h=h.to(f), flip=flip)


def compose_crop(params: RecombineParams, crop: CropParams, out_hw: tuple[int, int]) -> RecombineParams:
    """Paste geometry on the full background → geometry in the output of ``crop`` resized to
    ``out_hw`` and flipped where ``crop.flip``: the object is resampled once, at its final size.

    The edge sigma scales with the crop's magnification (geometric mean of the two axes'), so the
    feathered edge looks as it would after cropping a ForNet composite.
    """
    Ho, Wo = out_hw
    sx, sy = Wo / crop.w, Ho / crop.h
    x0 = (params.x0 - crop.x0) * sx
    y0 = (params.y0 - crop.y0) * sy
    w, h = params.w * sx, params.h * sy
    x0 = torch.where(crop.flip, Wo - (x0 + w), x0)
    return RecombineParams(x0=x0, y0=y0, w=w, h=h, sigma=params.sigma * torch.sqrt(sx * sy))


def bates_from(u: torch.Tensor, n: int) -> torch.Tensor:
    """Bates(n) positions in [0, 1] from uniforms ``u`` ``(B, |n|)``: 0 → 0.5; n < 0 → towards the edges."""
    if n == 0:
        return torch.full(u.shape[:1], 0.5, device=u.device)
    z = u.mean(1)
    if n < 0:
        z = torch.remainder(z + 0.5, 1.0)
    return z


def sample_params(
    fg_ratio: torch.Tensor,
    bg_ratio: torch.Tensor,
    fg_hw: torch.Tensor,
    fg_fill: torch.Tensor,
    canvas: tuple[int, int] | torch.Tensor,
    cfg: RecombineConfig,
    *,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | SampleDraws | None = None,
) -> RecombineParams:
    """Draw size, position and edge sigma for a batch (ForNet's rules, batched, no ``.item()``).

    Args:
        fg_ratio: ``(B,)`` object area / image area of the foreground's source image.
        bg_ratio: ``(B,)`` the same ratio of the background's source image.
        fg_hw: ``(B, 2)`` foreground crop height, width (pixels).
        fg_fill: ``(B,)`` share of the crop the object covers (mean alpha).
        canvas: output ``(H, W)``, or a ``(B, 2)`` tensor of per-sample canvases (ForComp's
            full-resolution backgrounds).
        cfg: the recombination config.
        generator: all draws; must live on the device of the inputs.
        uniforms: instead of ``generator``, each sample's own draws: a :class:`SampleDraws` (what
            ``ForComp`` workers draw per item, so that a sample's geometry does not depend on the
            batch it lands in), or ``(B, n_uniforms(cfg))`` uniforms in [0, 1).

    Returns:
        :class:`RecombineParams` on the inputs' device.
    """
    device = fg_ratio.device
    B = fg_ratio.shape[0]
    H: torch.Tensor | float
    W: torch.Tensor | float
    if isinstance(canvas, torch.Tensor):
        H, W = canvas[:, 0].to(device, torch.float32), canvas[:, 1].to(device, torch.float32)
    else:
        H, W = float(canvas[0]), float(canvas[1])
    fr, br = fg_ratio.float(), bg_ratio.float()
    lo, hi = _size_bounds(cfg.fg_size_mode, fr, br, torch.minimum, torch.maximum, 2)
    k = n_paste_uniforms(cfg)
    if isinstance(uniforms, SampleDraws):
        uniforms = uniforms.paste_uniforms()
    if uniforms is not None and uniforms.dim() == 2 and uniforms.shape[1] > k:
        uniforms = uniforms[:, :k]  # a sample's full draw: the crop's and flip's come after
    if uniforms is None:
        if generator is None:
            raise ValueError("sample_params needs a generator or per-sample uniforms")
        uniforms = _uniform((B, k), generator, device)
    elif tuple(uniforms.shape) != (B, k):
        raise ValueError(f"uniforms must have shape ({B}, {k}) for this config, got {tuple(uniforms.shape)}")
    uniforms = uniforms.to(device=device, dtype=torch.float32)
    n = abs(cfg.fg_bates_n)
    j = cfg.fg_scale_jitter
    u = uniforms[:, 0]
    ratio = (lo * (1 - j) + u * (hi * (1 + j) - lo * (1 - j))) * cfg.size_factor
    area = H * W / (9.0 if cfg.nonant is not None else 1.0)
    if not isinstance(area, torch.Tensor):
        area = float(area)
    crop_area = area * ratio / fg_fill.float().clamp_min(1e-6)
    fh, fw = fg_hw[:, 0].float().clamp_min(1), fg_hw[:, 1].float().clamp_min(1)
    h = torch.sqrt(crop_area * fh / fw).clamp_min(1.0)
    w = torch.sqrt(crop_area * fw / fh).clamp_min(1.0)

    if cfg.nonant is not None:
        r, c = divmod(cfg.nonant, 3)
        x_lo, x_hi = c * W / 3 + 0 * w, (c + 1) * W / 3 - w
        y_lo, y_hi = r * H / 3 + 0 * h, (r + 1) * H / 3 - h
        # An object larger than its cell is centred on the cell, as in ForNet.
        x_mid, y_mid = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
        x_lo, x_hi = torch.where(x_lo > x_hi, x_mid, x_lo), torch.where(x_lo > x_hi, x_mid, x_hi)
        y_lo, y_hi = torch.where(y_lo > y_hi, y_mid, y_lo), torch.where(y_lo > y_hi, y_mid, y_hi)
    else:
        jo = cfg.rel_jut_out
        a_lo, a_hi = -jo * w, W - w * (1 - jo)
        b_lo, b_hi = -jo * h, H - h * (1 - jo)
        # Larger than the canvas: the range flips, i.e. a random crop of the object (ForNet's RandomCrop).
        x_lo, x_hi = torch.minimum(a_lo, a_hi), torch.maximum(a_lo, a_hi)
        y_lo, y_hi = torch.minimum(b_lo, b_hi), torch.maximum(b_lo, b_hi)
    zx = bates_from(uniforms[:, 1 : 1 + n], cfg.fg_bates_n)
    zy = bates_from(uniforms[:, 1 + n : 1 + 2 * n], cfg.fg_bates_n)
    x0 = x_lo + zx * (x_hi - x_lo)
    y0 = y_lo + zy * (y_hi - y_lo)
    sigma = (uniforms[:, k - 1] * 0.9 + 0.1) * cfg.mask_smoothing_sigma
    # Capped at 1/8 of the pasted crop's short side: ForNet's blur-then-2a-1 edge would otherwise
    # erase small objects entirely (a 10 px object at sigma 4 vanishes), which corrupts size-bias
    # measurements and trains on empty images.
    sigma = torch.minimum(sigma, torch.minimum(w, h) / 8)
    return RecombineParams(x0=x0, y0=y0, w=w, h=h, sigma=sigma)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (seed, rank, worker, epoch, index) with splitmix64."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = x * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF
