"""Candidate scorers: the weight-free area prior and the ForAug-style classifier scorer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import SAM_FILE, weights_with  # noqa: E402
from scenes import blob_folder  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.scoring import (  # noqa: E402
    CandidateScorer,
    ClassifierScorer,
    SegmenterScoreScorer,
    area_prior,
    build_scorer,
)
from forcomp.offline.segmenters.base import MaskCandidate  # noqa: E402

FACTORY = f"{Path(__file__).parent / '_tiny_models.py'}:red_vs_green"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _scene() -> tuple[np.ndarray, list[MaskCandidate]]:
    """Green ground, a red box; candidates: a green patch, the red box, nearly everything."""
    img = np.zeros((60, 80, 3), np.uint8)
    img[:] = (40, 200, 40)
    img[20:40, 30:55] = (220, 30, 30)
    red = np.zeros((60, 80), bool)
    red[20:40, 30:55] = True
    green = np.zeros((60, 80), bool)
    green[2:22, 2:27] = True
    almost_all = np.ones((60, 80), bool)
    almost_all[:2] = False
    return img, [
        MaskCandidate(green, 0.9, "a"),
        MaskCandidate(red, 0.8, "b"),
        MaskCandidate(almost_all, 0.95, "c"),
    ]


def test_area_prior():
    assert area_prior(0.0) == 0 and area_prior(1.0) == 0
    assert area_prior(0.3) == 1 == area_prior(0.05) == area_prior(0.7)
    assert area_prior(0.025) == pytest.approx(0.5) and area_prior(0.85) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="area_range"):
        SegmenterScoreScorer(area_range=(0.8, 0.2))


def test_sam_score_balances_confidence_and_area():
    img, cands = _scene()
    scorer = build_scorer("sam-score", weights_dir=Path("unused"), device="cpu")
    assert isinstance(scorer, CandidateScorer) and scorer.name == "sam-score"
    # the near-full mask has the best SAM score but an implausible area; the green patch wins
    assert scorer.select([img], [cands], ["n0"], [0]) == [0]
    assert scorer.select([img], [cands[1:2]], ["n0"], [0]) == [0]  # one candidate: nothing to score
    no_prior = SegmenterScoreScorer(area_weight=0.0)
    assert no_prior.select([img], [cands], ["n0"], [0]) == [2]


@pytest.mark.parametrize("device", DEVICES)
def test_classifier_scorer_prefers_the_object(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    img, cands = _scene()
    scorer = build_scorer(FACTORY, weights_dir=Path("unused"), device=device, bg_fill="mean")
    assert isinstance(scorer, ClassifierScorer)
    # class 0 = "red thing": the red box pasted on grey is red, and removing it leaves green
    assert scorer.select([img, img], [cands, cands[:1]], ["n0", "n0"], [0, 0]) == [1, 0]
    s = scorer.scores(img, cands, "n0", 0)
    assert s[1] > s[0] and s[1] > s[2]
    model = scorer.models[0][0]
    assert model.inputs_seen == 2 * len(cands) * 4  # 3 grey pastes + 1 background per candidate, twice
    telea = build_scorer(FACTORY, weights_dir=Path("unused"), device=device)
    assert telea.select([img], [cands], ["n0"], [0]) == [1]


def test_ensemble_and_torchvision_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "squeezenet1_1.pth")
    scorer = build_scorer(f"squeezenet1_1,{FACTORY}", weights_dir=tmp_path, device="cpu", fg_greys=(0.5,))
    assert len(scorer.models) == 2
    assert scorer.models[0][1] == 224  # torchvision's input size for the weights
    # 1000 outputs and an ImageNet-1k wnid: the wnid's ImageNet index, not the dataset label
    assert scorer._class_idx("n01443537", 0, 1000) == 1
    assert scorer._class_idx("n99999999", 7, 1000) == 7
    with pytest.raises(ForcompError, match="outside the classifier's 2 outputs"):
        scorer._class_idx("n01443537", 5, 2)
    img, cands = _scene()
    assert scorer.select([img], [cands], ["n01443537"], [0])[0] in (0, 1, 2)


def test_missing_classifier_weights_names_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "resnet50.pth").replace(".", r"\.")):
        build_scorer("resnet50", weights_dir=tmp_path, device="cpu")


def test_bad_scorer_options():
    with pytest.raises(ValueError, match="empty"):
        build_scorer(" ", weights_dir=Path("."), device="cpu")
    with pytest.raises(ValueError, match="bg_fill"):
        build_scorer(FACTORY, weights_dir=Path("."), device="cpu", bg_fill="lama")


@pytest.mark.slow
def test_build_with_classifier_scorer(tmp_path_factory, tmp_path):
    """The pipeline hands SAM's several candidates to the scorer, which chooses one per image."""
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    src = blob_folder(tmp_path / "src", per_class=1)
    cfg = BuildConfig(
        split="val",
        segmenter="sam",
        inpainter="telea",
        weights_dir=str(w),
        device="cpu",
        scorer=FACTORY,
        scorer_options={"class_index": "label"},
    )
    summary = build_cache(src, tmp_path / "cache", cfg)
    assert summary.exit_code == 0, summary.format()
    assert summary.ok + summary.no_object == 2


def test_build_writes_the_candidate_the_scorer_chose(tmp_path_factory, tmp_path, monkeypatch):
    """The written foreground and index record are the scorer's pick, not SAM's best-scored mask:
    the scorer is made to pick SAM's *lowest*-scored candidate, which the default rule never takes."""
    from forcomp.cache.index import read_index
    from forcomp.cache.layout import CacheLayout
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    picked: dict[str, MaskCandidate] = {}
    real_select = ClassifierScorer.select

    def pick_lowest(self, images, candidates, classes, labels):
        real_select(self, images, candidates, classes, labels)  # the real scorer still runs
        idx = []
        for img, cands in zip(images, candidates, strict=True):
            i = int(np.argmin([c.score for c in cands]))
            picked[img.tobytes()[:64].hex() + str(img.shape)] = cands[i]
            idx.append(i)
        return idx

    monkeypatch.setattr(ClassifierScorer, "select", pick_lowest)
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    src = blob_folder(tmp_path / "src", per_class=1)
    cfg = BuildConfig(
        split="val", segmenter="sam", inpainter="telea", weights_dir=str(w), device="cpu",
        scorer=FACTORY, scorer_options={"class_index": "label"},
    )  # fmt: skip
    summary = build_cache(src, tmp_path / "cache", cfg)
    assert summary.exit_code == 0, summary.format()
    assert picked, "the scorer never saw several candidates"
    records = [r for r in read_index(CacheLayout(tmp_path / "cache", "val")).values() if r.status == "ok"]
    assert records
    chosen_scores = sorted(round(c.score, 6) for c in picked.values())
    for r in records:
        assert round(r.score, 6) in chosen_scores  # the lowest-scored candidate's, not the best one's
        cand = next(c for c in picked.values() if round(c.score, 6) == round(r.score, 6))
        ys, xs = np.nonzero(cand.mask)
        assert tuple(r.bbox) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
