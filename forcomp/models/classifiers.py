"""Load a classifier from a SPEC string, with the preprocessing it expects.

SPEC forms (tried in this order):

- ``path/to/file.py:factory`` or ``package.module:factory`` — ``factory()`` is called with no
  arguments and must return an ``nn.Module`` (its weights are the factory's business).
- ``torchvision/NAME`` or a bare torchvision model name (``resnet50``, ``vit_b_16``, …) — built with
  random init (``weights=None``), then the state dict ``WEIGHTS/NAME.pth`` is loaded.
- ``timm/NAME`` or a bare timm model name, tags allowed (``vit_small_patch16_224.augreg_in21k``) —
  ``timm.create_model(NAME, pretrained=False)``, then ``WEIGHTS/NAME.pth`` (or ``NAME.safetensors``).

``WEIGHTS`` is ``--weights DIR``, else ``$FORCOMP_WEIGHTS``, else ``./weights``. Nothing is ever
downloaded. A checkpoint may be a bare state dict or a training checkpoint as the torchvision
reference scripts (``{"model": sd, "optimizer": ..., "args": Namespace, ...}``, maybe ``model_ema``)
and timm's ``train.py`` (``{"state_dict": sd, "state_dict_ema": ..., "arch": ..., "args": ...}``)
write them: loading stays ``weights_only`` and allows ``argparse.Namespace`` besides, nothing else;
the model's state dict is ``model``, else ``state_dict`` (EMA weights only when asked for with
``checkpoint_key``); a ``module.`` prefix (DDP, torchvision's EMA wrapper) is stripped. If the
classifier head's size differs from the default (a fine-tuned model), the model is rebuilt with
that many classes.

Preprocessing: the model's own mean/std when known (torchvision weights' transforms, timm's
``resolve_data_config``, or a ``pretrained_cfg`` dict on a factory's module), else ImageNet's.

Input size: the size the model itself states (timm ``patch_embed.img_size``, torchvision ViT
``image_size``) comes before the one in its config (``pretrained_cfg`` describes the pretrained
weights, not necessarily the module built, e.g. a timm ViT created with ``img_size=64``). Models
that only accept that size (timm ``strict_img_size`` without ``dynamic_img_size``, torchvision ViT)
record it as ``fixed_size``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from forcomp.errors import ForcompError, WeightsNotFoundError
from forcomp.models.checkpoints import load_state_dict_into, read_checkpoint
from forcomp.weights import ENV_VAR, resolve_weights_dir

log = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ModelSpecError(ForcompError, ValueError):
    """A model SPEC names no loadable model (bad path, missing factory, unknown name)."""


class InputSizeError(ForcompError, ValueError):
    """The evaluation size conflicts with a model that only accepts one input size."""


@dataclass
class LoadedModel:
    """A classifier plus what is known about it.

    Attributes:
        model: The module, in eval mode, on the CPU.
        spec: The SPEC it was loaded from.
        source: ``"factory"``, ``"torchvision"``, ``"timm"`` or ``"module"`` (an ``nn.Module``
            given directly).
        weights: Checkpoint path, when one was loaded.
        mean, std: The model's own normalisation, or ``None`` when unknown.
        input_size: The model's native square input size, when known.
        fixed_size: ``(h, w)`` when the model accepts only that input size (a fixed-size ViT).
        checkpoint_key: The checkpoint entry the weights came from (``None``: a bare state dict).
    """

    model: nn.Module
    spec: str
    source: str
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: int | None = None
    fixed_size: tuple[int, int] | None = None
    checkpoint_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stated, fixed = model_input_size(self.model)
        if stated is not None and stated[0] == stated[1]:
            self.input_size = stated[0]  # the module's own size beats its (pretrained) config
        if self.fixed_size is None:
            self.fixed_size = fixed

    def identity(self) -> dict[str, Any]:
        """JSON-ready description for reports."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "spec": self.spec,
            "source": self.source,
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "weights": self.weights,
            "checkpoint_key": self.checkpoint_key,
            "n_parameters": int(n_params),
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "input_size": self.input_size,
            "fixed_size": list(self.fixed_size) if self.fixed_size else None,
        }

    def default_size(self) -> int | tuple[int, int]:
        """The evaluation size to use when none is given: the fixed size, the native size, else 224."""
        if self.fixed_size is not None:
            h, w = self.fixed_size
            return h if h == w else (h, w)
        return self.input_size or 224

    def check_size(self, size: int | tuple[int, int]) -> None:
        """Raise :class:`InputSizeError` if ``size`` conflicts with a fixed-size model.

        Raises:
            InputSizeError: Naming the size the model needs and how to pass it.
        """
        if self.fixed_size is None:
            return
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if hw == self.fixed_size:
            return
        h, w = self.fixed_size
        need = f"{h}" if h == w else f"{h}x{w}"
        how = f"pass --size {h} (size={h} in Python)" if h == w else f"pass size=({h}, {w}) in Python"
        raise InputSizeError(
            f"model {self.spec!r} only accepts {need} px inputs (it was built for that size), but the "
            f"evaluation size is {size}; {how}, or omit the size to use the model's own"
        )


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, tuple | list) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    return None


def model_input_size(model: nn.Module) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``(stated, fixed)``: the input size the module states, and that size again if it is the only one
    it accepts (timm ``patch_embed.strict_img_size`` without ``dynamic_img_size``; torchvision ViT).
    """
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(patch_embed, nn.Module):
        stated = _pair(getattr(patch_embed, "img_size", None))
        if stated is not None:
            strict = bool(getattr(patch_embed, "strict_img_size", False))
            dynamic = bool(getattr(model, "dynamic_img_size", False)) or bool(
                getattr(patch_embed, "dynamic_img_pad", False)
            )
            return stated, stated if strict and not dynamic else None
    if hasattr(model, "conv_proj") and hasattr(model, "encoder"):  # torchvision VisionTransformer
        stated = _pair(getattr(model, "image_size", None))
        return stated, stated
    return None, None


def wrap_module(model: nn.Module) -> LoadedModel:
    """Describe an ``nn.Module`` handed over directly (preprocessing from ``pretrained_cfg`` if any)."""
    mean, std, size = _cfg_normalisation(model)
    return LoadedModel(
        model, spec=type(model).__qualname__, source="module", mean=mean, std=std, input_size=size
    )


def load_model(
    spec: str, *, weights_dir: str | os.PathLike[str] | None = None, checkpoint_key: str | None = None
) -> LoadedModel:
    """Load a classifier from ``spec`` (see module docstring).

    Args:
        spec: ``file.py:factory``, ``package.module:factory``, ``[torchvision/]NAME`` or ``[timm/]NAME``.
        weights_dir: Directory of checkpoints (default: ``$FORCOMP_WEIGHTS`` or ``./weights``).
        checkpoint_key: Which entry of a training checkpoint holds the weights to evaluate (e.g.
            ``model_ema``, ``state_dict_ema``); default ``model``, else ``state_dict``, else the file
            itself when it is a bare state dict.

    Returns:
        The model in eval mode on the CPU, with its preprocessing.

    Raises:
        ModelSpecError: Unknown name, unreadable file, missing factory, factory not returning a module.
        WeightsNotFoundError: The checkpoint for a torchvision/timm model is missing.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("model spec is empty; give a torchvision/timm name or path/to/file.py:factory")
    spec = spec.strip()
    wdir = resolve_weights_dir(weights_dir)
    key = checkpoint_key
    if _is_factory_spec(spec):
        if key is not None:
            raise ValueError(
                f"checkpoint_key (--checkpoint-key) applies to torchvision/timm model names whose weights "
                f"forcomp loads; the factory {spec!r} loads its own weights"
            )
        loaded = _load_factory(spec)
    elif spec.startswith("torchvision/"):
        loaded = _load_torchvision(spec.split("/", 1)[1], wdir, spec, key)
    elif spec.startswith("timm/"):
        loaded = _load_timm(spec.split("/", 1)[1], wdir, spec, key)
    elif _torchvision_has(spec):
        loaded = _load_torchvision(spec, wdir, spec, key)
    elif _timm_has(spec):
        loaded = _load_timm(spec, wdir, spec, key)
    else:
        hint = (
            "" if importlib.util.find_spec("timm") else " (timm is not installed: pip install forcomp[eval])"
        )
        raise ModelSpecError(
            f"unknown model spec {spec!r}: not a torchvision or timm model name{hint} and not "
            "'path/to/file.py:factory' or 'package.module:factory'"
        )
    loaded.model.eval()
    log.info("loaded model %s (%s, weights=%s)", spec, loaded.source, loaded.weights)
    return loaded


def _is_factory_spec(spec: str) -> bool:
    if ":" not in spec:
        return False
    left = spec.rsplit(":", 1)[0]
    return not re.fullmatch(r"[A-Za-z]", left)  # "C:" alone is a drive letter, not a module


def _load_factory(spec: str) -> LoadedModel:
    left, name = spec.rsplit(":", 1)
    if not name.isidentifier():
        raise ModelSpecError(f"model spec {spec!r}: {name!r} is not a valid factory name")
    if left.endswith(".py") or "/" in left or "\\" in left:
        path = Path(left)
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: file {path} does not exist")
        mod_name = f"_forcomp_model_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ModelSpecError(f"model spec {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise ModelSpecError(f"model spec {spec!r}: importing {path} failed: {e}") from e
    else:
        try:
            module = importlib.import_module(left)
        except ImportError as e:
            raise ModelSpecError(f"model spec {spec!r}: cannot import module {left!r}: {e}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSpecError(f"model spec {spec!r}: {left} has no callable {name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model spec {spec!r}: {name}() returned {type(model).__name__}, not an nn.Module"
        )
    mean, std, size = _cfg_normalisation(model)
    return LoadedModel(model, spec=spec, source="factory", mean=mean, std=std, input_size=size)


def _cfg_normalisation(
    model: nn.Module,
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, int | None]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
        size = cfg.get("input_size")
        return tuple(cfg["mean"]), tuple(cfg["std"]), int(size[-1]) if size else None
    return None, None, None


def _torchvision_has(name: str) -> bool:
    from torchvision import models

    return name in models.list_models()


def _timm_has(name: str) -> bool:
    try:
        import timm
    except ImportError:
        return False
    return bool(timm.is_model(name))


def _checkpoint_path(wdir: Path, name: str, spec: str) -> Path:
    for ext in (".pth", ".pt", ".safetensors"):
        if (wdir / f"{name}{ext}").is_file():
            return wdir / f"{name}{ext}"
    raise WeightsNotFoundError(
        f"weights for model {spec!r} not found: expected {wdir / (name + '.pth')} (a state dict saved "
        f"with torch.save(model.state_dict(), ...)). Put the file there, or pass --weights DIR / set "
        f"${ENV_VAR}. forcomp never downloads weights."
    )


def _head_classes(model: nn.Module, sd: dict[str, torch.Tensor]) -> int | None:
    """Number of classes in ``sd`` if its classifier head's shape differs from ``model``'s."""
    own = model.state_dict()
    for key, value in reversed(list(sd.items())):
        if key in own and value.dim() in (1, 2) and own[key].shape != value.shape:
            return int(value.shape[0])
    return None


def _load_into(build: Any, sd: dict[str, torch.Tensor], path: Path, spec: str) -> nn.Module:
    model = build(None)
    n = _head_classes(model, sd)
    if n is not None:
        log.info("%s: checkpoint has %d classes; rebuilding the head", spec, n)
        model = build(n)
    return load_state_dict_into(model, sd, path=path, what=f"model {spec!r}")


def _load_torchvision(name: str, wdir: Path, spec: str, checkpoint_key: str | None = None) -> LoadedModel:
    from torchvision import models

    if name not in models.list_models():
        raise ModelSpecError(f"model spec {spec!r}: {name!r} is not a torchvision model")
    path = _checkpoint_path(wdir, name, spec)
    sd, key = read_checkpoint(path, checkpoint_key)

    def build(n: int | None) -> nn.Module:
        return models.get_model(name, weights=None, **({"num_classes": n} if n else {}))

    model = _load_into(build, sd, path, spec)
    mean = std = size = None
    try:
        weights = list(models.get_model_weights(name))
        if weights:
            tf = weights[0].transforms()
            mean, std = tuple(tf.mean), tuple(tf.std)
            size = int(tf.crop_size[0])
    except (ValueError, AttributeError, TypeError):  # models without a weights enum / transforms
        pass
    return LoadedModel(
        model,
        spec=spec,
        source="torchvision",
        weights=str(path),
        mean=mean,
        std=std,
        input_size=size,
        checkpoint_key=key,
    )


def _load_timm(name: str, wdir: Path, spec: str, checkpoint_key: str | None = None) -> LoadedModel:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError as e:
        raise ImportError(f"model spec {spec!r} needs timm: pip install forcomp[eval]") from e
    if not timm.is_model(name):
        raise ModelSpecError(f"model spec {spec!r}: {name!r} is not a timm model")
    path = _checkpoint_path(wdir, name, spec)
    sd, key = read_checkpoint(path, checkpoint_key)

    def build(n: int | None) -> nn.Module:
        kwargs: dict[str, Any] = {"num_classes": n} if n else {}
        return timm.create_model(name, pretrained=False, **kwargs)

    model = _load_into(build, sd, path, spec)
    cfg = resolve_data_config({}, model=model)
    return LoadedModel(
        model,
        spec=spec,
        source="timm",
        weights=str(path),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        input_size=int(cfg["input_size"][-1]),
        checkpoint_key=key,
    )


def resolve_normalize(
    normalize: str | tuple[Any, Any] | list[Any] | None, loaded: LoadedModel | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Turn the ``normalize`` argument into ``(mean, std)`` or ``None`` (feed [0, 1] unchanged).

    ``"imagenet"`` → ImageNet statistics; ``"auto"`` → the model's own when known, else ImageNet;
    ``None``/``"none"`` → no normalisation; ``(mean, std)`` → as given (3 values each).

    Raises:
        ValueError: Naming the parameter and the allowed values.
    """
    if normalize is None or (isinstance(normalize, str) and normalize.lower() == "none"):
        return None
    if isinstance(normalize, str):
        key = normalize.lower()
        if key == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if key == "auto":
            if loaded is not None and loaded.mean is not None and loaded.std is not None:
                return tuple(loaded.mean), tuple(loaded.std)
            return IMAGENET_MEAN, IMAGENET_STD
        raise ValueError(
            f"normalize must be 'imagenet', 'auto', None/'none' or (mean, std); got {normalize!r}"
        )
    if isinstance(normalize, tuple | list) and len(normalize) == 2:
        mean, std = (tuple(float(v) for v in normalize[0]), tuple(float(v) for v in normalize[1]))
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"normalize=(mean, std) needs 3 values each and std > 0; got {normalize!r}")
        return mean, std
    raise ValueError(f"normalize must be 'imagenet', 'auto', None/'none' or (mean, std); got {normalize!r}")
