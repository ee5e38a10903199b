"""Segment-anything (SAM) segmenter: box prompts in, cleaned object masks out.

How it works, per batch:
1. The image encoder sees the batch (:class:`~forcomp.offline.segmenters.sam_predictor.SamBoxPredictor`,
   chunked to fit the device's free memory).
2. Each image is prompted with boxes: a detector's boxes (``grounded-sam`` passes them in), else
   a central box and the whole image. SAM's multimask output gives three masks per box with a
   predicted IoU each.
3. Every mask is cleaned (:func:`forcomp.offline.masks.clean_mask`: holes and specks below
   ``min_region_ratio`` of the image removed, the largest connected object kept, plus parts at
   least ``keep_frac`` of its size), near-duplicates are merged away, and the candidates are
   returned best first by predicted IoU.

Checkpoints: the official files ``sam_vit_{h,l,b}_*.pth`` in the weights directory, read and
built by :mod:`forcomp.offline.segmenters.sam_checkpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.offline.masks import clean_mask, dedupe
from forcomp.offline.registry import BackendSpec
from forcomp.offline.segmenters.base import MaskCandidate
from forcomp.offline.segmenters.sam_checkpoint import SAM_CHECKPOINTS, find_sam_checkpoint, load_sam
from forcomp.offline.segmenters.sam_predictor import SamBoxPredictor

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

SPECS = [
    BackendSpec(
        name="sam",
        factory="forcomp.offline.segmenters.sam:build_sam_segmenter",
        weights=tuple((f,) for f in SAM_CHECKPOINTS.values()),
        priority=20,
        extra="sam",
        description="segment-anything ViT-H/L/B (largest checkpoint present), box-prompted",
    ),
]


def prompt_boxes(h: int, w: int, prompts: Sequence[str], center_frac: float) -> np.ndarray:
    """XYXY boxes for the weight-free prompts: ``center`` (middle ``center_frac`` of each side), ``image``."""
    out = []
    for p in prompts:
        if p == "center":
            mx, my = w * (1 - center_frac) / 2, h * (1 - center_frac) / 2
            out.append([mx, my, w - mx, h - my])
        elif p == "image":
            out.append([0.0, 0.0, float(w), float(h)])
        else:
            raise ValueError(f"box prompt must be 'center' or 'image', got {p!r}")
    return np.asarray(out, np.float32)


class SamSegmenter:
    """SAM prompted with boxes (see module docstring).

    Args:
        predictor: the loaded model.
        weights_id: checkpoint file name, written to the index.
        prompts: weight-free box prompts, from ``center`` and ``image``.
        center_frac: side length of the central box as a share of the image side.
        max_candidates: candidates returned per image (best first).
        max_area_ratio: masks covering more of the image are dropped (a whole-image mask is no object).
        min_region_ratio, keep_frac: clean-up (see :func:`clean_mask`).
        dedupe_iou: candidates overlapping a better one by more than this are dropped.
    """

    name = "sam"

    def __init__(
        self,
        predictor: SamBoxPredictor,
        *,
        weights_id: str,
        prompts: Sequence[str] = ("center", "image"),
        center_frac: float = 0.7,
        max_candidates: int = 3,
        max_area_ratio: float = 0.9,
        min_region_ratio: float = 0.001,
        keep_frac: float = 0.25,
        dedupe_iou: float = 0.9,
    ) -> None:
        if not prompts or any(p not in ("center", "image") for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of 'center'/'image', got {prompts!r}")
        if not 0 < center_frac <= 1:
            raise ValueError(f"center_frac must be in (0, 1], got {center_frac}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if not 0 < max_area_ratio <= 1:
            raise ValueError(f"max_area_ratio must be in (0, 1], got {max_area_ratio}")
        if not 0 <= min_region_ratio < 0.5:
            raise ValueError(f"min_region_ratio must be in [0, 0.5), got {min_region_ratio}")
        if not 0 < dedupe_iou <= 1:
            raise ValueError(f"dedupe_iou must be in (0, 1], got {dedupe_iou}")
        self.predictor = predictor
        self.weights_id: str | None = weights_id
        self.prompts = tuple(prompts)
        self.center_frac = center_frac
        self.max_candidates = max_candidates
        self.max_area_ratio = max_area_ratio
        self.min_region_ratio = min_region_ratio
        self.keep_frac = keep_frac
        self.dedupe_iou = dedupe_iou

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def candidates_from_boxes(
        self,
        embedding: torch.Tensor,
        image_hw: tuple[int, int],
        boxes: np.ndarray,
        *,
        box_scores: Sequence[float] | np.ndarray | None = None,
        labels: Sequence[str | None] | None = None,
    ) -> list[list[MaskCandidate]]:
        """Per box: its cleaned masks (best of SAM's three first), scored by IoU × box score."""
        if len(boxes) == 0:
            return []
        masks, ious = self.predictor.predict_boxes(embedding, image_hw, boxes)
        h, w = image_hw
        out: list[list[MaskCandidate]] = []
        for b in range(len(boxes)):
            per_box = []
            for c in np.argsort(-ious[b]):
                m = clean_mask(masks[b, c], min_region_ratio=self.min_region_ratio, keep_frac=self.keep_frac)
                ratio = np.count_nonzero(m) / (h * w)
                if ratio == 0 or ratio > self.max_area_ratio:
                    continue
                score = float(np.clip(ious[b, c], 0.0, 1.0))
                if box_scores is not None:
                    score *= float(box_scores[b])
                per_box.append(MaskCandidate(mask=m, score=score, label=labels[b] if labels else None))
            out.append(per_box)
        return out

    def segment(self, images: Sequence[np.ndarray], classes: Sequence[str]) -> list[list[MaskCandidate]]:
        if not images:
            return []
        emb = self.predictor.embed(images)
        results = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            boxes = prompt_boxes(h, w, self.prompts, self.center_frac)
            per_box = self.candidates_from_boxes(emb[i], (h, w), boxes, labels=list(self.prompts))
            flat = [c for cands in per_box for c in cands]
            results.append(dedupe(flat, self.dedupe_iou)[: self.max_candidates])
        return results


def build_sam_segmenter(
    *,
    weights_dir: Path,
    device: str | None = None,
    model: str = "auto",
    encoder_batch_size: int | Literal["auto"] = "auto",
    amp: bool = True,
    **options: Any,
) -> SamSegmenter:
    """Load SAM once (``model``: ``auto`` = largest present, ``vit_h``/``vit_l``/``vit_b``, or a file name).

    Other ``options`` go to :class:`SamSegmenter` (``prompts``, ``max_candidates``...).
    """
    path = find_sam_checkpoint(Path(weights_dir), model)
    from forcomp.models.devices import resolve_device  # imports torch: not at backend listing

    dev = resolve_device(device)
    predictor = SamBoxPredictor(load_sam(path), dev, encoder_batch_size=encoder_batch_size, amp=amp)
    log.info("sam segmenter: %s on %s", path.name, dev)
    return SamSegmenter(predictor, weights_id=path.name, **options)
