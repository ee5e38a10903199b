"""Zero-shot detectors for text-grounded SAM: Grounding DINO or OWLv2 from a local directory.

A transformers zero-shot detector from a directory under ``weights/`` (``save_pretrained`` layout)
sees the whole batch, each image with its own prompts. Boxes scoring above ``box_threshold`` are kept
(per detector by default: 0.3 for Grounding DINO, 0.1 for OWLv2, whose scores run lower; its
processor's own default), per-prompt non-maximum suppression removes duplicates. OWLv2's boxes are
decoded here, not by the installed transformers' post-processing: OWLv2 sees the image padded to a
square (bottom/right), so its relative boxes are scaled by the square's side (transformers before
May 2024 scaled by height and width and squashed boxes of non-square images), and each box takes
its best *real* query (the processor pads shorter prompt lists with ``" "`` queries that the model
does not mask). Loaded with ``local_files_only=True`` and ``trust_remote_code=False``, never from a
hub (forcomp does not touch ``HF_HUB_OFFLINE`` or other process-wide settings).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.errors import ForcompError
from forcomp.weights import find_model_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DETECTORS = {
    "grounding-dino-base": "https://huggingface.co/IDEA-Research/grounding-dino-base",
    "grounding-dino-tiny": "https://huggingface.co/IDEA-Research/grounding-dino-tiny",
    "owlv2-base-patch16-ensemble": "https://huggingface.co/google/owlv2-base-patch16-ensemble",
}


@dataclass
class Detections:
    """Boxes found in one image: ``boxes`` ``(N, 4)`` XYXY px, ``scores`` ``(N,)``, prompt index per box."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


BOX_THRESHOLDS = {"grounding-dino": 0.3, "owlv2": 0.1}
"""Default minimum box score per detector kind (OWLv2's processor defaults to 0.1; its scores run lower)."""


class ZeroShotDetector:
    """A transformers zero-shot detector (Grounding DINO or OWLv2) loaded from a local directory.

    Args:
        path: the directory (``save_pretrained`` layout).
        device: where it runs.
        batch_size: images per forward pass.
        box_threshold: minimum box score; None: the detector kind's default (:data:`BOX_THRESHOLDS`).
        nms_iou: per-prompt non-maximum suppression threshold.
        max_detections: boxes kept per image, best first.
    """

    def __init__(
        self,
        path: Path,
        device: torch.device,
        *,
        batch_size: int = 8,
        box_threshold: float | None = None,
        nms_iou: float = 0.5,
        max_detections: int = 10,
    ) -> None:
        if box_threshold is not None and not 0 <= box_threshold < 1:
            raise ValueError(f"box_threshold must be in [0, 1), got {box_threshold}")
        if batch_size < 1 or max_detections < 1:
            raise ValueError(
                f"batch_size and max_detections must be >= 1, got {batch_size}, {max_detections}"
            )
        try:
            from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("grounded-sam needs transformers: pip install 'forcomp[grounded]'") from e
        kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        try:
            config = AutoConfig.from_pretrained(path, **kw)
        except (OSError, ValueError) as e:
            raise ForcompError(f"detector directory {path} has no readable config.json: {e}") from e
        self.kind: Literal["grounding-dino", "owlv2"]
        if config.model_type == "grounding-dino":
            self.kind = "grounding-dino"
        elif config.model_type == "owlv2":
            self.kind = "owlv2"
        else:
            raise ForcompError(
                f"detector directory {path} holds a {config.model_type!r} model; expected Grounding DINO "
                f"or OWLv2 ({', '.join(DETECTORS)})"
            )
        try:
            self.processor = AutoProcessor.from_pretrained(path, **kw)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path, **kw)
        except Exception as e:  # missing files, bad JSON, a pickle refused by weights_only...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ForcompError(f"cannot load the detector from {path}: {type(e).__name__}: {first}") from e
        self.model.to(device).eval()
        self.device = device
        self.path = path
        self.batch_size = batch_size
        self.box_threshold = BOX_THRESHOLDS[self.kind] if box_threshold is None else box_threshold
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def detect(self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]) -> list[Detections]:
        """Boxes per image; ``prompts[i]`` are image i's phrases and ``labels`` index into them."""
        out: list[Detections] = []
        for i in range(0, len(images), self.batch_size):
            imgs, prm = images[i : i + self.batch_size], prompts[i : i + self.batch_size]
            if self.kind == "grounding-dino":
                out += self._detect_gdino(imgs, prm)
            else:
                out += self._detect_owlv2(imgs, prm)
        return out

    def _finish(
        self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, hw: tuple[int, int]
    ) -> Detections:
        import torch
        from torchvision.ops import batched_nms

        keep = scores > self.box_threshold
        boxes, scores, labels = boxes[keep].float(), scores[keep].float(), labels[keep]
        h, w = hw
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        if len(boxes) == 0:
            return Detections.empty()
        idx = batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_detections]
        idx = idx[torch.argsort(-scores[idx])]
        return Detections(boxes[idx].cpu().numpy(), scores[idx].cpu().numpy(), labels[idx].cpu().numpy())

    def _detect_gdino(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[Detections]:
        import torch
        from PIL import Image

        texts = [". ".join(p.lower().strip() for p in ps) + "." for ps in prompts]
        inputs = self.processor(
            images=[Image.fromarray(im) for im in images], text=texts, return_tensors="pt", padding="longest"
        ).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        dot = self.processor.tokenizer.convert_tokens_to_ids(".")
        special = set(self.processor.tokenizer.all_special_ids)
        probs = outputs.logits.sigmoid().float()  # (B, Q, max_text_len)
        cxcywh = outputs.pred_boxes.float()  # relative to each (unpadded) image
        results = []
        for b, im in enumerate(images):
            ids = inputs["input_ids"][b].tolist()
            # Phrase k spans the tokens between the k-th and (k+1)-th "." (a phrase may hold dots
            # only if the tokenizer splits them off, which it does): its score is its best token.
            spans: list[list[int]] = [[]]
            for pos, tid in enumerate(ids[: probs.shape[-1]]):
                if tid == dot:
                    spans.append([])
                elif tid not in special:
                    spans[-1].append(pos)
            spans = [s for s in spans if s][: len(prompts[b])]
            if not spans:
                results.append(Detections.empty())
                continue
            per_phrase = torch.stack([probs[b][:, s].max(-1).values for s in spans], -1)  # (Q, K)
            scores, labels = per_phrase.max(-1)
            h, w = im.shape[:2]
            cx, cy, bw, bh = cxcywh[b].unbind(-1)
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            boxes = boxes * torch.tensor([w, h, w, h], device=boxes.device, dtype=boxes.dtype)
            results.append(self._finish(boxes, scores, labels, (h, w)))
        return results

    def _detect_owlv2(
        self, images: Sequence[np.ndarray], prompts: Sequence[Sequence[str]]
    ) -> list[Detections]:
        import torch
        from PIL import Image

        texts = [[f"a photo of a {p.strip()}" for p in ps] for ps in prompts]
        inputs = self.processor(
            images=[Image.fromarray(im) for im in images], text=texts, return_tensors="pt", truncation=True
        )
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        logits = outputs.logits.float()  # (B, patches, queries): queries padded to the longest list
        cxcywh = outputs.pred_boxes.float()  # relative to the image padded to a square (bottom/right)
        results = []
        for b, im in enumerate(images):
            best, labels = logits[b, :, : len(prompts[b])].max(-1)  # real queries only
            h, w = im.shape[:2]
            side = float(max(h, w))
            cx, cy, bw, bh = cxcywh[b].unbind(-1)
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1) * side
            results.append(self._finish(boxes, best.sigmoid(), labels, (h, w)))
        return results


def find_detector(weights_dir: Path, detector: str = "auto") -> Path:
    """``detector``: ``auto`` (first present of :data:`DETECTORS`) or a directory name under ``weights/``."""
    return find_model_dir(
        weights_dir, detector, DETECTORS, marker="config.json", what="zero-shot detector", option="detector"
    )
