"""LaMa inpainter: TorchScript loading, size-grouped batching, only the hole changes, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import LAMA_FILE, make_diffusion_lama, make_lama  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.inpainters import INPAINTERS  # noqa: E402
from forcomp.offline.inpainters.lama import LamaInpainter, build_lama_inpainter, group_by_size  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
MAGENTA = np.array([255, 0, 255])


def _batch(sizes=((48, 64), (64, 40), (37, 53), (48, 64))):
    rng = np.random.default_rng(0)
    imgs, masks = [], []
    for h, w in sizes:
        imgs.append(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        m = np.zeros((h, w), bool)
        m[h // 4 : h // 2, w // 3 : 2 * w // 3] = True
        masks.append(m)
    return imgs, masks


@pytest.fixture
def lama_dir(tmp_path) -> Path:
    make_lama(tmp_path / LAMA_FILE)
    return tmp_path


@pytest.mark.parametrize("device", DEVICES)
def test_fills_only_the_hole(lama_dir, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    inp = INPAINTERS.build("lama", weights_dir=lama_dir, device=device)
    assert isinstance(inp, LamaInpainter) and inp.weights_id == LAMA_FILE and inp.device.type == device
    imgs, masks = _batch()
    before = [im.copy() for im in imgs]
    out = inp.inpaint(imgs, masks)
    for im, b, m, o in zip(imgs, before, masks, out, strict=True):
        assert np.array_equal(im, b), "inputs are not modified"
        assert o.shape == im.shape and o.dtype == np.uint8
        assert np.array_equal(o[~m], im[~m])
        assert (o[m] == MAGENTA).all(), "the TorchScript model ran on the hole"


def test_batches_grouped_by_size(lama_dir):
    inp = build_lama_inpainter(weights_dir=lama_dir, device="cpu", max_batch=8)
    assert inp.model.calls == 1  # the signature probe at load time
    imgs, masks = _batch(((48, 64), (48, 64), (47, 61), (48, 64)))
    inp.inpaint(imgs, masks)
    # similar sizes: one forward pass over a padded batch, H and W multiples of 8
    assert (inp.model.calls, inp.model.last_batch, inp.model.last_h, inp.model.last_w) == (2, 4, 48, 64)
    inp2 = build_lama_inpainter(weights_dir=lama_dir, device="cpu", max_batch=3, probe=False)
    inp2.inpaint(imgs, masks)
    assert inp2.model.calls == 2


def test_group_by_size():
    sizes = [(375, 500), (500, 375), (375, 500), (333, 500), (500, 333), (64, 64)]
    groups = group_by_size(sizes, max_waste=0.25, max_batch=8)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        H, W = max(sizes[i][0] for i in g), max(sizes[i][1] for i in g)
        assert sum(sizes[i][0] * sizes[i][1] for i in g) >= 0.75 * H * W * len(g)
    assert any({0, 2, 3} <= set(g) for g in groups), "landscapes batch together"
    assert all(len(g) <= 2 for g in group_by_size(sizes, max_waste=0.25, max_batch=2))


def test_work_px_fills_at_lower_resolution(lama_dir):
    inp = build_lama_inpainter(weights_dir=lama_dir, device="cpu", work_px=32)
    imgs, masks = _batch(((96, 128),))
    out = inp.inpaint(imgs, masks)
    assert inp.model.last_h * inp.model.last_w <= 32 * 32
    assert out[0].shape == imgs[0].shape and np.array_equal(out[0][~masks[0]], imgs[0][~masks[0]])


def test_missing_file_names_path_and_source(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        build_lama_inpainter(weights_dir=tmp_path, device="cpu")
    assert str(tmp_path / LAMA_FILE) in str(e.value) and "big-lama.pt" in str(e.value)
    assert "github.com" in str(e.value)


def test_not_torchscript_names_file(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / LAMA_FILE)
    with pytest.raises(
        ForcompError, match=r"cannot load LaMa from .*big-lama\.pt: it is not a TorchScript file"
    ):
        build_lama_inpainter(weights_dir=tmp_path, device="cpu")


class _WrongSignature(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


class _WrongOutput(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask


@pytest.mark.parametrize("module", [_WrongSignature, _WrongOutput])
def test_wrong_torchscript_fails_before_work(tmp_path, module):
    torch.jit.save(torch.jit.script(module()), str(tmp_path / LAMA_FILE))
    with pytest.raises(ForcompError, match=r"big-lama\.pt does not behave like LaMa"):
        build_lama_inpainter(weights_dir=tmp_path, device="cpu")


def test_bad_options(lama_dir):
    with pytest.raises(ValueError, match="max_batch"):
        build_lama_inpainter(weights_dir=lama_dir, device="cpu", max_batch=0)
    with pytest.raises(ValueError, match="checkpoint"):
        build_lama_inpainter(weights_dir=lama_dir, device="cpu", checkpoint="../big-lama.pt")


# ----------------------------------------------------------------------------- issue 13 defects


def _edge_object_scene(h: int, w: int, obj_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Green ground with a red object on the bottom edge; the mask is the object."""
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = (40, 160, 60)
    m = np.zeros((h, w), bool)
    m[h - obj_rows :, w // 4 : 3 * w // 4] = True
    img[m] = (230, 20, 20)
    return img, m


@pytest.mark.parametrize("device", DEVICES)
def test_object_does_not_leak_through_padding(tmp_path, device):
    """A hole on the bottom edge of an image padded to its batch's height must be filled from the
    background only: the reflected padding holds the mirrored object and must count as hole too."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    make_diffusion_lama(tmp_path / LAMA_FILE)
    inp = build_lama_inpainter(weights_dir=tmp_path, device=device, max_batch=2)
    small, small_mask = _edge_object_scene(40, 64, 12)
    tall, tall_mask = _edge_object_scene(56, 64, 4)
    # 40x64 and 56x64 group together (86 % of the padded area is image): 16 mirrored rows
    assert group_by_size([(40, 64), (56, 64)], max_waste=0.25, max_batch=2) == [[0, 1]]
    out = inp.inpaint([small, tall], [small_mask, tall_mask])
    fill = out[0][small_mask].astype(float)
    alone = inp.inpaint([small], [small_mask])[0][small_mask].astype(float)
    # the fill is background green, as when the image runs alone (no padding rows below it)
    assert fill[:, 0].max() < 60, f"red of the object leaked into its fill (max R {fill[:, 0].max()})"
    assert np.abs(fill - alone).max() <= 2
    assert np.abs(fill.mean(0) - (40, 160, 60)).max() < 3


class _FixedShape(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # a constant baked in at export time for batch 1 at 16x16, as a traced export can hold
        return image * (1 - mask) + torch.full((1, 3, 16, 16), 0.5) * mask


def test_probe_rejects_a_fixed_shape_export(tmp_path):
    ex = (torch.zeros(1, 3, 16, 16), torch.zeros(1, 1, 16, 16))
    torch.jit.save(torch.jit.trace(_FixedShape(), ex), str(tmp_path / LAMA_FILE))
    with pytest.raises(
        ForcompError, match=r"does not behave like LaMa: .*\(2, 3, 24, 40\).*fixed input shapes"
    ):
        build_lama_inpainter(weights_dir=tmp_path, device="cpu")


def _jit_flags() -> tuple[bool, bool]:
    prof = torch._C._jit_set_profiling_executor(True)
    torch._C._jit_set_profiling_executor(prof)  # read without changing it
    return prof, torch._C._get_graph_executor_optimize()


@pytest.mark.parametrize("initial", [(True, True), (False, True), (True, False)])
def test_plain_jit_execution_is_scoped(tmp_path, monkeypatch, initial):
    """The model runs with the profiling executor and graph optimisation off; both are restored."""
    make_diffusion_lama(tmp_path / LAMA_FILE)
    old = _jit_flags()
    try:
        torch._C._jit_set_profiling_executor(initial[0])
        torch._C._set_graph_executor_optimize(initial[1])
        inp = build_lama_inpainter(weights_dir=tmp_path, device="cpu", max_batch=4)
        assert _jit_flags() == initial, "loading restores the flags"
        seen: list[tuple[bool, bool]] = []
        model = inp.model

        def spy(image, mask):
            seen.append(_jit_flags())
            return model(image, mask)

        monkeypatch.setattr(inp, "model", spy)
        imgs, masks = _batch()
        out = inp.inpaint(imgs, masks)
        assert seen and all(s == (False, False) for s in seen)
        assert _jit_flags() == initial, "the process-wide flags are restored after the call"
        for im, m, o in zip(imgs, masks, out, strict=True):
            assert np.array_equal(o[~m], im[~m]) and not np.array_equal(o[m], im[m])

        def boom(image, mask):
            raise RuntimeError("model failed")

        monkeypatch.setattr(inp, "model", boom)
        with pytest.raises(RuntimeError, match="model failed"):
            inp.inpaint(imgs, masks)
        assert _jit_flags() == initial, "restored on error too"
    finally:
        torch._C._jit_set_profiling_executor(old[0])
        torch._C._set_graph_executor_optimize(old[1])
