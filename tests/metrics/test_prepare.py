"""Before the first batch (``prepare.py``): the conditions' datasets, the item subset, device and dtype.

Evaluation conditions use the whole background on every split, not the training crop: ForComp's
train split fuses RandomResizedCrop + flip by default (ForNet's training recipe); an evaluation on a
train split (e.g. to compare train and val biases) must still place the object on the whole
background, or the nonant and size conditions would be cut and moved by the crop.
"""

from __future__ import annotations

from pathlib import Path

import biased_models
import pytest
import torch
from colour_cache import make_colour_cache
from torch import nn

from forcomp.errors import ForcompError
from forcomp.metrics.bias import evaluate, run_evaluation
from forcomp.metrics.grids import EvaluationGrid
from forcomp.metrics.options import EvaluateOptions
from forcomp.metrics.prepare import make_condition_dataset, model_device, model_dtype, prepare, subset_indices
from forcomp.models.devices import DeviceError


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_cache(tmp_path_factory.mktemp("train_cache"), split="train")


def test_every_condition_on_the_train_split_has_no_crop_and_no_flip(train_cache: Path) -> None:
    for cond in EvaluationGrid.default():
        ds = make_condition_dataset(train_cache, "train", 48, cond, seed=0)
        assert ds.config.crop_scale is None and ds.config.hflip_prob == 0, cond.name
        img, _, mask = ds[0]
        # the object keeps its whole pasted area inside the canvas (a crop would cut or magnify it)
        assert img.shape[-2:] == mask.shape[-2:] == (48, 48)


def test_the_crop_cannot_be_smuggled_in_through_recombine(train_cache: Path) -> None:
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3))
    for key, value in (("crop_scale", (0.08, 1.0)), ("hflip_prob", 0.5)):
        with pytest.raises(ValueError, match=key):
            run_evaluation(model, train_cache, split="train", recombine={key: value}, limit=4)


def test_subset_is_seeded_sorted_and_none_for_all_items() -> None:
    assert subset_indices(10, None, 0) is None and subset_indices(10, 10, 0) is None
    assert subset_indices(10, 11, 0) is None
    for seed in (0, 5):
        want = sorted(torch.randperm(10, generator=torch.Generator().manual_seed(seed))[:4].tolist())
        assert subset_indices(10, 4, seed) == want
    assert subset_indices(10, 4, 0) != subset_indices(10, 4, 5) and subset_indices(10, 9, 1) != list(range(9))


def test_model_device_and_dtype() -> None:
    empty = nn.Identity()
    assert model_device(empty) == torch.device("cpu") and model_dtype(empty) == torch.float32
    buffers_only = nn.Module()
    buffers_only.register_buffer("count", torch.zeros(1, dtype=torch.long))
    buffers_only.register_buffer("scale", torch.zeros(1, dtype=torch.float64))
    assert model_dtype(buffers_only) == torch.float64
    half = nn.Linear(2, 2).to(torch.bfloat16)
    assert model_dtype(half) == torch.bfloat16 and model_device(half) == torch.device("cpu")
    ints = nn.Module()
    ints.register_buffer("count", torch.zeros(1, dtype=torch.long))
    assert model_dtype(ints) == torch.float32 and model_device(ints) == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cdua"])
def test_an_unavailable_device_is_refused_before_any_item_is_read(
    train_cache: Path, device: str, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    opened: list[object] = []
    monkeypatch.setattr("forcomp.metrics.prepare.make_condition_dataset", lambda *a, **k: opened.append(a))
    with pytest.raises(DeviceError) as e:
        evaluate(biased_models.invariant(), train_cache, split="train", device=device)
    assert isinstance(e.value, ForcompError) and "\n" not in str(e.value) and opened == []
    assert "cpu" in str(e.value)  # names what is available


def test_prepare_places_the_model_and_picks_the_items(train_cache: Path) -> None:
    model = biased_models.invariant().train()
    run = prepare(model, train_cache, EvaluateOptions(split="train", size=48, limit=5, seed=2, device="cpu"))
    assert run.device == torch.device("cpu") and run.was_training and not model.training
    assert run.indices == subset_indices(len(run.first), 5, 2) and run.n_images == 5
    assert run.classes == list(run.first.classes) and run.size == 48 and run.norm is not None
    x = torch.full((1, 3, 2, 2), 0.5)
    mean, std = torch.tensor(run.norm[0]).view(1, 3, 1, 1), torch.tensor(run.norm[1]).view(1, 3, 1, 1)
    assert torch.allclose(run.preprocess(x), (x - mean) / std)
    assert run.dataset(run.grid.background[0], EvaluateOptions()) is run.first
