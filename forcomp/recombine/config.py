"""``RecombineConfig``: the recombination's settings, validated once, passed as one object.

Parameters mean what they mean in the ForAug authors' ``ForNet`` (names in brackets where ours
differ): ``background`` (background_combination; "orig" = ForNet's "original"), ``fg_scale_jitter``,
``pruning_ratio``, ``fg_size_mode``, ``fg_bates_n``, ``mask_smoothing_sigma``, ``rel_jut_out``,
``nonant`` (fg_in_nonant), ``size_factor`` (size_fact), ``orig_img_prob``. ``revlinear``
decreases from 1 to 0 over the epochs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from typing_extensions import TypedDict

Background = Literal["orig", "same", "all"]
SizeMode = Literal["range", "min", "max", "mean"]
SCHEDULES = ("linear", "revlinear", "cos")
MAX_BATES_N = 64


def canvas_size(size: Any) -> tuple[int, int]:
    """``size`` as ``(h, w)``: an int, or a pair of ints, each >= 8."""
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    if (
        isinstance(size, (str, bytes, bool))
        or not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
        or min(pair) < 8
    ):
        raise ValueError(f"size must be an int or (h, w) of ints, each >= 8, got {size!r}")
    return int(pair[0]), int(pair[1])


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

    ``crop_scale`` and ``hflip_prob`` may be ``"auto"``: :meth:`resolved` then follows the split as
    torchvision's presets and timm do (train: ``(0.08, 1)`` and 0.5; any other split: the whole
    background, no flip). ``ForComp`` resolves its config; ``Recombine`` needs none of the two.
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
    crop_scale: tuple[float, float] | None | Literal["auto"] = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float | Literal["auto"] = 0.0

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
            if (v is None or v == "auto") and name == "crop_scale":
                continue
            if (
                isinstance(v, (str, bytes))
                or not hasattr(v, "__len__")
                or len(v) != 2
                or not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v)
            ):
                raise ValueError(f"{name} must be a pair (lo, hi) of numbers, got {v!r}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if isinstance(self.crop_scale, tuple) and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale!r}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio!r}")
        if isinstance(self.hflip_prob, numbers.Real) and not isinstance(self.hflip_prob, bool):
            object.__setattr__(self, "hflip_prob", float(self.hflip_prob))
        if self.hflip_prob != "auto" and not (
            isinstance(self.hflip_prob, float) and 0 <= self.hflip_prob <= 1
        ):
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

    def resolved(self, split: str, size: tuple[int, int] | None) -> RecombineConfig:
        """This config with ``"auto"`` crop and flip decided for ``split`` and output ``size``.

        ``size=None`` (the per-sample path: the user's transform crops and flips) allows no fused
        crop or flip.
        """
        asks_crop = isinstance(self.crop_scale, tuple)
        asks_flip = self.hflip_prob != "auto" and self.hflip_prob != 0
        if size is None and (asks_crop or asks_flip):
            raise ValueError(
                "crop_scale/hflip_prob fuse the crop and flip into the recombination's output and need "
                "size=...; with size=None the transform gets the whole composite as a PIL image and does "
                "its own RandomResizedCrop and flip"
            )
        train = split == "train" and size is not None
        crop_scale = self.crop_scale
        if crop_scale == "auto":
            crop_scale = (0.08, 1.0) if train else None
        hflip_prob = self.hflip_prob
        if hflip_prob == "auto":
            hflip_prob = 0.5 if train else 0.0
        return dataclasses.replace(self, crop_scale=crop_scale, hflip_prob=hflip_prob)

    @property
    def fused(self) -> bool:
        """Whether a crop or flip is fused into the output (the paste is then planned on the
        full-resolution background). Needs a resolved config."""
        return self.crop_range is not None or self.flip_prob > 0

    @property
    def crop_range(self) -> tuple[float, float] | None:
        """``crop_scale`` of a resolved config."""
        self.check_resolved()
        return self.crop_scale  # type: ignore[return-value]

    @property
    def flip_prob(self) -> float:
        """``hflip_prob`` of a resolved config."""
        self.check_resolved()
        return self.hflip_prob  # type: ignore[return-value]

    def check_resolved(self) -> None:
        if self.crop_scale == "auto" or self.hflip_prob == "auto":
            raise ValueError("crop_scale/hflip_prob are 'auto': call config.resolved(split, size) first")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecombineOptions(TypedDict, total=False):
    """``RecombineConfig``'s fields but ``background`` as keyword arguments (``ForComp(..., nonant=4)``,
    where ``background`` is a parameter of its own)."""

    fg_scale_jitter: float
    pruning_ratio: float
    fg_size_mode: SizeMode
    fg_bates_n: int
    mask_smoothing_sigma: float
    rel_jut_out: float
    nonant: int | None
    size_factor: float
    orig_img_prob: float | str
    epochs: int | None
    crop_scale: tuple[float, float] | None | Literal["auto"]
    crop_ratio: tuple[float, float]
    hflip_prob: float | Literal["auto"]


class RecombineKwargs(RecombineOptions, total=False):
    """All of ``RecombineConfig``'s fields as keyword arguments (``Recombine(background="all")``)."""

    background: Background
