"""Grounded SAM: WordNet prompts, both detector families, batching, fallbacks, errors; a full build."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import GDINO_DIR, OWL_DIR, SAM_FILE, SD_DIR, blob_folder, weights_with  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.segmenters import SEGMENTERS  # noqa: E402
from forcomp.offline.segmenters.grounded import (  # noqa: E402
    Detections,
    GroundedSamSegmenter,
    build_grounded_segmenter,
    class_prompts,
    read_class_names,
    wordnet_data,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((48, 64), (64, 40))]


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
    imgs = _images()
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
    assert seg.segment(_images(), ["n01440764"] * 2) == [[], []]
    seg.fallback = "sam"
    out = seg.segment(_images(), ["n01440764"] * 2)
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

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "_make_wordnet_data", root / "scripts" / "make_wordnet_data.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path / "wn.json")]) == 0
    assert json.loads((tmp_path / "wn.json").read_text()) == wordnet_data()


# ----------------------------------------------------------------------------- OWLv2 decoding (issue 13)


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
    from types import SimpleNamespace

    from forcomp.offline.segmenters.grounded import ZeroShotDetector

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
