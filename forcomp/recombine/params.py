"""All randomness of the recombination, no pixels: configs, background choice and geometry.

Parameters mean what they mean in the ForAug authors' ``ForNet`` (names in brackets where ours
differ): ``background`` (background_combination; "orig" = ForNet's "original"), ``fg_scale_jitter``,
``pruning_ratio``, ``fg_size_mode``, ``fg_bates_n``, ``mask_smoothing_sigma``, ``rel_jut_out``,
``nonant`` (fg_in_nonant), ``size_factor`` (size_fact), ``orig_img_prob``. ForNet defects fixed
here: every draw comes from an explicit ``torch.Generator`` (no numpy global RNG, so DataLoader
workers never repeat each other), and ``revlinear`` decreases from 1 to 0 over the epochs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

import torch

Background = Literal["orig", "same", "all"]
SizeMode = Literal["range", "min", "max", "mean"]
SCHEDULES = ("linear", "revlinear", "cos")
MAX_BATES_N = 64


@dataclass(frozen=True)
class RecombineConfig:
    """Validated recombination settings (ForNet's defaults).

    Attributes:
        background: ``orig`` (own inpainted background), ``same`` (random, same class), ``all`` (any).
        fg_scale_jitter: object area drawn in ``[lo * (1 - j), hi * (1 + j)]``.
        pruning_ratio: backgrounds whose object covered >= this share are not drawn (``same``/``all``).
        fg_size_mode: how ``lo, hi`` come from the foreground's and the background's ratios.
        fg_bates_n: position ~ Bates(n) per axis: 1 uniform, larger towards the centre, 0 centre,
            negative towards the edges.
        mask_smoothing_sigma: edge feathering sigma drawn in ``[0.1, 1] * sigma`` (pixels, output).
        rel_jut_out: share of the object that may stick out of the canvas.
        nonant: 0-8 confines the object to that cell of a 3x3 grid (row-major); area is relative
            to the cell.
        size_factor: multiplies the object's area (size-bias measurements).
        orig_img_prob: probability of the untouched source image instead; a float or a schedule
            (``linear`` 0→1, ``revlinear`` 1→0, ``cos``) over ``epochs``.
        epochs: length of the schedule (needed when ``orig_img_prob`` is a schedule).
        crop_scale: None: the output is the whole background (resized to cover the output, centre
            crop: evaluation and val). ``(lo, hi)``: the training recipe's RandomResizedCrop, fused
            into the recombination: the object is placed on the *full-resolution* background
            (ForNet's ``paste_pre_transform=True``), then a crop box of area share in ``(lo, hi)``
            and aspect ratio in ``crop_ratio`` is drawn as torchvision's
            ``RandomResizedCrop.get_params`` does (10 tries, then the centre-crop fallback) and
            resampled once to the output size.
        crop_ratio: aspect-ratio range (width / height) of the crop box.
        hflip_prob: probability of a horizontal flip of the output (background and object).
    """

    background: Background = "all"
    fg_scale_jitter: float = 0.3
    pruning_ratio: float = 0.8
    fg_size_mode: SizeMode = "range"
    fg_bates_n: int = 1
    mask_smoothing_sigma: float = 4.0
    rel_jut_out: float = 0.0
    nonant: int | None = None
    size_factor: float = 1.0
    orig_img_prob: float | str = 0.0
    epochs: int | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.0

    def __post_init__(self) -> None:
        # numpy scalars (np.int64 from an array, np.float32 ...) are taken as the Python numbers
        # they stand for; booleans are not numbers here.
        for name in ("fg_bates_n", "nonant", "epochs"):
            v = getattr(self, name)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                object.__setattr__(self, name, int(v))
        for name in ("fg_scale_jitter", "pruning_ratio", "mask_smoothing_sigma", "rel_jut_out", "size_factor",
                     "orig_img_prob"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
                object.__setattr__(self, name, float(v))
        if self.background not in ("orig", "same", "all"):
            raise ValueError(f"background must be one of 'orig', 'same', 'all', got {self.background!r}")
        if not (isinstance(self.fg_scale_jitter, (int, float)) and 0 <= self.fg_scale_jitter < 1):
            raise ValueError(f"fg_scale_jitter must be in [0, 1), got {self.fg_scale_jitter!r}")
        if not (isinstance(self.pruning_ratio, (int, float)) and 0 < self.pruning_ratio <= 1.1):
            raise ValueError(
                f"pruning_ratio must be in (0, 1.1] (> 1 disables pruning), got {self.pruning_ratio!r}"
            )
        if self.fg_size_mode not in ("range", "min", "max", "mean"):
            raise ValueError(
                f"fg_size_mode must be one of 'range', 'min', 'max', 'mean', got {self.fg_size_mode!r}"
            )
        if (
            not isinstance(self.fg_bates_n, int)
            or isinstance(self.fg_bates_n, bool)
            or abs(self.fg_bates_n) > MAX_BATES_N
        ):
            raise ValueError(
                f"fg_bates_n must be an int in [-{MAX_BATES_N}, {MAX_BATES_N}], got {self.fg_bates_n!r}"
            )
        if not (isinstance(self.mask_smoothing_sigma, (int, float)) and 0 <= self.mask_smoothing_sigma <= 32):
            raise ValueError(f"mask_smoothing_sigma must be in [0, 32], got {self.mask_smoothing_sigma!r}")
        if not (isinstance(self.rel_jut_out, (int, float)) and 0 <= self.rel_jut_out < 1):
            raise ValueError(f"rel_jut_out must be in [0, 1), got {self.rel_jut_out!r}")
        if self.nonant is not None and (
            isinstance(self.nonant, bool) or not isinstance(self.nonant, int) or not 0 <= self.nonant <= 8
        ):
            raise ValueError(
                f"nonant must be None or an int in 0..8 (3x3 grid, row-major), got {self.nonant!r}"
            )
        if not (
            isinstance(self.size_factor, (int, float))
            and math.isfinite(self.size_factor)
            and self.size_factor > 0
        ):
            raise ValueError(f"size_factor must be a finite number > 0, got {self.size_factor!r}")
        for name in ("crop_scale", "crop_ratio"):
            v = getattr(self, name)
            if v is None and name == "crop_scale":
                continue
            if (
                isinstance(v, (str, bytes))
                or not hasattr(v, "__len__")
                or len(v) != 2
                or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v)
            ):
                raise ValueError(f"{name} must be a pair (lo, hi) of numbers, got {v!r}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale!r}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio!r}")
        if isinstance(self.hflip_prob, numbers.Real) and not isinstance(self.hflip_prob, bool):
            object.__setattr__(self, "hflip_prob", float(self.hflip_prob))
        if not (isinstance(self.hflip_prob, float) and 0 <= self.hflip_prob <= 1):
            raise ValueError(f"hflip_prob must be a float in [0, 1], got {self.hflip_prob!r}")
        p = self.orig_img_prob
        if isinstance(p, str):
            if p not in SCHEDULES:
                raise ValueError(f"orig_img_prob must be a float in [0, 1] or one of {SCHEDULES}, got {p!r}")
            if not self.epochs or self.epochs < 1:
                raise ValueError(
                    f"orig_img_prob={p!r} is a schedule over epochs: pass epochs >= 1, got {self.epochs!r}"
                )
        elif not (isinstance(p, (int, float)) and 0 <= p <= 1):
            raise ValueError(f"orig_img_prob must be a float in [0, 1] or one of {SCHEDULES}, got {p!r}")

    def orig_prob(self, epoch: int) -> float:
        """Probability of returning the original image at ``epoch`` (0-based)."""
        p = self.orig_img_prob
        if not isinstance(p, str):
            return float(p)
        t = min(max(epoch / self.epochs, 0.0), 1.0)  # type: ignore[operator]
        if p == "linear":
            return t
        if p == "revlinear":
            return 1.0 - t
        return 1.0 - math.cos(math.pi * t / 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    if cfg.crop_scale is not None:
        n += 2 * CROP_TRIES + 2
    return n + (1 if cfg.hflip_prob > 0 else 0)


class CropParams(NamedTuple):
    """Crop box of each sample in full-resolution background pixels (whole pixels, as
    torchvision's ``get_params``) and its flip bit; all ``(B,)``."""

    x0: torch.Tensor
    y0: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    flip: torch.Tensor


def sample_crop(
    bg_hw: torch.Tensor, cfg: RecombineConfig, uniforms: torch.Tensor, out_hw: tuple[int, int]
) -> CropParams:
    """torchvision's ``RandomResizedCrop.get_params`` for a batch, from explicit uniforms.

    Args:
        bg_hw: ``(B, 2)`` full background height, width.
        cfg: ``crop_scale``, ``crop_ratio`` and ``hflip_prob`` are used (``crop_scale`` None: the
            whole background, centred box of the output's aspect, as resize-to-cover + centre crop).
        uniforms: ``(B, n)`` the sample's uniforms *after* the paste's (``n_uniforms - n_paste``).
        out_hw: the output size (for the whole-background box).

    Same distribution as torchvision: up to 10 tries of (area share ~ U(scale), log aspect ~
    U(log ratio)), the first whose rounded box fits wins, its position uniform over whole pixels;
    if none fits, the centre crop clamped to ``ratio``. Vectorised: all tries are evaluated and the
    first fitting one is selected without ``.item()``.
    """
    B = bg_hw.shape[0]
    H, W = bg_hw[:, 0].double(), bg_hw[:, 1].double()
    u = uniforms.double()
    if cfg.crop_scale is None:
        s = torch.maximum(out_hw[0] / H, out_hw[1] / W)  # resize_cover's scale
        w, h = torch.minimum((out_hw[1] / s).round(), W), torch.minimum((out_hw[0] / s).round(), H)
        x0, y0 = torch.div(W - w, 2, rounding_mode="floor"), torch.div(H - h, 2, rounding_mode="floor")
        k = 0
    else:
        lo, hi = cfg.crop_scale
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
    if cfg.hflip_prob > 0:
        flip = u[:, k] < cfg.hflip_prob
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
    uniforms: torch.Tensor | None = None,
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
        uniforms: instead of ``generator``, each sample's own ``(B, n_uniforms(cfg))`` uniforms in
            [0, 1) — what ``ForComp`` workers draw per item, so that a sample's geometry does not
            depend on the batch it lands in (batch size, workers, shuffling).

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
    mode = cfg.fg_size_mode
    if mode == "range":
        lo, hi = torch.minimum(fr, br), torch.maximum(fr, br)
    elif mode == "min":
        lo = hi = torch.minimum(fr, br)
    elif mode == "max":
        lo = hi = torch.maximum(fr, br)
    else:
        lo = hi = (fr + br) / 2
    k = n_paste_uniforms(cfg)
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
