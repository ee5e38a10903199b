"""Reading checkpoint files we did not write, without running code from them.

One loader for every model backend (SAM, the classifiers, the scorers): ``.safetensors`` files are
read with safetensors; anything else with ``torch.load(path, map_location="cpu",
weights_only=True)``, which refuses pickled objects other than tensors and plain containers. The
only other class allowed is ``argparse.Namespace``, which torchvision's and timm's training scripts
store under ``"args"``. A file that cannot be read this way fails with a :class:`ForcompError`
naming the file and the problem, never with a raw unpickler traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forcomp.errors import ForcompError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# The only non-tensor class a weights_only load may build besides torch's own.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

# Wrappers around a state dict, unwrapped by :func:`load_state_dict_file` (torchvision: "model";
# timm and many others: "state_dict").
WRAPPER_KEYS: tuple[str, ...] = ("model", "state_dict")

_FIX = (
    "forcomp loads checkpoints with torch.load(weights_only=True), which refuses objects other than "
    "tensors, plain containers and argparse.Namespace, because unpickling them can run code. If you "
    "trust the file, save the model's state dict alone: torch.save(model.state_dict(), path)"
)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds {found.group(1)}, which is not an allowed type"
    lines = [ln.strip() for ln in text.splitlines() if "WeightsUnpickler error" in ln]
    if lines:
        return lines[0]
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_checkpoint(path: str | Path, *, what: str = "weights") -> Any:
    """The object stored in a checkpoint file, read without running code from it.

    Args:
        path: a ``.safetensors`` file (a flat name → tensor dict) or a ``torch.save`` file.
        what: what the file is, for error messages (``"SAM checkpoint"``, ``"weights"``).

    Raises:
        ForcompError: naming the file and the problem: empty, not a checkpoint, or holding a type
            that is not allowed.
    """
    import torch

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ForcompError(f"cannot load {what} {path}: {e.strerror or e}") from e
    if size == 0:
        raise ForcompError(
            f"cannot load {what} {path}: the file is empty (0 bytes; an interrupted download or copy?)"
        )
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - safetensors comes with transformers/timm
            raise ImportError(f"reading {path} needs safetensors: pip install safetensors") from e
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # SafetensorError (header too small/large, truncated data...)
            raise ForcompError(
                f"cannot load {what} {path}: it is not a valid safetensors file ({_first_line(e)})"
            ) from e
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    ctx = allow(list(SAFE_GLOBALS)) if allow is not None else contextlib.nullcontext()
    try:
        with ctx:
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, zip errors, truncated files...
        raise ForcompError(f"cannot load {what} {path} safely ({_first_line(e)}). {_FIX}") from e


def is_state_dict(obj: Any) -> bool:
    """A non-empty ``{name: tensor}`` dict."""
    import torch

    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_state_dict_file(path: str | Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """A checkpoint that must hold a state dict (directly or under ``model``/``state_dict``).

    Raises:
        ForcompError: naming the file, when it is not a readable state dict.
    """
    sd = load_checkpoint(path, what=what)
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not is_state_dict(sd):
        raise ForcompError(f"cannot load {what} {path}: it does not hold a state dict (name → tensor)")
    return dict(sd)


# Where training scripts keep the model's weights, in the order tried when no key is given
# (torchvision references: "model"; timm train.py: "state_dict"). EMA weights only on request.
CHECKPOINT_KEYS: tuple[str, ...] = WRAPPER_KEYS
EMA_KEYS: tuple[str, ...] = ("model_ema", "state_dict_ema")


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` prefix (DDP; torchvision's EMA, an ``AveragedModel`` with an extra
    ``n_averaged`` counter that is not a model weight)."""
    keys = [k for k in sd if k != "n_averaged"]
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in sd.items() if k != "n_averaged"}
    return sd


def read_checkpoint(
    path: str | Path, checkpoint_key: str | None = None
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The model state dict in a checkpoint file, and the key it was found under (``None``: the file is one).

    Raises:
        ForcompError: Unsafe or unreadable file; no state dict under the key; a training checkpoint
            without a known key (the message lists the keys and names ``--checkpoint-key``).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if checkpoint_key is not None:
            raise ValueError(
                f"checkpoint_key={checkpoint_key!r}: {path} is a safetensors file, which holds one state "
                "dict and no keys; leave --checkpoint-key out"
            )
        return _strip_prefix(load_state_dict_file(path)), None
    obj = load_checkpoint(path)
    if not isinstance(obj, dict):
        raise ForcompError(f"{path} holds a {type(obj).__name__}, not a state dict (name → tensor)")
    how = "pass --checkpoint-key KEY (checkpoint_key=KEY in Python) naming the entry that holds the weights"
    if checkpoint_key is not None:
        if checkpoint_key not in obj:
            raise ForcompError(
                f"{path} has no entry {checkpoint_key!r} (--checkpoint-key); its entries: {_keys(obj)}"
            )
        key: str | None = checkpoint_key
        sd = obj[checkpoint_key]
    elif is_state_dict(obj):
        key, sd = None, obj
    else:
        key = next((k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            ema = [k for k in EMA_KEYS if isinstance(obj.get(k), dict)]
            hint = f" (EMA weights are under {ema[0]!r}: --checkpoint-key {ema[0]})" if ema else ""
            raise ForcompError(
                f"{path} is neither a state dict nor a training checkpoint with weights under "
                f"{' or '.join(map(repr, CHECKPOINT_KEYS))}; its entries: {_keys(obj)}{hint}; {how}"
            )
        sd = obj[key]
    if not is_state_dict(sd):
        where = f"entry {key!r} of {path}" if key is not None else str(path)
        raise ForcompError(f"{where} does not hold a state dict (name → tensor); {how}")
    if key is not None:
        log.info("%s: using the weights under %r", path, key)
    return _strip_prefix(sd), key


def _keys(obj: dict[Any, Any]) -> str:
    keys = [str(k) for k in obj]
    return ", ".join(keys[:20]) + (" …" if len(keys) > 20 else "")


def _listed(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" … ({len(items)} in all)" if len(items) > limit else "")


def state_dict_mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``sd`` does not load into ``model`` strictly, naming keys and shapes; ``None`` if it does."""
    own = model.state_dict()
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    parts = []
    if shapes:
        parts.append(f"shape mismatch for {_listed(shapes)}")
    if missing:
        parts.append(f"missing keys {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_listed(unexpected)}")
    return "; ".join(parts) or None


def load_state_dict_into(
    model: nn.Module, sd: Mapping[str, torch.Tensor], *, path: str | Path, what: str
) -> nn.Module:
    """``model.load_state_dict(sd, strict=True)``; a mismatch names the keys and shapes that differ.

    Raises:
        ForcompError: ``"{path} does not fit {what}: shape mismatch for fc.weight: checkpoint (10, 512)
            vs model (1000, 512); missing keys …"``.
    """
    problem = state_dict_mismatch(model, sd)
    if problem is not None:
        raise ForcompError(f"weights {path} do not fit {what}: {problem}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # pragma: no cover - the comparison above finds what torch would
        raise ForcompError(f"weights {path} do not fit {what}: {str(e).splitlines()[0]}") from e
    return model
