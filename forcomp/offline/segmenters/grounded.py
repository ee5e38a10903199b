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
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.errors import ForcompError
from forcomp.offline.masks import dedupe, mask_iou
from forcomp.offline.registry import BackendSpec
from forcomp.offline.segmenters.base import MaskCandidate
from forcomp.offline.segmenters.detector import DETECTORS, ZeroShotDetector, find_detector
from forcomp.offline.segmenters.sam import SamSegmenter, prompt_boxes
from forcomp.offline.segmenters.sam_checkpoint import SAM_CHECKPOINTS, find_sam_checkpoint, load_sam
from forcomp.offline.segmenters.sam_predictor import SamBoxPredictor

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__name__)

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
    from forcomp.models.devices import resolve_device  # imports torch: not at backend listing

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
