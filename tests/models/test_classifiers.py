"""Model SPEC loading: factories, torchvision and timm names with local weights, errors, normalisation."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from forcomp.errors import ForcompError, WeightsNotFoundError
from forcomp.models.classifiers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpecError,
    load_model,
    resolve_normalize,
    wrap_module,
)

HERE = Path(__file__).parents[1] / "metrics"  # biased_models.py: factories shared with the metrics tests


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


def test_model_states_its_own_input_size_and_fixed_sizes_are_enforced() -> None:
    timm = pytest.importorskip("timm")
    from torchvision.models import VisionTransformer

    from forcomp.models.classifiers import InputSizeError

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


# ---------------------------------------------------------------- training checkpoints


def _trained_squeezenet(num_classes: int = 4) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """A squeezenet after one SGD step, with the optimizer and scheduler the reference script uses."""
    from torchvision import models

    torch.manual_seed(0)
    model = models.squeezenet1_1(num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    opt.step()
    sched.step()
    return model.eval(), opt, sched


def _reference_args() -> argparse.Namespace:
    """As torchvision's references/classification/train.py parses them (a subset of the real flags)."""
    return argparse.Namespace(
        data_path="/datasets01/imagenet_full_size/061417/",
        model="squeezenet1_1",
        device="cuda",
        batch_size=32,
        epochs=90,
        workers=16,
        opt="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_scheduler="steplr",
        label_smoothing=0.0,
        mixup_alpha=0.0,
        model_ema=True,
        model_ema_decay=0.99998,
        output_dir=".",
        resume="",
        start_epoch=0,
        amp=False,
        world_size=1,
        dist_url="env://",
        val_resize_size=256,
        train_crop_size=224,
        ra_sampler=False,
        weights=None,
    )


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    """Same weights (and buffers): the same function."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_reference_checkpoint_loads_with_weights_only(tmp_path: Path, caplog) -> None:
    from torch.optim.swa_utils import AveragedModel

    model, opt, sched = _trained_squeezenet()
    ema = AveragedModel(model)  # torchvision's ExponentialMovingAverage is an AveragedModel
    with torch.no_grad():  # EMA weights that differ from the model's
        for p in ema.module.parameters():
            p.add_(torch.randn_like(p))
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "epoch": 7,
        "args": _reference_args(),
        "model_ema": ema.state_dict(),  # keys "module.*" plus "n_averaged"
    }
    torch.save(checkpoint, tmp_path / "squeezenet1_1.pth")
    with caplog.at_level(logging.INFO, logger="forcomp.models"):
        loaded = load_model("squeezenet1_1", weights_dir=tmp_path)
    assert loaded.checkpoint_key == "model" and loaded.identity()["checkpoint_key"] == "model"
    assert "using the weights under 'model'" in caplog.text
    assert _same_outputs(loaded.model, model)
    ema_loaded = load_model("squeezenet1_1", weights_dir=tmp_path, checkpoint_key="model_ema")
    assert ema_loaded.checkpoint_key == "model_ema"
    assert _same_outputs(ema_loaded.model, ema.module) and not _same_outputs(ema_loaded.model, model)
    with pytest.raises(ForcompError, match=r"no entry 'nope'.*model, optimizer, lr_scheduler, epoch, args"):
        load_model("squeezenet1_1", weights_dir=tmp_path, checkpoint_key="nope")
    with pytest.raises(ForcompError, match="'optimizer' of .* does not hold a state dict"):
        load_model("squeezenet1_1", weights_dir=tmp_path, checkpoint_key="optimizer")
    with pytest.raises(ValueError, match="factory"):
        load_model(f"{HERE / 'biased_models.py'}:center", checkpoint_key="model")


def test_ddp_prefix_is_stripped(tmp_path: Path) -> None:
    model, _, _ = _trained_squeezenet()
    ddp_sd = {f"module.{k}": v for k, v in model.state_dict().items()}  # DistributedDataParallel's keys
    torch.save({"model": ddp_sd, "epoch": 1, "args": _reference_args()}, tmp_path / "squeezenet1_1.pth")
    assert _same_outputs(load_model("squeezenet1_1", weights_dir=tmp_path).model, model)


def test_timm_train_checkpoint_loads_and_ema_on_request(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from timm.utils import CheckpointSaver, ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=4)
    ema = ModelEmaV3(model, decay=0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 160, 160)).sum().backward()
    opt.step()
    ema.update(model)  # now EMA weights differ from the model's
    args = argparse.Namespace(model="test_vit", num_classes=4, lr=1e-3, epochs=1, model_ema=True, amp=False)
    saver = CheckpointSaver(model, opt, args=args, model_ema=ema, checkpoint_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=0.5)  # timm's train.py writes last.pth.tar this way
    raw = torch.load(tmp_path / "last.pth.tar", map_location="cpu", weights_only=False)
    assert {"state_dict", "state_dict_ema", "args", "arch", "optimizer"} <= set(raw)  # the real shape
    (tmp_path / "last.pth.tar").rename(tmp_path / "test_vit.pth")

    loaded = load_model("timm/test_vit", weights_dir=tmp_path)
    assert loaded.checkpoint_key == "state_dict"
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model.eval()(x))
        ema_loaded = load_model("timm/test_vit", weights_dir=tmp_path, checkpoint_key="state_dict_ema")
        assert torch.allclose(ema_loaded.model(x), ema.module.eval()(x))
        assert not torch.allclose(ema_loaded.model(x), model(x))


def test_checkpoint_without_known_key_names_its_entries(tmp_path: Path) -> None:
    model, _, _ = _trained_squeezenet()
    torch.save({"model_ema": model.state_dict(), "epoch": 3}, tmp_path / "squeezenet1_1.pth")
    with pytest.raises(ForcompError, match=r"entries: model_ema, epoch.*--checkpoint-key model_ema"):
        load_model("squeezenet1_1", weights_dir=tmp_path)
    assert load_model("squeezenet1_1", weights_dir=tmp_path, checkpoint_key="model_ema").checkpoint_key


class _Poison:
    """Unpickling this would run code that writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("where", ["entry", "inside_args"])
def test_poisoned_checkpoint_runs_nothing(tmp_path: Path, where: str) -> None:
    model, _, _ = _trained_squeezenet()
    marker = tmp_path / "marker"
    args = _reference_args()
    checkpoint = {"model": model.state_dict(), "args": args, "epoch": 1}
    if where == "entry":
        checkpoint["evil"] = _Poison(marker)
    else:
        args.resume = _Poison(marker)  # a Namespace is allowed; what it holds is not
    torch.save(checkpoint, tmp_path / "squeezenet1_1.pth")
    with pytest.raises(ForcompError, match=r"cannot load weights .* safely.*weights_only") as e:
        load_model("squeezenet1_1", weights_dir=tmp_path)
    assert "exec" in str(e.value)  # names what was refused
    assert not marker.exists()
