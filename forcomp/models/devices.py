"""One place that turns a ``device`` argument into a ``torch.device`` the machine really has.

Library and CLI alike refuse a device that is not there at once, with one line naming it and what
is available, instead of failing later inside CUDA initialisation.
"""

from __future__ import annotations

import torch

from forcomp.errors import ForcompError


class DeviceError(ForcompError, ValueError):
    """A requested device is malformed or not present on this machine."""


def available_devices() -> list[str]:
    """The devices this process can use, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: str | torch.device | None, *, default: str = "auto") -> torch.device:
    """``device`` as a ``torch.device`` that exists here.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device``, or None.
        default: what None means: ``"auto"`` (CUDA when available, else the CPU) or a device name.

    Raises:
        DeviceError: the name is not a device, or the device is not available (the message lists
            the ones that are).
    """
    if device is None:
        if default != "auto":
            return resolve_device(default)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"device {device!r} is not a device name; use one of {', '.join(available_devices())}"
        ) from None
    have = available_devices()
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(device)!r} was requested but CUDA is not available here "
                f"(available: {', '.join(have)}); use device 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {str(device)!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (available: {', '.join(have)})"
            )
        return dev
    if dev.type == "mps" and "mps" in have:
        return dev
    if dev.type == "meta":
        return dev
    raise DeviceError(f"device {str(device)!r} is not available here (available: {', '.join(have)})")
