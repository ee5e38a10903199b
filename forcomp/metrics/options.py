"""The settings of one bias evaluation, as one frozen record (validated once, written into the report)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forcomp.metrics.attribution import METHODS

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_METHODS: tuple[str, ...] = ("input_x_gradient", "gradcam")

ClassIndices = Sequence[int] | Mapping[str, int]

# ForComp settings every condition sets itself; ``recombine`` may not override them.
CONDITION_KEYS = frozenset(
    {
        "background",
        "nonant",
        "size_factor",
        "split",
        "size",
        "seed",
        "return_masks",
        "crop_scale",
        "hflip_prob",
    }
)


def _is_count(v: object, minimum: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


@dataclass(frozen=True)
class EvaluateOptions:
    """How :func:`forcomp.evaluate` measures a model; ``forcomp evaluate``'s flags map onto it 1:1.

    Args:
        split: Which split to evaluate on.
        size: Canvas size fed to the model; ``None`` = the size the model states (timm
            ``patch_embed.img_size``, torchvision ViT ``image_size``, else its config's input size),
            else 224. A model that accepts only one size (a fixed-size ViT) must get that size.
        normalize: ``"auto"`` (the model's own mean/std when it declares one, else ImageNet's),
            ``"imagenet"``, ``None`` (feed [0, 1] unchanged) or ``(mean, std)``. Input×gradient
            attributions are taken on the normalised input, so this also sets their implicit baseline.
        device: Where recombination and the model run; ``None`` = the model's device. A device that
            is not available raises :class:`~forcomp.models.devices.DeviceError`.
        batch_size: Images per batch (≥ 1).
        seed: Recombination seed; the same seed gives the same report.
        limit: Evaluate a seeded random subset of this many items (``None`` = all).
        methods: Attribution methods for foreground focus; the first is the headline.
        num_workers: DataLoader workers reading and decoding files.
        progress: Show a tqdm progress bar.
        bootstrap: Resamples for each 95% interval (≥ 1).
        ig_steps: Integrated-gradients steps.
        gradcam_layer: Module name for Grad-CAM (``None`` = found automatically).
        class_indices: Model output index per cache class in sorted class order, or
            ``{class_name: index}``; ``None`` = identity, or ImageNet-1k by WordNet id.
        n_examples: Attribution examples kept for the plots.
        weights_dir: Where a SPEC string's weights are looked up.
        checkpoint_key: The entry of a training checkpoint to load (e.g. ``"model_ema"``).
        recombine: Other :class:`~forcomp.ForComp` settings for every condition, e.g.
            ``{"mask_smoothing_sigma": 1.0}`` for small canvases; ForNet's defaults otherwise.

    Raises:
        ValueError: An invalid value, naming the setting, the value and what is allowed.

    Example:
        >>> EvaluateOptions(limit=500, methods=("input_x_gradient",)).to_dict()["limit"]
        500
    """

    split: str = "val"
    size: int | tuple[int, int] | None = None
    normalize: str | tuple[Sequence[float], Sequence[float]] | None = "auto"
    device: str | torch.device | None = None
    batch_size: int = 64
    seed: int = 0
    limit: int | None = None
    methods: Sequence[str] = DEFAULT_METHODS
    num_workers: int = 0
    progress: bool = False
    bootstrap: int = 1000
    ig_steps: int = 16
    gradcam_layer: str | None = None
    class_indices: ClassIndices | None = None
    n_examples: int = 6
    weights_dir: str | os.PathLike[str] | None = None
    checkpoint_key: str | None = None
    recombine: Mapping[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if not _is_count(self.batch_size):
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.limit is not None and not _is_count(self.limit):
            raise ValueError(f"limit must be None or an int >= 1, got {self.limit!r}")
        methods = tuple(self.methods)
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}")
        object.__setattr__(self, "methods", methods)
        if self.size is not None:
            sizes = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
            if len(sizes) != 2 or not all(isinstance(s, int) and s >= 8 for s in sizes):
                raise ValueError(f"size must be an int >= 8 or (h, w), got {self.size!r}")
            if not isinstance(self.size, int):
                object.__setattr__(self, "size", sizes)
        clash = sorted(set(self.recombine or {}) & CONDITION_KEYS)
        if clash:
            raise ValueError(
                f"recombine may not set {clash}: the evaluation controls them; allowed are the other "
                "ForComp settings (e.g. mask_smoothing_sigma, fg_scale_jitter, fg_size_mode)"
            )
        if self.bootstrap < 1:
            raise ValueError(f"bootstrap must be >= 1 resamples, got {self.bootstrap}")
        object.__setattr__(self, "recombine", dict(self.recombine or {}))

    @classmethod
    def merged(cls, options: EvaluateOptions | None, overrides: Mapping[str, Any]) -> EvaluateOptions:
        """``options`` (default: all defaults) with the keyword ``overrides`` replaced.

        Raises:
            TypeError: ``options`` is not an :class:`EvaluateOptions`, or an override names no setting.
        """
        if options is not None and not isinstance(options, EvaluateOptions):
            raise TypeError(
                f"options must be an EvaluateOptions or None, got {type(options).__name__}; pass other "
                "settings by keyword (e.g. split='val', seed=0)"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown evaluation setting(s) {unknown}; the settings are {names}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides) if overrides else base

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings for the report (paths and devices as strings, tuples as lists)."""
        size = list(self.size) if isinstance(self.size, tuple) else self.size
        norm: Any = self.normalize
        if isinstance(norm, tuple):
            norm = {"mean": [float(v) for v in norm[0]], "std": [float(v) for v in norm[1]]}
        indices: Any = self.class_indices
        if isinstance(indices, Mapping):
            indices = {str(k): int(v) for k, v in indices.items()}
        elif indices is not None:
            indices = [int(v) for v in indices]
        return {
            "split": self.split,
            "size": size,
            "normalize": norm,
            "device": None if self.device is None else str(self.device),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "limit": self.limit,
            "methods": list(self.methods),
            "num_workers": self.num_workers,
            "progress": self.progress,
            "bootstrap": self.bootstrap,
            "ig_steps": self.ig_steps,
            "gradcam_layer": self.gradcam_layer,
            "class_indices": indices,
            "n_examples": self.n_examples,
            "weights_dir": None if self.weights_dir is None else os.fspath(self.weights_dir),
            "checkpoint_key": self.checkpoint_key,
            "recombine": dict(self.recombine or {}),
        }
