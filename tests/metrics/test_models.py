"""Model SPEC loading: factories, torchvision and timm names with local weights, errors, normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from forcomp.errors import ForcompError, WeightsNotFoundError
from forcomp.metrics.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpecError,
    imagenet_class_indices,
    load_model,
    resolve_normalize,
    wrap_module,
)

HERE = Path(__file__).parent


def test_file_factory_spec() -> None:
    loaded = load_model(f"{HERE / 'biased_models.py'}:center")
    assert loaded.source == "factory" and isinstance(loaded.model, nn.Module)
    assert not loaded.model.training
    assert loaded.mean is None  # unknown → "auto" falls back to ImageNet
    assert resolve_normalize("auto", loaded) == (IMAGENET_MEAN, IMAGENET_STD)


def test_module_factory_spec() -> None:
    loaded = load_model("biased_models:border")  # tests/metrics is on sys.path (conftest)
    assert loaded.source == "factory"
    assert loaded.identity()["class"].endswith("ColourWindowNet")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("does/not/exist.py:factory", "does not exist"),
        ("biased_models:nope", "no callable 'nope'"),
        ("biased_models:OBJECT_RGB", "no callable"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("definitely_not_a_model_name", "unknown model spec"),
        ("", "empty"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match) as e:
        load_model(spec)
    assert isinstance(e.value, ForcompError)


def test_factory_must_return_module(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def factory():\n    return 42\n")
    with pytest.raises(ModelSpecError, match="not an nn.Module"):
        load_model(f"{f}:factory")


def test_torchvision_missing_weights_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"squeezenet1_1\.pth") as e:
        load_model("squeezenet1_1", weights_dir=tmp_path)
    assert str(tmp_path) in str(e.value)


def test_torchvision_weights_and_own_normalisation(tmp_path: Path) -> None:
    from torchvision import models

    ref = models.squeezenet1_1(num_classes=4)  # a fine-tuned head: 4 classes
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "squeezenet1_1.pth")
    loaded = load_model("torchvision/squeezenet1_1", weights_dir=tmp_path)
    assert loaded.source == "torchvision" and loaded.weights == str(tmp_path / "squeezenet1_1.pth")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), ref.eval()(x))
    assert loaded.mean == IMAGENET_MEAN and loaded.input_size == 224


def test_timm_weights_and_own_normalisation(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    ref = timm.create_model("test_vit", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "test_vit.pth")
    loaded = load_model("test_vit", weights_dir=tmp_path)
    assert loaded.source == "timm"
    assert resolve_normalize("auto", loaded) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert resolve_normalize("imagenet", loaded) == (IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(WeightsNotFoundError):
        load_model("timm/test_vit", weights_dir=tmp_path / "empty")


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    torch.save({"foo": torch.zeros(3)}, tmp_path / "squeezenet1_1.pth")
    with pytest.raises(ForcompError, match="do not fit"):
        load_model("squeezenet1_1", weights_dir=tmp_path)


def test_resolve_normalize_validation() -> None:
    assert resolve_normalize(None) is None
    assert resolve_normalize("none") is None
    assert resolve_normalize(([0.1, 0.2, 0.3], [1, 1, 1])) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    for bad in ("zscore", ([0, 0], [1, 1]), ([0, 0, 0], [1, 0, 1]), 3):
        with pytest.raises(ValueError, match="normalize"):
            resolve_normalize(bad)  # type: ignore[arg-type]


def test_wrap_module_reads_pretrained_cfg() -> None:
    m = nn.Linear(2, 2)
    m.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "input_size": (3, 96, 96)}
    w = wrap_module(m)
    assert w.mean == (0.5, 0.5, 0.5) and w.input_size == 96


def test_imagenet_class_indices() -> None:
    pytest.importorskip("timm")
    assert imagenet_class_indices(["n01440764", "n01443537"]) == [0, 1]
    assert imagenet_class_indices(["n00000001"]) is None
    assert imagenet_class_indices(["cat"]) is None
