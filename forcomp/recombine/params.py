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


def n_uniforms(cfg: RecombineConfig) -> int:
    """How many uniform draws one sample's geometry uses (size, x and y position, edge sigma)."""
    return 2 + 2 * abs(cfg.fg_bates_n)


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
    canvas: tuple[int, int],
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
        canvas: output ``(H, W)``.
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
    H, W = canvas
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
    k = n_uniforms(cfg)
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
    area = float(H * W) / (9.0 if cfg.nonant is not None else 1.0)
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
