"""Foreground augmentation before pasting: apply a user's transform to an RGBA foreground.

Accepts a torchvision v2 transform (or any callable on a ``(4, h, w)`` uint8 tensor) or an
albumentations ``Compose`` (HWC RGBA arrays). Seeded datasets seed the transform per item, so
``ForComp(seed=s)[i]`` stays reproducible with random augmentations; outputs are checked and brought
back to ``(4, h, w)`` uint8 (float outputs follow torchvision's and albumentations' [0, 1]
convention). Colour transforms that accept only RGB are wrapped in :class:`KeepAlpha`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _is_albumentations(t: Any) -> bool:
    return type(t).__module__.startswith("albumentations")


def _call(t: Any, image: torch.Tensor) -> torch.Tensor:
    """``t`` on a ``(C, h, w)`` uint8 tensor; albumentations get and return HWC arrays."""
    if _is_albumentations(t):
        out = t(image=image.permute(1, 2, 0).numpy())["image"]
        return torch.as_tensor(np.ascontiguousarray(out)).permute(2, 0, 1)
    return torch.as_tensor(t(image))


class KeepAlpha:
    """Apply ``transform`` to the RGB channels of an RGBA foreground and keep its alpha.

    For colour transforms that accept only 1 or 3 channels (torchvision v2 ``ColorJitter``,
    ``RandomGrayscale``, albumentations ``ColorJitter`` ...). Geometric transforms already work on
    RGBA and must not be wrapped (the alpha would not follow them).

    Example:
        >>> from torchvision.transforms import v2
        >>> fg_tf = KeepAlpha(v2.ColorJitter(0.4, 0.4, 0.4))  # ForComp(..., fg_transform=fg_tf)
    """

    def __init__(self, transform: Callable[..., Any]) -> None:
        self.transform = transform

    def __call__(self, rgba: torch.Tensor) -> torch.Tensor:
        rgb = _call(self.transform, torch.as_tensor(rgba)[:3])
        if rgb.shape[-2:] != rgba.shape[-2:]:
            raise ValueError(
                f"KeepAlpha: {self.transform!r} changed the image size {tuple(rgba.shape[-2:])} -> "
                f"{tuple(rgb.shape[-2:])}; geometric transforms go unwrapped in fg_transform"
            )
        return torch.cat([_to_uint8(rgb), rgba[3:]], 0)

    def set_random_seed(self, seed: int) -> None:
        """Seed the wrapped albumentations pipeline (torch transforms use torch's RNG)."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"KeepAlpha({self.transform!r})"


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x
    if x.dtype.is_floating_point:  # torchvision / albumentations convention: floats are in [0, 1]
        return (x.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
    return x.clamp(0, 255).to(torch.uint8)


def apply_fg_transform(transform: Any, fg: torch.Tensor, *, seed: int | None, name: str) -> torch.Tensor:
    """``transform`` applied to the ``(4, h, w)`` uint8 foreground ``fg`` (read from ``name``).

    With ``seed``, the transform's randomness is seeded from it (torch's RNG in a forked state, an
    albumentations pipeline through ``set_random_seed``), leaving the global RNGs as they were.

    Raises:
        ValueError: the transform failed or returned something that is not an RGBA image; the
            message names the file and the transform.
    """
    try:
        if seed is None:
            out = _call(transform, fg)
        elif hasattr(transform, "set_random_seed"):  # albumentations >= 1.4, KeepAlpha
            transform.set_random_seed(seed % 2**32)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = _call(transform, fg)
        else:
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    random.seed(seed)
                    np.random.seed(seed % 2**32)
                    out = _call(transform, fg)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
    except Exception as e:
        hint = ""
        if "channel" in str(e).lower():
            hint = " Colour transforms that take RGB only: wrap them, fg_transform=forcomp.KeepAlpha(...)."
        raise ValueError(
            f"fg_transform {transform!r} failed on {name} (a (4, h, w) uint8 RGBA tensor): {e}.{hint}"
        ) from e
    if out.dim() != 3 or out.shape[0] != 4 or min(out.shape[1:]) < 1:
        raise ValueError(
            f"fg_transform {transform!r} must return a (4, h, w) RGBA image, got shape "
            f"{tuple(out.shape)} for {name}. Colour transforms that take RGB only: wrap them, "
            "fg_transform=forcomp.KeepAlpha(...)."
        )
    return _to_uint8(out).contiguous()
