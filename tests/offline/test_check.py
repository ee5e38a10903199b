"""``forcomp backends --check``: every usable backend loads, runs, is scored on known truth, is drawn."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import LAMA_FILE, SAM_FILE, make_diffusion_lama, weights_with  # noqa: E402

from forcomp.cli import main  # noqa: E402
from forcomp.offline.check import check_backends, known_truth_scenes, mask_iou, psnr  # noqa: E402


def test_known_truth_scenes():
    scenes = known_truth_scenes(6, 64, seed=3)
    assert len(scenes) == 6
    for s in scenes:
        assert s.image.shape == s.background.shape == (64, 64, 3) and s.mask.shape == (64, 64)
        assert 0.04 < s.mask.mean() < 0.5
        assert np.array_equal(s.image[~s.mask], s.background[~s.mask]), "only the object differs"
        diff = np.abs(s.image.astype(int) - s.background.astype(int)).sum(-1)
        assert (diff[s.mask] > 60).mean() > 0.9, "the object stands out from its background"
    again = known_truth_scenes(6, 64, seed=3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(scenes, again, strict=True))
    with pytest.raises(ValueError, match="size"):
        known_truth_scenes(2, 16)


def test_metrics():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12) and mask_iou(a, a) == 1.0
    x = np.full(100, 100, np.uint8)
    assert psnr(x, x) == math.inf
    assert psnr(x, x + 10) == pytest.approx(10 * math.log10(255**2 / 100))


@pytest.fixture
def tiny_weights(tmp_path_factory, tmp_path) -> Path:
    """A tiny SAM (with a global-attention block) and a LaMa double that fills from known context."""
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    make_diffusion_lama(w / LAMA_FILE)
    return w


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_check_runs_and_scores_every_usable_backend(tiny_weights, tmp_path, device):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "out"
    rep = check_backends(tiny_weights, out, device=device, photos=2, photo_px=64, scenes=4, scene_px=64)
    by = {(r.stage, r.name): r for r in rep.results}
    assert set(by) == {
        ("segmenter", "classical"),
        ("segmenter", "sam"),
        ("inpainter", "telea"),
        ("inpainter", "ns"),
        ("inpainter", "lama"),
    }
    assert rep.failed == [] and rep.auto == {"segmenter": "sam", "inpainter": "lama"}
    assert rep.skipped == {"segmenter:grounded-sam": "no weights", "inpainter:sd": "no weights"}
    assert by["segmenter", "sam"].weights == SAM_FILE and by["inpainter", "lama"].weights == LAMA_FILE
    for r in rep.results:
        assert (
            len(r.per_scene) == 4 and r.load_s >= 0 and r.sample_s_per_image > 0 and r.truth_s_per_image > 0
        )
    # the weight-free defaults on the known-truth scenes: near-perfect masks, plausible fills
    assert by["segmenter", "classical"].median > 0.9 and by["segmenter", "classical"].share_ok >= 0.75
    assert all(0 <= v <= 1 for v in by["segmenter", "sam"].per_scene)
    for name in ("telea", "ns", "lama"):
        assert by["inpainter", name].median > 18, (name, by["inpainter", name].per_scene)
    # files: the grid has a column per segmenter mask and per inpainter background, a row per photo
    grid = Image.open(rep.preview)
    assert grid.size == (160 * (1 + 2 + 3), 18 + 160 * 2)
    data = json.loads(Path(rep.json_path).read_text())
    assert data["scenes"] == 4 and len(data["results"]) == 5
    assert "mask IoU median" in rep.format() and "hole PSNR median" in rep.format()


def test_psnr_tells_a_good_fill_from_a_bad_one(tmp_path_factory, tmp_path):
    """A LaMa double that paints holes magenta scores far below one that fills from context."""
    bad = weights_with(tmp_path_factory, tmp_path / "bad", LAMA_FILE)  # the magenta TinyLama
    good = tmp_path / "good"
    make_diffusion_lama(good / LAMA_FILE)
    kw = dict(device="cpu", photos=1, photo_px=48, scenes=3, scene_px=48)
    r_bad = next(r for r in check_backends(bad, tmp_path / "o1", **kw).results if r.name == "lama")
    r_good = next(r for r in check_backends(good, tmp_path / "o2", **kw).results if r.name == "lama")
    assert r_good.median > r_bad.median + 8, (r_good.per_scene, r_bad.per_scene)


def test_cli_check(tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["backends", "--check", "--weights", str(tiny_weights), "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--photos", "1", "--scenes", "2"]) == 0
    text = capsys.readouterr().out
    assert "segmenters (auto -> sam)" in text and "inpainters (auto -> lama)" in text
    assert (out / "backends_check.png").is_file() and (out / "backends_check.json").is_file()
    # a file under LaMa's name that is no TorchScript: reported with its error, the others still run
    (tiny_weights / LAMA_FILE).write_bytes(b"not a model, but not empty either")
    assert main([*argv, "--photos", "1", "--scenes", "2"]) == 1
    text = capsys.readouterr().out
    assert (
        "lama           FAILED: ForcompError: cannot load LaMa" in text and "telea          hole PSNR" in text
    )
