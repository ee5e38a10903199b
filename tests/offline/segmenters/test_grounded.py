"""Grounded SAM: WordNet prompts, both detector families, batching, fallbacks, errors; a full build.

Pre/post-processing is pinned value by value: prompt building (class-name files, WordNet parents,
folder names), the detectors' box decoding on known outputs (Grounding DINO: phrase spans between
dots, boxes relative to the image; OWLv2: boxes relative to the padded square, best *real* query),
thresholds (strict, per detector), clamping, per-prompt NMS, order, and the candidates' merging (per
prompt, then by IoU). Detector outputs are replaced by known tensors behind the real tiny processors
(their tokenizers decide the token layout), SAM by a predictor double whose masks are their boxes
(what SAM returns for a box around a blob).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # _tiny_models
from _tiny_models import GDINO_DIR, OWL_DIR, SAM_FILE, SD_DIR, weights_with  # noqa: E402
from scenes import blob_folder, noise_images  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.segmenters import SEGMENTERS  # noqa: E402
from forcomp.offline.segmenters.base import MaskCandidate  # noqa: E402
from forcomp.offline.segmenters.detector import BOX_THRESHOLDS, Detections, ZeroShotDetector  # noqa: E402
from forcomp.offline.segmenters.grounded import (  # noqa: E402
    GroundedSamSegmenter,
    build_grounded_segmenter,
    class_prompts,
    read_class_names,
    wordnet_data,
)
from forcomp.offline.segmenters.sam import SamSegmenter  # noqa: E402

SIZES = ((48, 64), (64, 40))
CPU = torch.device("cpu")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def test_packaged_wordnet_covers_imagenet1k():
    data = wordnet_data()
    ids = data["imagenet1k"]
    assert len(ids) == 1000 == len(set(ids)) and ids[0] == "n01440764" and ids[-1] == "n15075141"
    syn = data["synsets"]
    for w in ids:
        chain, node = [], w
        while node is not None:
            chain.append(node)
            node = syn[node]["parent"]
        assert syn[chain[-1]]["names"] == ["entity"], w  # every chain ends at WordNet's root


def test_class_prompts():
    assert class_prompts("n01440764") == ["tench", "cyprinid", "cypriniform fish"]
    assert class_prompts("n02085620", parents=1) == ["Chihuahua", "toy dog"]
    assert class_prompts("n02085620", parents=0) == ["Chihuahua"]
    assert class_prompts("golden_retriever") == ["golden retriever"]  # not a wnid: the folder name
    assert class_prompts("cat", class_names={"cat": ["house cat", "feline", "mammal", "animal"]}) == [
        "house cat",
        "feline",
        "mammal",
    ]


def test_read_class_names(tmp_path):
    (tmp_path / "names.json").write_text(json.dumps({"a": "apple", "b": ["bus", "vehicle"]}))
    assert read_class_names(tmp_path / "names.json") == {"a": ["apple"], "b": ["bus", "vehicle"]}
    (tmp_path / "names.txt").write_text("# comment\na: apple, fruit\nb\tbus\n")
    assert read_class_names(tmp_path / "names.txt") == {"a": ["apple", "fruit"], "b": ["bus"]}
    (tmp_path / "bad.txt").write_text("a apple\n")
    with pytest.raises(ForcompError, match=r"bad\.txt:1"):
        read_class_names(tmp_path / "bad.txt")


@pytest.mark.parametrize(
    "det_dir, kind",
    [(GDINO_DIR, "grounding-dino"), pytest.param(OWL_DIR, "owlv2", marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("device", DEVICES)
def test_detector_then_sam(tmp_path_factory, tmp_path, det_dir, kind, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    w = weights_with(tmp_path_factory, tmp_path / "w", det_dir, SAM_FILE)
    seg = SEGMENTERS.build("grounded-sam", weights_dir=w, device=device, box_threshold=0.0, max_detections=3)
    assert isinstance(seg, GroundedSamSegmenter)
    assert seg.detector.kind == kind and seg.weights_id == f"{det_dir}+{SAM_FILE}"
    assert next(seg.detector.model.parameters()).device.type == device
    seen: list[int] = []
    seg.detector.model.register_forward_hook(
        lambda m, a, kw, o: seen.append(kw["pixel_values"].shape[0]), with_kwargs=True
    )
    enc: list[int] = []
    seg.sam.predictor.model.image_encoder.register_forward_hook(lambda m, i, o: enc.append(i[0].shape[0]))
    imgs = noise_images(SIZES)
    classes = ["n01440764", "n02085620"]
    out = seg.segment(imgs, classes)
    assert seen == [2] and enc == [2], "detector and SAM encoder each see the whole batch"
    for img, cls, cands in zip(imgs, classes, out, strict=True):
        assert 1 <= len(cands) <= 3
        prompts = class_prompts(cls)
        labels = [c.label for c in cands]
        assert len(set(labels)) == len(labels) and set(labels) <= set(prompts), "one merged mask per prompt"
        for c in cands:
            assert c.mask.shape == img.shape[:2] and c.mask.any() and 0 <= c.score <= 1


def test_no_detection_fallbacks(tmp_path_factory, tmp_path, monkeypatch):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, SAM_FILE)
    seg = build_grounded_segmenter(weights_dir=w, device="cpu")
    # random weights detect something at any threshold; the fallback is about the empty case
    monkeypatch.setattr(seg.detector, "detect", lambda imgs, prompts: [Detections.empty() for _ in imgs])
    assert seg.segment(noise_images(SIZES), ["n01440764"] * 2) == [[], []]
    seg.fallback = "sam"
    out = seg.segment(noise_images(SIZES), ["n01440764"] * 2)
    assert all(cands and cands[0].label in ("center", "image") for cands in out)


def test_class_names_file_reaches_the_prompt(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, SAM_FILE)
    (tmp_path / "names.txt").write_text("widgets: widget, gadget\n")
    seg = build_grounded_segmenter(
        weights_dir=w, device="cpu", class_names=tmp_path / "names.txt", max_detections=2
    )
    assert seg.prompts("widgets") == ["widget", "gadget"]
    assert seg.prompts("n01440764")[0] == "tench"


def test_missing_detector_names_expected_paths(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    with pytest.raises(WeightsNotFoundError) as e:
        build_grounded_segmenter(weights_dir=w, device="cpu")
    msg = str(e.value)
    assert str(w / "grounding-dino-tiny") in msg and "IDEA-Research/grounding-dino-tiny" in msg
    w2 = weights_with(tmp_path_factory, tmp_path / "w2", GDINO_DIR)
    with pytest.raises(WeightsNotFoundError, match="sam_vit_b_01ec64"):
        build_grounded_segmenter(weights_dir=w2, device="cpu")


def test_wrong_detector_directory(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    bad = w / "grounding-dino-tiny"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes(b"\0" * 64)  # weights present: the model type is the problem
    with pytest.raises(ForcompError, match=r"grounding-dino-tiny holds a 'bert' model"):
        build_grounded_segmenter(weights_dir=w, device="cpu")


def test_auto_prefers_grounded_sam(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, SAM_FILE)
    assert SEGMENTERS.resolve("auto", w).name == "grounded-sam"


@pytest.mark.slow
def test_full_build_grounded_sam_sd(tmp_path_factory, tmp_path):
    """A complete build through grounded SAM + the diffusers pipeline: files and provenance."""
    from PIL import Image

    from forcomp.cache.index import read_index
    from forcomp.cache.layout import CacheLayout
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    w = weights_with(tmp_path_factory, tmp_path / "weights", GDINO_DIR, SAM_FILE, SD_DIR)
    src = blob_folder(tmp_path / "src")
    cfg = BuildConfig(
        split="train",
        segmenter="grounded-sam",
        inpainter="sd",
        weights_dir=str(w),
        device="cpu",
        batch_size=4,
        segmenter_options={"box_threshold": 0.0, "max_detections": 2},
        inpainter_options={"steps": 2},
        scorer="sam-score",
    )
    summary = build_cache(src, tmp_path / "cache", cfg)
    assert summary.exit_code == 0, summary.format()
    layout = CacheLayout(tmp_path / "cache", "train")
    index = read_index(layout)
    assert len(index) == 4 and all(r.status == "ok" for r in index.values())
    for rec in index.values():
        assert rec.segmenter == "grounded-sam" and rec.segmenter_weights == f"{GDINO_DIR}+{SAM_FILE}"
        assert rec.inpainter == "sd" and rec.inpainter_weights == SD_DIR
        src_img = np.asarray(Image.open(rec.source).convert("RGB")).astype(int)
        bg = np.asarray(Image.open(layout.bg_path(rec.cls, rec.stem)).convert("RGB")).astype(int)
        assert bg.shape == src_img.shape
        x0, y0, x1, y1 = rec.bbox
        alpha = np.asarray(Image.open(layout.fg_path(rec.cls, rec.stem)))[..., 3] > 0
        # the hole was repainted by the pipeline, the far corner kept (JPEG round trip aside)
        assert np.abs(bg[y0:y1, x0:x1][alpha] - src_img[y0:y1, x0:x1][alpha]).mean() > 5
    # resume: nothing left to do
    again = build_cache(src, tmp_path / "cache", cfg)
    assert again.skipped == 4 and again.processed == 0


@pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file(), reason="needs Debian's wordnet-base (WordNet 3.0)"
)
def test_packaged_wordnet_is_reproducible(tmp_path):
    """scripts/make_wordnet_data.py regenerates the packaged JSON exactly from its sources."""
    import importlib.util

    root = Path(__file__).resolve().parents[3]
    spec = importlib.util.spec_from_file_location(
        "_make_wordnet_data", root / "scripts" / "make_wordnet_data.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path / "wn.json")]) == 0
    assert json.loads((tmp_path / "wn.json").read_text()) == wordnet_data()


# ----------------------------------------------------------------------------- OWLv2 decoding


def _squashing_post_process(self, outputs, threshold=0.1, target_sizes=None):
    """transformers' OWLv2 post-processing before its May 2024 fix: boxes scaled by (h, w)."""
    logits, boxes = outputs.logits, outputs.pred_boxes
    best = torch.max(logits, dim=-1)
    scores, labels = torch.sigmoid(best.values), best.indices
    cx, cy, bw, bh = boxes.unbind(-1)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    out = []
    for b, (h, w) in enumerate(target_sizes):
        keep = scores[b] > threshold
        bx = boxes[b] * torch.tensor([w, h, w, h], dtype=boxes.dtype)
        out.append({"scores": scores[b][keep], "labels": labels[b][keep], "boxes": bx[keep]})
    return out


def test_owlv2_boxes_scaled_by_padded_square_and_real_queries(tmp_path_factory, tmp_path, monkeypatch):
    """Known boxes on non-square images come back in pixels whatever transformers' post-processing
    does, and a box whose best query is the processor's padding takes its best real query."""

    w = weights_with(tmp_path_factory, tmp_path / "w", OWL_DIR)
    det = ZeroShotDetector(w / OWL_DIR, torch.device("cpu"))
    assert det.kind == "owlv2"
    monkeypatch.setattr(
        type(det.processor.image_processor), "post_process_object_detection", _squashing_post_process
    )
    # image 0: 50 x 100 (landscape), image 1: 100 x 40 (portrait); true boxes XYXY in pixels
    images = [np.full((50, 100, 3), 128, np.uint8), np.full((100, 40, 3), 128, np.uint8)]
    truth = [(20.0, 10.0, 60.0, 40.0), (5.0, 30.0, 35.0, 80.0)]
    prompts = [["tench", "fish", "animal"], ["dog"]]
    real_model = det.model

    def model_with_known_boxes(**inputs):
        out = real_model(**inputs)
        B, P, Q = out.logits.shape
        assert Q == 3, "queries are padded to the longest prompt list"
        logits = torch.full((B, P, Q), -10.0)
        pred = torch.tensor([0.5, 0.5, 0.01, 0.01]).repeat(B, P, 1)
        for b, (x0, y0, x1, y1) in enumerate(truth):
            side = max(images[b].shape[:2])  # OWLv2 pads to a square: boxes are relative to it
            pred[b, 0] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]) / side
        logits[0, 0, 1] = 3.0  # image 0: "fish"
        logits[1, 0, 0] = 2.0  # image 1: "dog" ...
        logits[1, 0, 2] = 8.0  # ... but its best match is the padding query " "
        return SimpleNamespace(logits=logits, pred_boxes=pred)

    monkeypatch.setattr(det, "model", model_with_known_boxes)
    dets = det.detect(images, prompts)
    for d, box in zip(dets, truth, strict=True):
        assert len(d.boxes) == 1
        np.testing.assert_allclose(d.boxes[0], box, atol=1e-3)
    assert dets[0].labels.tolist() == [1] and dets[0].scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert dets[1].labels.tolist() == [0] and dets[1].scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_box_threshold_defaults_per_detector(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, OWL_DIR, SAM_FILE)
    gd = build_grounded_segmenter(weights_dir=w, device="cpu", detector=GDINO_DIR)
    owl = build_grounded_segmenter(weights_dir=w, device="cpu", detector=OWL_DIR)
    assert (gd.detector.box_threshold, owl.detector.box_threshold) == (0.3, 0.1)
    set_ = build_grounded_segmenter(weights_dir=w, device="cpu", detector=OWL_DIR, box_threshold=0.25)
    assert set_.detector.box_threshold == 0.25


def test_loading_leaves_the_process_environment_alone(tmp_path_factory, tmp_path, monkeypatch):
    """Local directories load with local_files_only; HF_HUB_OFFLINE is not set behind the user's back."""
    import os

    from forcomp.offline.inpainters.diffusion import build_sd_inpainter

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, SAM_FILE, SD_DIR)
    before = dict(os.environ)
    build_grounded_segmenter(weights_dir=w, device="cpu")
    build_sd_inpainter(weights_dir=w, device="cpu")
    assert dict(os.environ) == before


@pytest.fixture(autouse=True, scope="module")
def _no_stale_shared_weights():
    """weights_with caches its folder per process; mutmut runs several pytest sessions in one process
    and pytest deletes old base temp folders (also other users' runs do): forget a folder that is gone."""
    import _tiny_models

    if _tiny_models._SHARED and not _tiny_models._SHARED[0].exists():
        _tiny_models._SHARED.clear()


def _sig(x: float) -> float:
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------- prompts


def test_class_prompts_from_names_wordnet_and_folder():
    names = {"w": ["widget", "gadget", "thing", "object"]}
    assert class_prompts("w", parents=2, class_names=names) == ["widget", "gadget", "thing"]
    assert class_prompts("w", parents=0, class_names=names) == ["widget"]
    assert class_prompts("w", parents=9, class_names=names) == names["w"]
    assert class_prompts("n01440764", parents=2) == ["tench", "cyprinid", "cypriniform fish"]
    assert class_prompts("n01440764") == class_prompts("n01440764", parents=2), "two parents by default"
    assert class_prompts("n01440764", parents=1) == ["tench", "cyprinid"]
    assert class_prompts("n01440764", parents=0) == ["tench"]
    assert class_prompts("n01440764", parents=2, class_names=names) == [
        "tench",
        "cyprinid",
        "cypriniform fish",
    ]
    chain = class_prompts("n01440764", parents=50)
    assert chain[-1] == "entity" and len(chain) == len(set(chain)), "walks to the root, no name twice"
    assert class_prompts("golden_retriever") == ["golden retriever"]
    assert class_prompts("_") == ["_"]
    assert class_prompts(" x_y ") == ["x y"]


def test_class_prompts_skip_a_repeated_name(monkeypatch):
    """WordNet repeats names up the tree (a class and its parent both called 'x'): each name once."""
    from forcomp.offline.segmenters import grounded

    table = {
        "c": {"names": ["dog", "canine"], "parent": "p1"},
        "p1": {"names": ["dog"], "parent": "p2"},
        "p2": {"names": ["carnivore"], "parent": "p3"},
        "p3": {"names": ["animal"], "parent": None},
    }
    monkeypatch.setattr(grounded, "wordnet_data", lambda: {"synsets": table})
    assert class_prompts("c", parents=2) == ["dog", "carnivore", "animal"]
    assert class_prompts("c", parents=1) == ["dog", "carnivore"]
    assert class_prompts("c", parents=5) == ["dog", "carnivore", "animal"]
    assert class_prompts("p2", parents=0) == ["carnivore"]


def test_read_class_names_json(tmp_path):
    p = tmp_path / "n.JSON"
    p.write_text(json.dumps({"a": " apple ", "b": ["bus", " vehicle"], "1": "one"}), encoding="utf-8")
    assert read_class_names(p) == {"a": ["apple"], "b": ["bus", "vehicle"], "1": ["one"]}
    for bad, msg in [
        ("[1, 2]", r"must hold a JSON object \{class: name or \[names\]\}$"),
        ("{", "is not valid JSON: "),
        ('{"a": 3}', r": 'a' needs a name or a list of names$"),
        ('{"a": []}', r": 'a' needs a name or a list of names$"),
        ('{"a": ["x", " "]}', r": 'a' needs a name or a list of names$"),
        ('{"a": ["x", 3]}', r": 'a' needs a name or a list of names$"),
    ]:
        p.write_text(bad, encoding="utf-8")
        with pytest.raises(ForcompError, match=r"^class names file .*n\.JSON") as e:
            read_class_names(p)
        assert re.search(msg, str(e.value)), (bad, str(e.value))


def test_read_class_names_text(tmp_path):
    p = tmp_path / "n.txt"
    p.write_text("# c\n\n  a : apple , fruit,,\nb\tbus\nc:d: e\n", encoding="utf-8")
    assert read_class_names(p) == {"a": ["apple", "fruit"], "b": ["bus"], "c": ["d: e"]}
    p.write_text("é: ça\n", encoding="utf-8")
    assert read_class_names(p) == {"é": ["ça"]}
    for text, line, got in [("a: x\nb:\n", 2, "b:"), ("a x\n", 1, "a x"), ("a: ,\n", 1, "a: ,")]:
        p.write_text(text, encoding="utf-8")
        with pytest.raises(ForcompError) as e:
            read_class_names(p)
        assert (
            str(e.value) == f"class names file {p}:{line}: expected 'class: name[, parent...]', got {got!r}"
        )
    with pytest.raises(ForcompError, match=rf"^cannot read class names file {tmp_path / 'none.txt'}: "):
        read_class_names(tmp_path / "none.txt")


# ----------------------------------------------------------------------------- _finish


def _bare_detector(threshold=0.3, nms_iou=0.5, max_detections=10) -> ZeroShotDetector:
    det = ZeroShotDetector.__new__(ZeroShotDetector)
    det.box_threshold, det.nms_iou, det.max_detections = threshold, nms_iou, max_detections
    return det


def test_finish_threshold_clamp_nms_order():
    det = _bare_detector(threshold=0.3, nms_iou=0.5, max_detections=10)
    boxes = torch.tensor(
        [
            [10.0, 10.0, 30.0, 30.0],  # 0: kept
            [11.0, 11.0, 31.0, 31.0],  # 1: same prompt, overlaps 0 (IoU 0.82) with a lower score: suppressed
            [11.0, 11.0, 31.0, 31.0],  # 2: the same box for another prompt: kept (NMS is per prompt)
            [-5.0, -3.0, 70.0, 90.0],  # 3: clamped to the image
            [5.0, 5.0, 20.0, 20.0],  # 4: score exactly at the threshold: dropped
            [40.0, 40.0, 40.5, 50.0],  # 5: under a pixel wide: dropped
            [40.0, 40.0, 50.0, 40.9],  # 6: under a pixel high: dropped
            [20.0, 2.0, 21.0, 3.0],  # 7: exactly one pixel: kept
            [65.0, 1.0, 80.0, 9.0],  # 8: right of the image (w = 64): clamped to nothing, dropped
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.3, 0.95, 0.95, 0.31, 0.99])
    labels = torch.tensor([0, 0, 1, 2, 0, 0, 0, 1, 2])
    d = det._finish(boxes.clone(), scores, labels, (48, 64))
    np.testing.assert_allclose(
        d.boxes, [[10, 10, 30, 30], [11, 11, 31, 31], [0, 0, 64, 48], [20, 2, 21, 3]], atol=1e-6
    )
    np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.6, 0.31], atol=1e-6)
    assert d.labels.tolist() == [0, 1, 2, 1]
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32
    top2 = _bare_detector(max_detections=2)._finish(boxes.clone(), scores, labels, (48, 64))
    assert top2.labels.tolist() == [0, 1] and top2.scores.tolist() == pytest.approx([0.9, 0.7])
    loose = _bare_detector(nms_iou=0.9)._finish(boxes.clone(), scores, labels, (48, 64))
    assert loose.labels.tolist() == [0, 0, 1, 2, 1], "IoU 0.82 is under 0.9: both boxes stay"
    none = _bare_detector(threshold=0.99)._finish(boxes.clone(), scores, labels, (48, 64))
    assert none.boxes.shape == (0, 4) and none.scores.shape == (0,) and none.labels.shape == (0,)


def test_detections_empty():
    e = Detections.empty()
    assert e.boxes.shape == (0, 4) and e.boxes.dtype == np.float32
    assert e.scores.shape == (0,) and e.scores.dtype == np.float32
    assert e.labels.shape == (0,) and e.labels.dtype == np.int64


# ----------------------------------------------------------------------------- detectors on known outputs


@pytest.fixture(scope="module")
def owl(tmp_path_factory) -> ZeroShotDetector:
    w = weights_with(tmp_path_factory, tmp_path_factory.mktemp("owl"), OWL_DIR)
    return ZeroShotDetector(w / OWL_DIR, CPU, batch_size=1)


@pytest.fixture(scope="module")
def gdino(tmp_path_factory) -> ZeroShotDetector:
    w = weights_with(tmp_path_factory, tmp_path_factory.mktemp("gd"), GDINO_DIR)
    return ZeroShotDetector(w / GDINO_DIR, CPU, batch_size=1)


def _cxcywh(box, sx: float, sy: float) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return torch.tensor([(x0 + x1) / 2 / sx, (y0 + y1) / 2 / sy, (x1 - x0) / sx, (y1 - y0) / sy])


def test_owlv2_decoding(owl, monkeypatch):
    """Boxes relative to the padded square (side = the long side); real queries only; sigmoid scores."""
    assert owl.kind == "owlv2" and owl.box_threshold == BOX_THRESHOLDS["owlv2"] == 0.1
    assert owl.batch_size == 1 and owl.nms_iou == 0.5 and owl.max_detections == 10
    monkeypatch.setattr(owl, "batch_size", 2)  # one pass: image 1's single query is padded to 3
    images = [np.full((50, 100, 3), 128, np.uint8), np.full((100, 40, 3), 128, np.uint8)]
    prompts = [["tench", " fish ", "animal"], ["dog"]]
    truth = [
        [(20.0, 10.0, 60.0, 40.0), (70.0, 5.0, 95.0, 45.0)],
        [(5.0, 30.0, 35.0, 80.0), (2.0, 2.0, 20.0, 20.0)],
    ]
    real = owl.model

    def model(**inputs):
        out = real(**inputs)
        B, P, Q = out.logits.shape
        assert (B, Q) == (2, 3)
        logits = torch.full((B, P, Q), -10.0)
        pred = torch.tensor([0.5, 0.5, 0.01, 0.01]).repeat(B, P, 1)
        for b in range(2):
            side = max(images[b].shape[:2])
            for q, box in enumerate(truth[b]):
                pred[b, q] = _cxcywh(box, side, side)
        logits[0, 0, 1] = 3.0  # "fish"
        logits[0, 1, 2] = -2.1  # "animal", sigmoid 0.109: above OWLv2's 0.1
        logits[0, 2, 0] = -2.3  # sigmoid 0.091: under it
        logits[1, 0, 0] = 2.0  # "dog"...
        logits[1, 0, 2] = 8.0  # ...but the padding query " " matches better
        logits[1, 1, 1] = 9.0  # a box matching only padding queries: its real score is -10
        return SimpleNamespace(logits=logits, pred_boxes=pred)

    seen_text: list = []
    proc = owl.processor

    def processor(**kw):
        seen_text.append(kw["text"])
        return proc(**kw)

    monkeypatch.setattr(owl, "model", model)
    monkeypatch.setattr(owl, "processor", processor)
    d0, d1 = owl.detect(images, prompts)
    assert seen_text == [
        [["a photo of a tench", "a photo of a fish", "a photo of a animal"], ["a photo of a dog"]]
    ]
    np.testing.assert_allclose(d0.boxes, truth[0], atol=1e-3)
    assert d0.labels.tolist() == [1, 2]
    np.testing.assert_allclose(d0.scores, [_sig(3.0), _sig(-2.1)], rtol=1e-5)
    np.testing.assert_allclose(d1.boxes, truth[1][:1], atol=1e-3)
    assert d1.labels.tolist() == [0] and d1.scores[0] == pytest.approx(_sig(2.0))


def _gdino_positions(tokenizer, ids: list[int], phrases: list[str]) -> list[list[int]]:
    """Token positions of each phrase, by spelling the tokens out (the tiny tokenizer is per character)."""
    toks = tokenizer.convert_ids_to_tokens(ids)
    out, pos = [], 0
    for ph in phrases:
        target = ph.lower().replace(" ", "")
        while True:
            spelled = ""
            k = pos
            span = []
            while k < len(toks) and len(spelled) < len(target):
                spelled += toks[k].removeprefix("##")
                span.append(k)
                k += 1
            if spelled == target:
                out.append(span)
                pos = k
                break
            pos += 1
    return out


def test_grounding_dino_decoding(gdino, monkeypatch):
    """Phrase k's score is its best token; boxes are relative to the image itself (w, h)."""
    assert gdino.kind == "grounding-dino" and gdino.box_threshold == BOX_THRESHOLDS["grounding-dino"] == 0.3
    monkeypatch.setattr(gdino, "batch_size", 2)  # one pass: "dog." is padded to the longer text
    images = [np.full((50, 100, 3), 128, np.uint8), np.full((100, 40, 3), 128, np.uint8)]
    # 1 + 5 + 1 + 4 + 1 + 9 + 1 + 1 tokens: the last letter of "big animal" is token 20
    prompts = [["Tench", "fish", "Big Animal"], ["dog"]]
    truth = [
        [(20.0, 10.0, 60.0, 40.0), (70.0, 5.0, 95.0, 45.0), (1.0, 1.0, 9.0, 9.0)],
        [(5.0, 30.0, 35.0, 80.0), (2.0, 2.0, 20.0, 20.0)],
    ]
    real = gdino.model
    tok = gdino.processor.tokenizer

    def model(**inputs):
        out = real(**inputs)
        B, Q, T = out.logits.shape
        assert (B, Q, T) == (2, 20, 128)
        logits = torch.full((B, Q, T), -10.0)
        pred = torch.tensor([0.5, 0.5, 0.01, 0.01]).repeat(B, Q, 1)
        pos, special, dots = [], [], []
        for b in range(2):
            ids = inputs["input_ids"][b].tolist()
            pos.append(_gdino_positions(tok, ids, prompts[b]))
            special.append([k for k, i in enumerate(ids) if i in tok.all_special_ids])
            dots.append([k for k, i in enumerate(ids) if i == tok.convert_tokens_to_ids(".")])
            h, w = images[b].shape[:2]
            for q, box in enumerate(truth[b]):
                pred[b, q] = _cxcywh(box, w, h)
        assert pos[0][2][-1] == 20 and inputs["input_ids"].shape[1] > 20
        logits[0, 0, pos[0][1][-1]] = 3.0  # the last token of "fish"
        logits[0, 0, pos[0][2][0]] = 1.0
        logits[0, 1, pos[0][2][-1]] = -0.8  # "big animal", sigmoid 0.31: above 0.3
        logits[0, 1, pos[0][0][0]] = -0.9
        logits[0, 2, pos[0][0][2]] = -0.85  # "tench", sigmoid 0.2994: under 0.3
        logits[0, 2, special[0]] = 9.0  # [CLS]/[SEP] tokens are no phrase
        logits[0, 2, dots[0]] = 9.0  # nor are the dots
        logits[1, 0, pos[1][0][1]] = 2.0  # "dog"
        logits[1, 1, special[1]] = 9.0  # [CLS], [SEP] and the padding after "dog." are no phrase
        logits[1, 1, pos[0][2][-1] + 1 :] = 9.0  # past the text
        return SimpleNamespace(logits=logits, pred_boxes=pred)

    monkeypatch.setattr(gdino, "model", model)
    seen_text: list = []
    proc = gdino.processor

    class Proc:
        tokenizer = proc.tokenizer

        def __call__(self, **kw):
            seen_text.append(kw["text"])
            return proc(**kw)

    monkeypatch.setattr(gdino, "processor", Proc())
    d0, d1 = gdino.detect(images, prompts)
    assert seen_text == [["tench. fish. big animal.", "dog."]]
    np.testing.assert_allclose(d0.boxes, truth[0][:2], atol=1e-3)
    assert d0.labels.tolist() == [1, 2]
    np.testing.assert_allclose(d0.scores, [_sig(3.0), _sig(-0.8)], rtol=1e-5)
    np.testing.assert_allclose(d1.boxes, truth[1][:1], atol=1e-3)
    assert d1.labels.tolist() == [0] and d1.scores[0] == pytest.approx(_sig(2.0))


def test_grounding_dino_image_without_prompts(gdino, monkeypatch):
    """An image with no phrase has no detection; the images after it keep theirs."""
    monkeypatch.setattr(gdino, "batch_size", 2)
    real = gdino.model

    def model(**inputs):
        out = real(**inputs)
        logits = torch.full_like(out.logits, -10.0)
        logits[1, 0, 1] = 5.0  # image 1, query 0: the first letter of "dog"
        pred = torch.tensor([0.5, 0.5, 0.5, 0.5]).repeat(*out.pred_boxes.shape[:2], 1)
        return SimpleNamespace(logits=logits, pred_boxes=pred)

    monkeypatch.setattr(gdino, "model", model)
    d0, d1 = gdino.detect([np.full((40, 40, 3), 9, np.uint8)] * 2, [[], ["dog"]])
    assert d0.boxes.shape == (0, 4) and d0.labels.shape == (0,)
    assert d1.labels.tolist() == [0]
    np.testing.assert_allclose(d1.boxes, [[10, 10, 30, 30]], atol=1e-3)
    # batches of one: the results of every pass are kept, in order
    monkeypatch.setattr(gdino, "batch_size", 1)
    monkeypatch.setattr(
        gdino,
        "model",
        lambda **inputs: SimpleNamespace(
            logits=torch.full((1, 20, 128), 5.0),
            pred_boxes=torch.tensor([0.5, 0.5, 0.5, 0.5]).repeat(1, 20, 1),
        ),
    )
    out = gdino.detect([np.full((40, 40, 3), 9, np.uint8)] * 3, [["dog"], [], ["cat"]])
    assert [len(d.boxes) for d in out] == [1, 0, 1]


def test_detect_batches(owl, monkeypatch):
    calls: list[int] = []

    def fake(imgs, prm):
        calls.append(len(imgs))
        return [Detections.empty() for _ in imgs]

    monkeypatch.setattr(owl, "_detect_owlv2", fake)
    monkeypatch.setattr(owl, "batch_size", 2)
    assert len(owl.detect([np.zeros((8, 8, 3), np.uint8)] * 5, [["a"]] * 5)) == 5
    assert calls == [2, 2, 1]


def test_detector_options_checked(tmp_path):
    for kw, msg in [
        ({"box_threshold": 1.0}, r"^box_threshold must be in \[0, 1\), got 1.0$"),
        ({"box_threshold": -0.1}, r"^box_threshold must be in \[0, 1\), got -0.1$"),
        ({"batch_size": 0}, r"^batch_size and max_detections must be >= 1, got 0, 10$"),
        ({"max_detections": 0}, r"^batch_size and max_detections must be >= 1, got 8, 0$"),
    ]:
        with pytest.raises(ValueError, match=msg):
            ZeroShotDetector(tmp_path, CPU, **kw)
    with pytest.raises(ForcompError, match=rf"^detector directory {tmp_path} has no readable config.json: "):
        ZeroShotDetector(tmp_path, CPU, box_threshold=0.0, max_detections=1, batch_size=1)


def test_detector_directory_errors(tmp_path_factory, tmp_path):
    """A config of another model type, and a config without the model's files: messages name both."""
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ForcompError) as e:
        ZeroShotDetector(bad, CPU)
    assert str(e.value) == (
        f"detector directory {bad} holds a 'bert' model; expected Grounding DINO or OWLv2 "
        "(grounding-dino-base, grounding-dino-tiny, owlv2-base-patch16-ensemble)"
    )
    w = weights_with(tmp_path_factory, tmp_path / "w", OWL_DIR)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((w / OWL_DIR / "config.json").read_text())
    with pytest.raises(ForcompError) as e:
        ZeroShotDetector(half, CPU)
    msg, cause = str(e.value), e.value.__cause__
    assert cause is not None and str(cause).strip()
    first = str(cause).strip().splitlines()[0]
    assert msg == f"cannot load the detector from {half}: {type(cause).__name__}: {first}"


# ----------------------------------------------------------------------------- SAM side: merging


class _BoxPredictor:
    """SAM predictor double: a box's best mask is the object (non-black pixels) inside it, read from
    the image's embedding (here the image itself), as SAM gives for a box around a solid blob."""

    def __init__(self) -> None:
        self.boxes: list[np.ndarray] = []

    def embed(self, images):
        return [torch.from_numpy(im.copy()) for im in images]

    def predict_boxes(self, embedding, image_hw, boxes):
        h, w = image_hw
        obj = embedding.numpy().any(-1)
        assert obj.shape == (h, w)
        self.boxes.append(np.asarray(boxes))
        masks = np.zeros((len(boxes), 3, h, w), bool)
        for b, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).round().astype(int)):
            masks[b, :, y0:y1, x0:x1] = obj[y0:y1, x0:x1]
        ious = np.tile(np.array([0.9, 0.5, 0.2]), (len(boxes), 1))
        return masks, ious


class _FixedDetector:
    def __init__(self, dets: list[Detections]) -> None:
        self.dets = dets
        self.prompts: list = []

    def detect(self, images, prompts):
        assert len(images) == len(prompts) == len(self.dets)
        self.prompts.append(prompts)
        return self.dets


def _seg(dets, **kw) -> tuple[GroundedSamSegmenter, _BoxPredictor, _FixedDetector]:
    pred = _BoxPredictor()
    sam = SamSegmenter(pred, weights_id="sam", min_region_ratio=0.0, max_area_ratio=1.0)  # type: ignore[arg-type]
    det = _FixedDetector(dets)
    return GroundedSamSegmenter(det, sam, weights_id="d+sam", **kw), pred, det  # type: ignore[arg-type]


def test_segment_merges_per_prompt_then_by_iou():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # "tench" 0.9
            [30, 30, 40, 40],  # "tench" again 0.5: united with the first
            [0, 0, 10, 11],  # "cyprinid" 0.8: IoU 0.909 with the first tench box's mask...
            [50, 0, 60, 10],  # "cypriniform fish" 0.6: apart
        ],
        np.float32,
    )
    d = Detections(boxes, np.array([0.9, 0.5, 0.8, 0.6], np.float32), np.array([0, 0, 1, 2]))
    seg, pred, det = _seg([d], merge_iou=0.9, max_candidates=3)
    img = np.full((48, 64, 3), 255, np.uint8)
    (cands,) = seg.segment([img], ["n01440764"])
    assert det.prompts == [[["tench", "cyprinid", "cypriniform fish"]]]
    np.testing.assert_array_equal(pred.boxes[0], boxes)
    # ...but the tench candidate is the union of two boxes (IoU 100/200 with cyprinid's): no merge
    assert [c.label for c in cands] == ["tench", "cyprinid", "cypriniform fish"]
    assert [c.score for c in cands] == pytest.approx([0.9 * 0.9, 0.9 * 0.8, 0.9 * 0.6])
    want = np.zeros((48, 64), bool)
    want[0:10, 0:10] = want[30:40, 30:40] = True
    assert np.array_equal(cands[0].mask, want)
    assert seg.segment([], []) == []


def test_merge_by_iou():
    def box(x0, y0, x1, y1):
        m = np.zeros((20, 20), bool)
        m[y0:y1, x0:x1] = True
        return m

    a = MaskCandidate(box(0, 0, 10, 10), 0.5, "a")
    b = MaskCandidate(box(0, 0, 10, 11), 0.8, "b")  # IoU 100/110 = 0.909 with a
    c = MaskCandidate(box(10, 10, 20, 20), 0.7, "c")
    seg, _, _ = _seg([], merge_iou=0.9)
    out = seg._merge([a, c, b])
    assert [m.label for m in out] == ["b", "c"] and [m.score for m in out] == [0.8, 0.7]
    assert np.array_equal(out[0].mask, a.mask | b.mask)
    seg.merge_iou = 100 / 110  # exactly the IoU: not more than it, no merge
    assert [m.label for m in seg._merge([a, c, b])] == ["b", "c", "a"]
    seg.merge_iou = 1.0
    same = MaskCandidate(box(0, 0, 10, 10), 0.1, "same")
    assert [m.label for m in seg._merge([a, same])] == ["a", "same"], "IoU 1 is not more than 1"


def test_segment_max_candidates_and_fallbacks():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    d = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 2]))
    seg, _, _ = _seg([d], max_candidates=2)
    assert [c.label for c in seg.segment([np.full((20, 60, 3), 255, np.uint8)], ["n01440764"])[0]] == [
        "tench",
        "cyprinid",
    ]
    seg, pred, _ = _seg([Detections.empty()], fallback="none")
    assert seg.segment([np.full((20, 60, 3), 255, np.uint8)], ["x"]) == [[]] and pred.boxes == []
    seg, pred, _ = _seg([Detections.empty()], fallback="sam", max_candidates=1)
    (cands,) = seg.segment([np.full((20, 60, 3), 255, np.uint8)], ["x"])
    assert [c.label for c in cands] == ["center"], (
        "center first (equal scores keep the prompt order), one kept"
    )
    np.testing.assert_allclose(pred.boxes[0], [[9, 3, 51, 17], [0, 0, 60, 20]])


def test_segmenter_options_checked():
    for kw, msg in [
        ({"parents": -1}, r"^parents must be >= 0, got -1$"),
        ({"max_candidates": 0}, r"^max_candidates must be >= 1, got 0$"),
        ({"merge_iou": 0.0}, r"^merge_iou must be in \(0, 1\], got 0.0$"),
        ({"merge_iou": 1.01}, r"^merge_iou must be in \(0, 1\], got 1.01$"),
        ({"fallback": "x"}, r"^fallback must be 'none' or 'sam', got 'x'$"),
    ]:
        with pytest.raises(ValueError, match=msg):
            _seg([], **kw)
    seg, _, _ = _seg([], parents=0, merge_iou=1.0, class_names={"w": ["widget", "gadget"]})
    assert seg.prompts("w") == ["widget"] and seg.prompts("n01440764") == ["tench"]
    seg, _, _ = _seg([])
    assert (seg.parents, seg.max_candidates, seg.merge_iou, seg.fallback, seg.class_names) == (
        2,
        3,
        0.9,
        "none",
        None,
    )
    assert seg.weights_id == "d+sam" and seg.name == "grounded-sam"


def test_build_logs_detector_and_sam(tmp_path_factory, tmp_path, caplog):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, OWL_DIR, SAM_FILE)
    (w / "sam_vit_l_0b3195.pth").write_bytes(b"not this one" * 100)  # "auto" would take it (larger)
    (tmp_path / "n.json").write_text(json.dumps({"k": ["kit", "set"]}))
    with caplog.at_level(logging.INFO, logger="forcomp.offline.segmenters.grounded"):
        seg = build_grounded_segmenter(
            weights_dir=w,
            device="cpu",
            detector=OWL_DIR,
            box_threshold=0.2,
            nms_iou=0.4,
            max_detections=4,
            detector_batch_size=3,
            parents=1,
            class_names=str(tmp_path / "n.json"),
            max_candidates=2,
            merge_iou=0.8,
            sam="vit_b",
            encoder_batch_size=3,
            amp=False,
            fallback="sam",
            keep_frac=0.5,
        )
    d = seg.detector
    assert (d.kind, d.box_threshold, d.nms_iou, d.max_detections, d.batch_size) == ("owlv2", 0.2, 0.4, 4, 3)
    assert (seg.parents, seg.max_candidates, seg.merge_iou, seg.fallback) == (1, 2, 0.8, "sam")
    assert seg.prompts("k") == ["kit", "set"] and seg.sam.keep_frac == 0.5
    assert seg.sam.predictor.encoder_batch_size == 3 and seg.sam.predictor.amp is False
    assert seg.weights_id == f"{OWL_DIR}+{SAM_FILE}" and seg.sam.weights_id == SAM_FILE
    assert f"grounded-sam: detector {OWL_DIR} (owlv2) + {SAM_FILE} on cpu" in caplog.messages


def test_segment_each_image_its_own_boxes_and_embedding():
    """Two images: the first without detection, the second with a box on empty ground then one on its
    blob; each mask comes from its own image, and an empty box does not end the image's list."""
    a = np.zeros((30, 40, 3), np.uint8)
    b = np.zeros((30, 40, 3), np.uint8)
    b[5:15, 20:30] = 200
    d = Detections(
        np.array([[0, 0, 10, 10], [18, 3, 32, 17]], np.float32),
        np.array([0.9, 0.8], np.float32),
        np.array([0, 1]),
    )
    seg, pred, det = _seg([Detections.empty(), d])
    out = seg.segment([a, b], ["n01440764", "n01440764"])
    assert out[0] == [] and [c.label for c in out[1]] == ["cyprinid"]
    want = np.zeros((30, 40), bool)
    want[5:15, 20:30] = True
    assert np.array_equal(out[1][0].mask, want) and out[1][0].score == pytest.approx(0.9 * 0.8)


def test_find_detector_messages(tmp_path):
    from forcomp.offline.segmenters.detector import DETECTORS, find_detector

    with pytest.raises(WeightsNotFoundError) as e:
        find_detector(tmp_path)
    msg = str(e.value)
    assert msg.startswith("no zero-shot detector found: expected a directory ")
    assert all(str(tmp_path / n) in msg and u in msg for n, u in DETECTORS.items())
    with pytest.raises(
        WeightsNotFoundError, match=r"^zero-shot detector 'owlv2-base-patch16-ensemble' not found"
    ):
        find_detector(tmp_path, OWL_DIR)
    with pytest.raises(
        ValueError, match=r"^detector must be 'auto' or a directory name in weights/, got 'a/b'$"
    ):
        find_detector(tmp_path, "a/b")


def test_build_defaults(tmp_path_factory, tmp_path):
    w = weights_with(tmp_path_factory, tmp_path / "w", GDINO_DIR, OWL_DIR, SAM_FILE)
    seg = build_grounded_segmenter(weights_dir=w, device="cpu", class_names={"k": ["kit", "set", "thing"]})
    d = seg.detector
    assert d.kind == "grounding-dino" and d.path == w / GDINO_DIR, "auto: Grounding DINO first"
    assert (d.box_threshold, d.nms_iou, d.max_detections, d.batch_size) == (0.3, 0.5, 10, 8)
    assert d.device == CPU and seg.sam.predictor.device == CPU and seg.sam.predictor.amp is True
    assert (seg.parents, seg.max_candidates, seg.merge_iou, seg.fallback) == (2, 3, 0.9, "none")
    assert seg.prompts("k") == ["kit", "set", "thing"] and seg.prompts("n01440764")[0] == "tench"
