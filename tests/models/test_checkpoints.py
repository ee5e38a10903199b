"""The one checkpoint loader: unreadable files and weights that do not fit fail naming the file and why."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from forcomp.errors import ForcompError
from forcomp.models.checkpoints import (
    load_checkpoint,
    load_state_dict_file,
    load_state_dict_into,
    read_checkpoint,
)
from forcomp.models.classifiers import load_model


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_empty_file_names_the_file_and_says_empty(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ForcompError, match=rf"{path.name}: the file is empty"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("suffix", "why"), [(".pth", r"safely \(.*\)"), (".safetensors", "not a valid safetensors file")]
)
def test_garbage_file_names_the_file_and_the_problem(tmp_path: Path, suffix: str, why: str) -> None:
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"\x00\x01garbage, not a checkpoint" * 4)
    with pytest.raises(ForcompError, match=rf"cannot load weights .*{path.name}.*{why}") as e:
        load_checkpoint(path)
    assert "Traceback" not in str(e.value) and len(str(e.value).splitlines()) == 1


def test_safetensors_and_torch_files_give_the_same_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = nn.Linear(3, 2).state_dict()
    save_file(dict(sd), str(tmp_path / "a.safetensors"))
    torch.save({"model": sd, "args": argparse.Namespace(lr=0.1)}, tmp_path / "a.pth")
    for name in ("a.safetensors", "a.pth"):
        got = load_state_dict_file(tmp_path / name)
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    got, key = read_checkpoint(tmp_path / "a.pth")
    assert key == "model" and torch.equal(got["weight"], sd["weight"])


def test_a_non_state_dict_is_refused_naming_the_file(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ForcompError, match=r"list\.pth: it does not hold a state dict"):
        load_state_dict_file(tmp_path / "list.pth")


def test_wrong_shapes_name_the_keys_and_shapes(tmp_path: Path) -> None:
    sd = nn.Linear(3, 5).state_dict()
    sd["extra"] = torch.zeros(1)
    with pytest.raises(ForcompError) as e:
        load_state_dict_into(nn.Linear(3, 2), sd, path=tmp_path / "x.pth", what="a linear layer")
    msg = str(e.value)
    assert "x.pth do not fit a linear layer" in msg
    assert "weight: checkpoint (5, 3) vs model (2, 3)" in msg and "bias: checkpoint (5,) vs model (2,)" in msg
    assert "unexpected keys extra" in msg
    with pytest.raises(ForcompError, match="missing keys weight, bias"):
        load_state_dict_into(nn.Linear(3, 2), {"other": torch.zeros(1)}, path="y.pth", what="m")


def test_classifier_with_a_wrong_shape_names_the_mismatching_keys(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    sd = torchvision.models.squeezenet1_1(weights=None).state_dict()
    sd["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(sd, tmp_path / "squeezenet1_1.pth")
    with pytest.raises(ForcompError) as e:
        load_model("squeezenet1_1", weights_dir=tmp_path)
    msg = str(e.value)
    assert "squeezenet1_1.pth do not fit model 'squeezenet1_1'" in msg
    assert "features.0.weight: checkpoint (64, 3, 5, 5) vs model (64, 3, 3, 3)" in msg
    assert "Error(s) in loading state_dict" not in msg
