"""Evaluation conditions use the whole background on every split, not the training crop.

ForComp's train split fuses RandomResizedCrop + flip by default (ForNet's training recipe); an
evaluation on a train split (e.g. to compare train and val biases) must still place the object
on the whole background, or the nonant and size conditions would be cut and moved by the crop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from colour_cache import make_colour_cache

from forcomp.metrics.bias import _make_dataset, run_evaluation
from forcomp.metrics.grids import EvaluationGrid


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_cache(tmp_path_factory.mktemp("train_cache"), split="train")


def test_every_condition_on_the_train_split_has_no_crop_and_no_flip(train_cache: Path) -> None:
    for cond in EvaluationGrid.default():
        ds = _make_dataset(train_cache, "train", 48, cond, seed=0)
        assert ds.config.crop_scale is None and ds.config.hflip_prob == 0, cond.name
        img, _, mask = ds[0]
        # the object keeps its whole pasted area inside the canvas (a crop would cut or magnify it)
        assert img.shape[-2:] == mask.shape[-2:] == (48, 48)


def test_the_crop_cannot_be_smuggled_in_through_recombine(train_cache: Path) -> None:
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3))
    for key, value in (("crop_scale", (0.08, 1.0)), ("hflip_prob", 0.5)):
        with pytest.raises(ValueError, match=key):
            run_evaluation(model, train_cache, split="train", recombine={key: value}, limit=4)
