"""Text-grounded SAM (the ForAug recipe): a zero-shot detector finds the class, SAM segments it.

How it works, per batch:
1. Prompts: the class's name and the names of its ``parents`` nearest WordNet parents (ImageNet
   class folders are wnids; the names come from ``forcomp/data/wordnet_imagenet.json``, see
   :func:`class_prompts`), e.g. ``n01440764`` → ``tench``, ``cyprinid``, ``cypriniform fish``.
2. Detection: a transformers zero-shot detector from a local directory under ``weights/``
   (Grounding DINO or OWLv2) sees the whole batch, each image with its own prompts. Boxes scoring
   above ``box_threshold`` are kept (per detector by default: 0.3 for Grounding DINO, 0.1 for
   OWLv2, whose scores run lower; its processor's own default), per-prompt non-maximum
   suppression removes duplicates. OWLv2's boxes are decoded here, not by the installed
   transformers' post-processing: OWLv2 sees the image padded to a square (bottom/right), so its
   relative boxes are scaled by the square's side (transformers before May 2024 scaled by height
   and width and squashed boxes of non-square images), and each box takes its best *real* query
   (the processor pads shorter prompt lists with ``" "`` queries that the model does not mask).
3. Segmentation: SAM (the same checkpoints as the ``sam`` backend) encodes the batch once and
   turns every box into a mask (best of SAM's three by predicted IoU, cleaned as in ``sam``).
4. Candidates: masks of the same prompt are merged (union), candidates overlapping by more than
   ``merge_iou`` are merged, and at most ``max_candidates`` are returned, best first by detector
   score × SAM IoU. With no detection the image has no object (``fallback="none"``, as ForAug), or
   SAM's weight-free box prompts are used (``fallback="sam"``).

Weights: ``weights/<detector dir>/`` as written by ``save_pretrained`` (``config.json``,
``model.safetensors``, processor and tokenizer files), loaded with ``local_files_only=True`` and
``trust_remote_code=False``, never from a hub (forcomp does not touch ``HF_HUB_OFFLINE`` or other
process-wide settings); plus one SAM checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.errors import ForcompError
from forcomp.offline.registry import BackendSpec
from forcomp.offline.segmenters.base import MaskCandidate
from forcomp.offline.segmenters.sam import (
    SAM_CHECKPOINTS,
    SamBoxPredictor,
    SamSegmenter,
    dedupe,
    find_sam_checkpoint,
    load_sam,
    mask_iou,
    prompt_boxes,
    resolve_device,
)
from forcomp.weights import find_model_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DETECTORS = {
    "grounding-dino-base": "https://huggingface.co/IDEA-Research/grounding-dino-base",
    "grounding-dino-tiny": "https://huggingface.co/IDEA-Research/grounding-dino-tiny",
    "owlv2-base-patch16-ensemble": "https://huggingface.co/google/owlv2-base-patch16-ensemble",
}

SPECS = [
    BackendSpec(
        name="grounded-sam",
        factory="forcomp.offline.segmenters.grounded:build_grounded_segmenter",
        weights=tuple((f"{det}/config.json", sam) for det in DETECTORS for sam in SAM_CHECKPOINTS.values()),
        priority=30,
        extra="grounded",
        description="zero-shot detector prompted with the class and its WordNet parents, then SAM",
    ),
]


# ----------------------------------------------------------------------------- class names


@functools.lru_cache(maxsize=1)
def wordnet_data() -> dict[str, Any]:
    """The packaged WordNet table (``imagenet1k`` wnid order and ``synsets``: names, parent)."""
    text = resources.files("forcomp").joinpath("data/wordnet_imagenet.json").read_text(encoding="utf-8")
    return json.loads(text)


def read_class_names(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """A user's class-name file: JSON ``{class: name | [names]}``, or text lines ``class: name, name``.

    The first name is the class name; any further names are used as its parents in the prompt.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ForcompError(f"cannot read class names file {p}: {e}") from e
    out: dict[str, list[str]] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ForcompError(f"class names file {p} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ForcompError(f"class names file {p} must hold a JSON object {{class: name or [names]}}")
        for k, v in data.items():
            names = [v] if isinstance(v, str) else list(v) if isinstance(v, list) else []
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise ForcompError(f"class names file {p}: {k!r} needs a name or a list of names")
            out[str(k)] = [n.strip() for n in names]
        return out
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([^\t:]+)[\t:](.*)", line)
        names = [n.strip() for n in m.group(2).split(",") if n.strip()] if m else []
        if not m or not names:
            raise ForcompError(
                f"class names file {p}:{lineno}: expected 'class: name[, parent...]', got {line!r}"
            )
        out[m.group(1).strip()] = names
    return out


def class_prompts(
    cls: str, *, parents: int = 2, class_names: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Detector prompts for one class folder: its name, then its ``parents`` nearest WordNet parents.

    Lookup order: ``class_names`` (a user's file), the packaged WordNet table (ImageNet wnids), and
    last the folder name itself (underscores as spaces) — a folder named ``golden_retriever`` works.
    """
    if class_names and cls in class_names:
        names = [str(n) for n in class_names[cls]]
        return names[: 1 + parents]
    synsets = wordnet_data()["synsets"]
    if cls in synsets:
        out = [synsets[cls]["names"][0]]
        parent = synsets[cls]["parent"]
        while parent is not None and len(out) < 1 + parents:
            name = synsets[parent]["names"][0]
            if name not in out:
                out.append(name)
            parent = synsets[parent]["parent"]
        return out
    return [cls.replace("_", " ").strip() or cls]


# ----------------------------------------------------------------------------- detectors


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


# ----------------------------------------------------------------------------- segmenter


class GroundedSamSegmenter:
    """Detector boxes → SAM masks (see module docstring).

    Args:
        detector: the loaded detector.
        sam: a :class:`SamSegmenter` (its predictor and clean-up settings are used).
        weights_id: ``<detector dir>+<sam file>``, written to the index.
        parents: WordNet parents added to the class name in the prompt.
        class_names: optional ``{class folder: [name, parent...]}`` overriding the WordNet table.
        max_candidates: candidates returned per image.
        merge_iou: candidates overlapping by more than this are merged (union), as ForAug.
        fallback: ``none`` (no detection → no object) or ``sam`` (SAM's center/image box prompts).
    """

    name = "grounded-sam"

    def __init__(
        self,
        detector: ZeroShotDetector,
        sam: SamSegmenter,
        *,
        weights_id: str,
        parents: int = 2,
        class_names: Mapping[str, Sequence[str]] | None = None,
        max_candidates: int = 3,
        merge_iou: float = 0.9,
        fallback: Literal["none", "sam"] = "none",
    ) -> None:
        if parents < 0:
            raise ValueError(f"parents must be >= 0, got {parents}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if not 0 < merge_iou <= 1:
            raise ValueError(f"merge_iou must be in (0, 1], got {merge_iou}")
        if fallback not in ("none", "sam"):
            raise ValueError(f"fallback must be 'none' or 'sam', got {fallback!r}")
        self.detector = detector
        self.sam = sam
        self.weights_id: str | None = weights_id
        self.parents = parents
        self.class_names = dict(class_names) if class_names else None
        self.max_candidates = max_candidates
        self.merge_iou = merge_iou
        self.fallback = fallback

    def prompts(self, cls: str) -> list[str]:
        return class_prompts(cls, parents=self.parents, class_names=self.class_names)

    def segment(self, images: Sequence[np.ndarray], classes: Sequence[str]) -> list[list[MaskCandidate]]:
        if not images:
            return []
        prompts = [self.prompts(c) for c in classes]
        dets = self.detector.detect(images, prompts)
        emb = self.sam.predictor.embed(images)
        results: list[list[MaskCandidate]] = []
        for i, (img, det) in enumerate(zip(images, dets, strict=True)):
            hw = (int(img.shape[0]), int(img.shape[1]))
            if len(det.boxes) == 0:
                if self.fallback == "sam":
                    boxes = prompt_boxes(hw[0], hw[1], self.sam.prompts, self.sam.center_frac)
                    per_box = self.sam.candidates_from_boxes(emb[i], hw, boxes, labels=list(self.sam.prompts))
                    flat = [c for cands in per_box for c in cands]
                    results.append(dedupe(flat, self.sam.dedupe_iou)[: self.max_candidates])
                else:
                    results.append([])
                continue
            labels = [prompts[i][int(k)] for k in det.labels]
            per_box = self.sam.candidates_from_boxes(
                emb[i], hw, det.boxes, box_scores=det.scores, labels=labels
            )
            # One candidate per prompt: the union of its boxes' best masks (ForAug merges same-label masks).
            by_label: dict[str, MaskCandidate] = {}
            for cands in per_box:
                if not cands:
                    continue
                best = cands[0]
                key = best.label or ""
                if key in by_label:
                    old = by_label[key]
                    by_label[key] = MaskCandidate(old.mask | best.mask, max(old.score, best.score), key)
                else:
                    by_label[key] = best
            results.append(self._merge(list(by_label.values()))[: self.max_candidates])
        return results

    def _merge(self, cands: list[MaskCandidate]) -> list[MaskCandidate]:
        cands = sorted(cands, key=lambda c: -c.score)
        merged: list[MaskCandidate] = []
        for c in cands:
            for j, m in enumerate(merged):
                if mask_iou(c.mask, m.mask) > self.merge_iou:
                    merged[j] = MaskCandidate(m.mask | c.mask, m.score, m.label)
                    break
            else:
                merged.append(c)
        return merged


def find_detector(weights_dir: Path, detector: str = "auto") -> Path:
    """``detector``: ``auto`` (first present of :data:`DETECTORS`) or a directory name under ``weights/``."""
    return find_model_dir(
        weights_dir, detector, DETECTORS, marker="config.json", what="zero-shot detector", option="detector"
    )


def build_grounded_segmenter(
    *,
    weights_dir: Path,
    device: str | None = None,
    detector: str = "auto",
    sam: str = "auto",
    box_threshold: float | None = None,
    nms_iou: float = 0.5,
    max_detections: int = 10,
    detector_batch_size: int = 8,
    encoder_batch_size: int | Literal["auto"] = "auto",
    amp: bool = True,
    parents: int = 2,
    class_names: str | os.PathLike[str] | Mapping[str, Sequence[str]] | None = None,
    max_candidates: int = 3,
    merge_iou: float = 0.9,
    fallback: Literal["none", "sam"] = "none",
    **sam_options: Any,
) -> GroundedSamSegmenter:
    """Load the detector and SAM once.

    Args:
        weights_dir: where ``<detector dir>/`` and ``sam_vit_*.pth`` are.
        device: ``cpu``/``cuda``; None picks CUDA when available.
        detector: ``auto`` or a directory name under ``weights/``.
        sam: ``auto`` (largest present), ``vit_h``/``vit_l``/``vit_b`` or a file name.
        box_threshold: minimum detector score; None: per detector (:data:`BOX_THRESHOLDS`).
        encoder_batch_size: SAM image-encoder batch, ``"auto"``: from free memory (see ``sam``).
        class_names: a ``{class: [name, parent...]}`` mapping or a file (see :func:`read_class_names`).
        sam_options: clean-up settings for SAM (``min_region_ratio``, ``keep_frac``, ``max_area_ratio``...).
    """
    wdir = Path(weights_dir)
    det_path = find_detector(wdir, detector)
    sam_path = find_sam_checkpoint(wdir, sam)
    dev = resolve_device(device)
    names = class_names
    if isinstance(class_names, str | os.PathLike):
        names = read_class_names(class_names)
    det = ZeroShotDetector(
        det_path,
        dev,
        batch_size=detector_batch_size,
        box_threshold=box_threshold,
        nms_iou=nms_iou,
        max_detections=max_detections,
    )
    sam_seg = SamSegmenter(
        SamBoxPredictor(load_sam(sam_path), dev, encoder_batch_size=encoder_batch_size, amp=amp),
        weights_id=sam_path.name,
        **sam_options,
    )
    log.info("grounded-sam: detector %s (%s) + %s on %s", det_path.name, det.kind, sam_path.name, dev)
    return GroundedSamSegmenter(
        det,
        sam_seg,
        weights_id=f"{det_path.name}+{sam_path.name}",
        parents=parents,
        class_names=names,  # type: ignore[arg-type]
        max_candidates=max_candidates,
        merge_iou=merge_iou,
        fallback=fallback,
    )
