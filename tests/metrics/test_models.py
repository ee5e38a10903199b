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


def test_model_states_its_own_input_size_and_fixed_sizes_are_enforced() -> None:
    timm = pytest.importorskip("timm")
    from torchvision.models import VisionTransformer

    from forcomp.metrics.models import InputSizeError

    fixed = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1, embed_dim=16, num_heads=1
    )
    w = wrap_module(fixed)
    assert fixed.pretrained_cfg["input_size"][-1] == 224  # the config describes other weights
    assert w.input_size == 64 and w.fixed_size == (64, 64) and w.default_size() == 64
    w.check_size(64)
    w.check_size((64, 64))
    with pytest.raises(InputSizeError, match=r"only accepts 64 px.*--size 64") as e:
        w.check_size(96)
    assert isinstance(e.value, ForcompError)
    dynamic = wrap_module(timm.create_model("test_vit", pretrained=False, img_size=64))
    assert dynamic.input_size == 64 and dynamic.fixed_size is None  # dynamic_img_size: any size works
    dynamic.check_size(96)
    tv = wrap_module(VisionTransformer(32, 8, 1, 2, 16, 32, num_classes=3))
    assert tv.fixed_size == (32, 32) and tv.default_size() == 32
    assert (
        wrap_module(nn.Linear(2, 2)).default_size() == 224 and wrap_module(nn.Linear(2, 2)).fixed_size is None
    )
