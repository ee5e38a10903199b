"""Candidate scoring: when a segmenter proposes several masks for an image, keep the best one.

The pipeline calls ``build_scorer(name, weights_dir=..., device=...)`` once per process (when
``BuildConfig.scorer`` is set) and then ``scorer.select(images, candidates, classes, labels)`` per
batch, which returns the index of the chosen candidate for each image.

Scorers:
- ``sam-score`` (no weights): the segmenter's own confidence (SAM's predicted IoU × detector score)
  times an area prior, in log space: ``log(score) + area_weight · log(prior(area))``.
- a classifier, ForAug's idea (their ``filter_segmentation_versions.py``): a good mask gives a
  foreground that a classifier recognises on plain backgrounds and leaves a background it does not
  recognise once the object is removed. Per candidate::

      fg_weight · log p(class | object pasted on grey backgrounds)
    + bg_weight · log (1 - p(class | background with the object filled in))
    + area_weight · log prior(area) + seg_weight · log(segmenter score)

  The background is filled cheaply (OpenCV Telea at ``bg_work_px``, or the mean colour) rather than
  with the build's inpainter. The classifier is a torchvision or timm model name whose state dict
  is ``weights/<name>.pth`` (e.g. ``resnet50`` → ``weights/resnet50.pth``, loaded with
  ``weights_only=True``), or ``package.module:factory`` / ``path/to/file.py:factory`` returning an
  ``nn.Module``; several, comma-separated, form an ensemble (probabilities averaged), as ForAug's
  six-model ensemble. The class's output index is its ImageNet-1k position when the class folder
  is an ImageNet-1k wnid and the model has 1000 outputs, else the dataset label.

The area prior is 1 for mask areas inside ``area_range`` (share of the image) and falls linearly to
0 towards an empty and a full mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from forcomp.errors import ForcompError
from forcomp.offline.segmenters.base import MaskCandidate

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

_EPS = 1e-6


@runtime_checkable
class CandidateScorer(Protocol):
    """Chooses one candidate mask per image (index into that image's candidate list)."""

    name: str

    def select(
        self,
        images: Sequence[np.ndarray],
        candidates: Sequence[Sequence[MaskCandidate]],
        classes: Sequence[str],
        labels: Sequence[int],
    ) -> list[int]: ...


def area_prior(ratio: float, area_range: tuple[float, float] = (0.05, 0.7)) -> float:
    """1 inside ``area_range``; linear ramps to 0 at ratio 0 and ratio 1."""
    lo, hi = area_range
    if ratio <= 0 or ratio >= 1:
        return 0.0
    if ratio < lo:
        return ratio / lo
    if ratio > hi:
        return (1 - ratio) / (1 - hi)
    return 1.0


def _check_area_range(area_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in area_range)
    if not 0 < lo <= hi < 1:
        raise ValueError(f"area_range must be (lo, hi) with 0 < lo <= hi < 1, got {tuple(area_range)}")
    return lo, hi


def _log(x: float) -> float:
    return math.log(max(x, _EPS))


class SegmenterScoreScorer:
    """``sam-score``: segmenter confidence × area prior (no weights).

    Args:
        area_weight: exponent of the area prior.
        area_range: mask areas (share of the image) that get the full prior.
    """

    name = "sam-score"

    def __init__(self, *, area_weight: float = 1.0, area_range: Sequence[float] = (0.05, 0.7)) -> None:
        if area_weight < 0:
            raise ValueError(f"area_weight must be >= 0, got {area_weight}")
        self.area_weight = area_weight
        self.area_range = _check_area_range(area_range)

    def scores(self, image: np.ndarray, cands: Sequence[MaskCandidate]) -> list[float]:
        n = image.shape[0] * image.shape[1]
        return [
            _log(c.score) + self.area_weight * _log(area_prior(np.count_nonzero(c.mask) / n, self.area_range))
            for c in cands
        ]

    def select(
        self,
        images: Sequence[np.ndarray],
        candidates: Sequence[Sequence[MaskCandidate]],
        classes: Sequence[str],
        labels: Sequence[int],
    ) -> list[int]:
        return [
            int(np.argmax(self.scores(img, c))) if len(c) > 1 else 0
            for img, c in zip(images, candidates, strict=True)
        ]


# ----------------------------------------------------------------------------- classifier scorer


def _fit_on_canvas(fg: np.ndarray, alpha: np.ndarray, side: int, fill: float, grey: float) -> np.ndarray:
    """Paste an RGBA crop centred on a ``side``² canvas of one grey level, scaled to ``fill`` of the side."""
    import cv2

    h, w = alpha.shape
    s = fill * side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    fg_r = cv2.resize(fg, (nw, nh), interpolation=interp).astype(np.float32)
    a_r = cv2.resize(alpha.astype(np.float32), (nw, nh), interpolation=interp)[..., None]
    canvas = np.full((side, side, 3), grey * 255, np.float32)
    y0, x0 = (side - nh) // 2, (side - nw) // 2
    region = canvas[y0 : y0 + nh, x0 : x0 + nw]
    canvas[y0 : y0 + nh, x0 : x0 + nw] = a_r * fg_r + (1 - a_r) * region
    return canvas


def _cheap_background(
    image: np.ndarray, mask: np.ndarray, side: int, method: str, work_px: int
) -> np.ndarray:
    """The image with the masked object filled cheaply, resized to ``side``² (classifier input)."""
    import cv2

    from forcomp.offline.masks import resize_hole

    h, w = mask.shape
    s = min(1.0, work_px / max(h, w))
    size = (max(4, round(w * s)), max(4, round(h * s)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    hole = resize_hole(mask, size)
    hole = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if method == "mean":
        filled = small.copy()
        filled[hole] = small[~hole].mean(0) if (~hole).any() else 127
    else:
        filled = cv2.inpaint(small, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    return cv2.resize(filled, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)


class ClassifierScorer:
    """ForAug-style scoring with a classifier ensemble (see module docstring).

    Args:
        models: loaded classifiers (``forcomp.models.classifiers.LoadedModel``), averaged.
        device: where they run.
        name: the spec string (for logs and provenance).
        fg_greys: grey levels (0..1) of the plain backgrounds the object is pasted on.
        fg_fill: the object's long side as a share of the classifier input side.
        bg_fill: ``telea`` or ``mean`` fill of the object's hole in the background view.
        bg_work_px: resolution of the cheap background fill.
        fg_weight, bg_weight, area_weight, seg_weight: weights of the score terms.
        area_range: areas that get the full area prior.
        class_index: ``auto`` (ImageNet-1k position of a wnid class when the model has 1000 outputs,
            else the label), ``imagenet`` or ``label``.
        batch_size: classifier inputs per forward pass.
    """

    def __init__(
        self,
        models: Sequence[Any],
        device: torch.device,
        *,
        name: str,
        fg_greys: Sequence[float] = (0.0, 0.5, 1.0),
        fg_fill: float = 0.8,
        bg_fill: Literal["telea", "mean"] = "telea",
        bg_work_px: int = 64,
        fg_weight: float = 1.0,
        bg_weight: float = 1.0,
        area_weight: float = 1.0,
        seg_weight: float = 0.25,
        area_range: Sequence[float] = (0.05, 0.7),
        class_index: Literal["auto", "imagenet", "label"] = "auto",
        batch_size: int = 64,
    ) -> None:
        if not models:
            raise ValueError("ClassifierScorer needs at least one model")
        if not fg_greys or any(not 0 <= g <= 1 for g in fg_greys):
            raise ValueError(f"fg_greys must be grey levels in [0, 1], got {tuple(fg_greys)}")
        if not 0 < fg_fill <= 1:
            raise ValueError(f"fg_fill must be in (0, 1], got {fg_fill}")
        if bg_fill not in ("telea", "mean"):
            raise ValueError(f"bg_fill must be 'telea' or 'mean', got {bg_fill!r}")
        if class_index not in ("auto", "imagenet", "label"):
            raise ValueError(f"class_index must be 'auto', 'imagenet' or 'label', got {class_index!r}")
        if batch_size < 1 or bg_work_px < 8:
            raise ValueError(f"batch_size must be >= 1 and bg_work_px >= 8, got {batch_size}, {bg_work_px}")
        for k, v in dict(
            fg_weight=fg_weight, bg_weight=bg_weight, area_weight=area_weight, seg_weight=seg_weight
        ).items():
            if v < 0:
                raise ValueError(f"{k} must be >= 0, got {v}")
        from forcomp.models.classifiers import IMAGENET_MEAN, IMAGENET_STD

        self.name = name
        self.device = device
        self.models = []
        for m in models:
            mean = m.mean or IMAGENET_MEAN
            std = m.std or IMAGENET_STD
            self.models.append((m.model.to(device).eval(), int(m.input_size or 224), mean, std))
        self.fg_greys = tuple(float(g) for g in fg_greys)
        self.fg_fill = fg_fill
        self.bg_fill = bg_fill
        self.bg_work_px = bg_work_px
        self.weights = (fg_weight, bg_weight, area_weight, seg_weight)
        self.area_range = _check_area_range(area_range)
        self.class_index = class_index
        self.batch_size = batch_size

    def _class_idx(self, cls: str, label: int, n_out: int) -> int:
        if self.class_index != "label":
            from forcomp.offline.segmenters.grounded import wordnet_data

            order = wordnet_data()["imagenet1k"]
            if n_out == len(order) and cls in order:
                return order.index(cls)
            if self.class_index == "imagenet":
                raise ForcompError(
                    f"class {cls!r} is not an ImageNet-1k wnid (or the model lacks 1000 outputs)"
                )
        if not 0 <= label < n_out:
            raise ForcompError(
                f"scorer {self.name}: label {label} of class {cls!r} is outside the classifier's "
                f"{n_out} outputs; "
                "use a classifier trained on these classes or ImageNet-1k wnid class folders"
            )
        return label

    def _probs(
        self, model: Any, views: np.ndarray, mean: Sequence[float], std: Sequence[float]
    ) -> torch.Tensor:
        """Softmax outputs for ``(N, S, S, 3)`` float views in [0, 255]."""
        import torch

        out = []
        m = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        s = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        with torch.inference_mode():
            for i in range(0, len(views), self.batch_size):
                x = torch.from_numpy(views[i : i + self.batch_size]).to(self.device).permute(0, 3, 1, 2)
                logits = model((x - m) / s)
                out.append(logits.float().softmax(-1))
        return torch.cat(out)

    def scores(self, image: np.ndarray, cands: Sequence[MaskCandidate], cls: str, label: int) -> list[float]:
        """One score per candidate (higher is better)."""
        n = image.shape[0] * image.shape[1]
        k = len(self.fg_greys)
        p_fg = np.zeros(len(cands))
        p_bg = np.zeros(len(cands))
        for model, side, mean, std in self.models:
            views = []
            for c in cands:
                ys, xs = np.nonzero(c.mask)
                if len(ys) == 0:
                    crop, alpha = image[:1, :1], np.zeros((1, 1), np.float32)
                else:
                    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                    crop, alpha = image[y0:y1, x0:x1], c.mask[y0:y1, x0:x1].astype(np.float32)
                views += [_fit_on_canvas(crop, alpha, side, self.fg_fill, g) for g in self.fg_greys]
                views.append(_cheap_background(image, c.mask, side, self.bg_fill, self.bg_work_px))
            probs = self._probs(model, np.stack(views), mean, std)
            idx = self._class_idx(cls, label, probs.shape[1])
            p = probs[:, idx].view(len(cands), k + 1).cpu().numpy()
            p_fg += p[:, :k].mean(1) / len(self.models)
            p_bg += p[:, k] / len(self.models)
        wf, wb, wa, ws = self.weights
        return [
            wf * _log(p_fg[j])
            + wb * _log(1 - p_bg[j])
            + wa * _log(area_prior(np.count_nonzero(c.mask) / n, self.area_range))
            + ws * _log(c.score)
            for j, c in enumerate(cands)
        ]

    def select(
        self,
        images: Sequence[np.ndarray],
        candidates: Sequence[Sequence[MaskCandidate]],
        classes: Sequence[str],
        labels: Sequence[int],
    ) -> list[int]:
        out = []
        for img, cands, cls, lab in zip(images, candidates, classes, labels, strict=True):
            out.append(int(np.argmax(self.scores(img, cands, cls, lab))) if len(cands) > 1 else 0)
        return out


SCORERS = ("sam-score",)


SCORER_HELP = (
    "candidate scorer when a segmenter proposes several masks: sam-score (the segmenter's own score), "
    "or classifier spec(s), comma-separated for an ensemble (resnet50, timm/convnext_tiny, "
    "pkg.mod:factory) (default: none, the segmenter's best candidate)"
)


def build_scorer(
    name: str, *, weights_dir: Path, device: str | None = None, **options: Any
) -> CandidateScorer:
    """Build a scorer once per process.

    Args:
        name: ``sam-score``, or classifier spec(s) for :class:`ClassifierScorer`, comma-separated for
            an ensemble (``resnet50``, ``resnet50,vit_b_16``, ``timm/convnext_tiny``, ``pkg.mod:factory``).
        weights_dir: where classifier checkpoints are (``<name>.pth``).
        device: ``cpu``/``cuda``; None picks CUDA when available.
        options: keyword arguments of the scorer class.

    Example:
        >>> scorer = build_scorer("sam-score", weights_dir=Path("weights"), device="cpu")
        >>> scorer.name
        'sam-score'
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("scorer name is empty; use 'sam-score' or a classifier (e.g. resnet50)")
    name = name.strip()
    if name == "sam-score":
        return SegmenterScoreScorer(**options)
    from forcomp.models.classifiers import load_model
    from forcomp.models.devices import resolve_device

    specs = [s.strip() for s in name.split(",") if s.strip()]
    loaded = [load_model(s, weights_dir=weights_dir) for s in specs]
    dev = resolve_device(device)
    log.info("candidate scorer: %s on %s", ", ".join(specs), dev)
    return ClassifierScorer(loaded, dev, name=name, **options)
