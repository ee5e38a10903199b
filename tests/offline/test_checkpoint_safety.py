"""Untrusted checkpoints: loading never runs code from the file, and a bad file fails naming itself.

Each poisoned file is a pickle whose ``__reduce__`` would create a marker file when unpickled.
Loading must fail with an error naming the file, and the marker must not exist afterwards.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import GDINO_DIR, SAM_FILE, SD_DIR, weights_with  # noqa: E402
from scenes import blob_folder  # noqa: E402

from forcomp.errors import ForcompError  # noqa: E402


class Poison:
    """Unpickling this calls ``open(marker, "w")``: the marker's existence proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _poison(path: Path, marker: Path, *, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"image_encoder.pos_embed": Poison(marker), "weight": Poison(marker)}
    if fmt == "torch":  # torch.save's zip container with a poisoned data.pkl
        torch.save(payload, path)
    else:  # a bare pickle stream
        path.write_bytes(pickle.dumps(payload))
    return path


def test_poison_works_when_unpickled_unsafely(tmp_path):
    """Guard for the tests below: the poison really would create the marker."""
    marker = tmp_path / "marker"
    path = _poison(tmp_path / "x.pth", marker, fmt="pickle")
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_sam_checkpoint(tmp_path, fmt):
    from forcomp.offline.segmenters.sam import build_sam_segmenter

    marker = tmp_path / "marker"
    _poison(tmp_path / "w" / SAM_FILE, marker, fmt=fmt)
    with pytest.raises(ForcompError, match=r"sam_vit_b_01ec64\.pth.*weights_only=True"):
        build_sam_segmenter(weights_dir=tmp_path / "w", device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_classifier_weights(tmp_path, fmt):
    from forcomp.offline.scoring import build_scorer

    marker = tmp_path / "marker"
    _poison(tmp_path / "w" / "squeezenet1_1.pth", marker, fmt=fmt)
    with pytest.raises(ForcompError, match=r"squeezenet1_1\.pth"):
        build_scorer("squeezenet1_1", weights_dir=tmp_path / "w", device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_lama_torchscript(tmp_path, fmt):
    from forcomp.offline.inpainters.lama import build_lama_inpainter

    marker = tmp_path / "marker"
    _poison(tmp_path / "w" / "big-lama.pt", marker, fmt=fmt)
    with pytest.raises(ForcompError, match=r"big-lama\.pt: it is not a TorchScript file"):
        build_lama_inpainter(weights_dir=tmp_path / "w", device="cpu")
    assert not marker.exists()


def test_detector_directory_with_poisoned_weights(tmp_path_factory, tmp_path):
    from forcomp.offline.segmenters.grounded import build_grounded_segmenter

    shared = weights_with(tmp_path_factory, tmp_path / "shared", GDINO_DIR, SAM_FILE)
    w = tmp_path / "w"
    det = w / GDINO_DIR
    shutil.copytree(shared / GDINO_DIR, det, ignore=shutil.ignore_patterns("*.safetensors"))
    (w / SAM_FILE).symlink_to((shared / SAM_FILE).resolve())
    marker = tmp_path / "marker"
    _poison(det / "pytorch_model.bin", marker, fmt="torch")
    with pytest.raises(ForcompError, match=r"cannot load the detector from .*grounding-dino-tiny"):
        build_grounded_segmenter(weights_dir=w, device="cpu")
    assert not marker.exists()


def test_diffusers_directory_with_poisoned_weights(tmp_path_factory, tmp_path):
    from forcomp.offline.inpainters.diffusion import build_sd_inpainter

    shared = weights_with(tmp_path_factory, tmp_path / "shared", SD_DIR)
    w = tmp_path / "w"
    shutil.copytree((shared / SD_DIR).resolve(), w / SD_DIR)
    unet = w / SD_DIR / "unet"
    for f in unet.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "marker"
    _poison(unet / "diffusion_pytorch_model.bin", marker, fmt="torch")
    # refused before loading: forcomp reads safetensors only, and says which component lacks them
    with pytest.raises(
        ForcompError, match=r"stable-diffusion-2-inpainting/unet has no \.safetensors weights"
    ):
        build_sd_inpainter(weights_dir=w, device="cpu")
    assert not marker.exists()


def test_build_fails_before_any_work(tmp_path):
    """A poisoned checkpoint stops `build_cache` before an image is written, naming the file."""
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    marker = tmp_path / "marker"
    _poison(tmp_path / "w" / SAM_FILE, marker, fmt="torch")
    src = blob_folder(tmp_path / "src", per_class=1)
    cfg = BuildConfig(
        split="val", segmenter="sam", inpainter="telea", weights_dir=str(tmp_path / "w"), device="cpu"
    )
    with pytest.raises(ForcompError, match=r"sam_vit_b_01ec64\.pth"):
        build_cache(src, tmp_path / "cache", cfg)
    assert not marker.exists()
    assert not list((tmp_path / "cache").rglob("*.WEBP")) and not list((tmp_path / "cache").rglob("*.JPEG"))
