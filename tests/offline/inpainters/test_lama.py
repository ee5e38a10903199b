"""LaMa inpainter: TorchScript loading, size-grouped batching, only the hole changes, errors.

Its pre/post-processing is pinned value by value: what the model is given (the exact image/255 and
mask, padded by reflection or replication, both the same way), how sizes are grouped and padded,
how the output is rounded, clamped and cropped, the work_px downscale (every hole pixel stays a
hole), the load-time probe and every error message. The doubles are TorchScript modules with
big-lama's call signature: :class:`DiffusionLama` fills holes from the known context (so what is
offered as context is measurable), :class:`_Recorder` keeps the tensors it was called with.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]))  # _tiny_models
from _tiny_models import LAMA_FILE, DiffusionLama, make_diffusion_lama, make_lama  # noqa: E402
from scenes import noise_with_holes  # noqa: E402

from forcomp.errors import ForcompError, WeightsNotFoundError  # noqa: E402
from forcomp.offline.inpainters import INPAINTERS  # noqa: E402
from forcomp.offline.inpainters import lama as lama_mod  # noqa: E402
from forcomp.offline.inpainters.lama import (  # noqa: E402
    PROBE_SHAPE,
    LamaInpainter,
    build_lama_inpainter,
    ceil_to,
    group_by_size,
    load_lama,
)

SIZES = ((48, 64), (64, 40), (37, 53), (48, 64))
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
MAGENTA = np.array([255, 0, 255])
CPU = torch.device("cpu")


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
    imgs, masks = noise_with_holes(SIZES)
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
    imgs, masks = noise_with_holes(((48, 64), (48, 64), (47, 61), (48, 64)))
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
    imgs, masks = noise_with_holes(((96, 128),))
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


# ----------------------------------------------------------------------------- objects at the edge


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
        imgs, masks = noise_with_holes(SIZES)
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


class _Recorder(nn.Module):
    """big-lama's signature; fills holes from context (as DiffusionLama) and keeps its last inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = DiffusionLama()
        self.last_image = torch.zeros(0)
        self.last_mask = torch.zeros(0)
        self.calls = 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_image = image.clone()
        self.last_mask = mask.clone()
        return self.inner(image, mask)


def _recorder_file(path: Path) -> Path:
    torch.jit.save(torch.jit.script(_Recorder().eval()), str(path))
    return path


def _spy(model):
    """A Python wrapper keeping every (image, mask) batch the inpainter sends."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def call(image, mask):
        seen.append((image.clone(), mask.clone()))
        return model(image, mask)

    return call, seen


def _rand(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    m = rng.random((h, w)) < 0.3
    return im, m


# ----------------------------------------------------------------------------- sizes


def test_ceil_to():
    assert [ceil_to(x, 8) for x in (0, 1, 7, 8, 9, 16, 17)] == [0, 8, 8, 8, 16, 16, 24]
    assert ceil_to(10, 4) == 12


def test_group_by_size_order_landscapes_first_squares_with_portraits():
    sizes = [(8, 8), (8, 16), (16, 8), (4, 16)]
    # one per group: the order is the sort order: landscapes (h < w) by size, then the rest by size
    assert group_by_size(sizes, max_waste=0.5, max_batch=1) == [[3], [1], [0], [2]]


def test_group_by_size_waste_boundary_and_batch_limit():
    # (4, 2) + (4, 4) padded to 4x4: 24 of 32 pixels are image, exactly 1 - 0.25: they group
    assert group_by_size([(4, 4), (4, 2)], max_waste=0.25, max_batch=8) == [[1, 0]]
    assert group_by_size([(4, 4), (4, 2)], max_waste=0.2, max_batch=8) == [[1], [0]]
    assert group_by_size([(4, 4), (4, 1)], max_waste=0.0, max_batch=8) == [[1], [0]]
    assert group_by_size([(4, 4)] * 3, max_waste=0.0, max_batch=2) == [[0, 1], [2]]
    assert group_by_size([(4, 4)] * 5, max_waste=0.0, max_batch=2) == [[0, 1], [2, 3], [4]]
    # the padded size is the max of H and of W over the group, not of one member
    # (5, 10) + (6, 8) padded to 6x10: 98 of 120 pixels are image (to 6x8, the last one's size: 98 of 96)
    assert group_by_size([(5, 10), (6, 8)], max_waste=0.15, max_batch=8) == [[0], [1]]
    assert group_by_size([(5, 10), (6, 8)], max_waste=0.2, max_batch=8) == [[0, 1]]
    assert group_by_size([], max_waste=0.25, max_batch=8) == []


def test_defaults_and_option_checks():
    inp = LamaInpainter(object(), CPU)
    assert (inp.weights_id, inp.max_batch, inp.max_pad_waste, inp.work_px, inp.pad_mod) == (
        LAMA_FILE,
        8,
        0.25,
        None,
        8,
    )
    LamaInpainter(object(), CPU, max_batch=1, max_pad_waste=0.0, work_px=32)  # the boundaries are allowed
    for kw, msg in [
        ({"max_batch": 0}, "max_batch must be >= 1, got 0"),
        ({"max_pad_waste": 1.0}, r"max_pad_waste must be in \[0, 1\), got 1.0"),
        ({"max_pad_waste": -0.01}, r"max_pad_waste must be in \[0, 1\), got -0.01"),
        ({"work_px": 31}, "work_px must be None or >= 32, got 31"),
    ]:
        with pytest.raises(ValueError, match=f"^{msg}$"):
            LamaInpainter(object(), CPU, **kw)


# ----------------------------------------------------------------------------- what the model sees


def test_model_sees_image_over_255_and_mask_padded_alike():
    """Reflection where the padding is smaller than the side, replication otherwise, on image AND mask."""
    call, seen = _spy(torch.jit.script(DiffusionLama()))
    inp = LamaInpainter(call, CPU, max_batch=8, max_pad_waste=0.99)
    # padding < side: reflect; padding == side (8 of 16) or more: replicate
    cases = [(10, 13), (16, 16), (5, 16), (12, 4), (8, 13), (13, 8)]
    ims, ms = zip(*(_rand(h, w, k) for k, (h, w) in enumerate(cases)), strict=True)
    # flipped views (negative strides, as np.fliplr gives): torch.from_numpy needs a contiguous copy
    ims = tuple(im[:, ::-1] for im in ims)
    ms = tuple(m[::-1] for m in ms)
    out = inp.inpaint(list(ims), list(ms))
    assert len(seen) == 1
    x, mk = seen[0]
    assert x.shape == (6, 3, 16, 16) and mk.shape == (6, 1, 16, 16)
    assert x.dtype == torch.float32 and mk.dtype == torch.float32
    order = group_by_size(cases, max_waste=0.99, max_batch=8)[0]
    for row, i in enumerate(order):
        h, w = cases[i]
        mode = "reflect" if 16 - h < h and 16 - w < w else "edge"
        want_x = np.pad(ims[i].astype(np.float32) / 255, ((0, 16 - h), (0, 16 - w), (0, 0)), mode=mode)
        want_m = np.pad(ms[i].astype(np.float32), ((0, 16 - h), (0, 16 - w)), mode=mode)
        np.testing.assert_allclose(x[row].permute(1, 2, 0).numpy(), want_x, rtol=0, atol=1e-7)
        assert np.array_equal(mk[row, 0].numpy(), want_m), f"mask of {cases[i]} padded like its image"
    for im, m, o in zip(ims, ms, out, strict=True):
        assert o.shape == im.shape and o.dtype == np.uint8
        assert np.array_equal(o[~m], im[~m])


def _constant_model(value: float):
    def call(image, mask):
        return torch.full((image.shape[0], 3, image.shape[2], image.shape[3]), value)

    return call


@pytest.mark.parametrize(
    "value, expect", [(100.4 / 255, 100), (100.6 / 255, 101), (1.3, 255), (-0.3, 0), (0.5, 128)]
)
def test_output_rounded_and_clamped(value, expect):
    """A fill of v in [0, 1] becomes round(255 v); a model overshooting [0, 1] is clamped."""
    inp = LamaInpainter(_constant_model(value), CPU)
    im = np.full((12, 20, 3), 7, np.uint8)
    m = np.zeros((12, 20), bool)
    m[2:5, 3:9] = True
    out = inp.inpaint([im], [m])[0]
    assert (out[m] == expect).all() and (out[~m] == 7).all()


def test_output_cropped_to_each_image():
    """Each image gets back the top-left (h, w) of its padded row of the batch."""
    rec = torch.jit.script(DiffusionLama())
    inp = LamaInpainter(rec, CPU, max_pad_waste=0.9)
    ims, ms = zip(
        *(_rand(h, w, 10 + k) for k, (h, w) in enumerate([(9, 30), (30, 9), (17, 17)])), strict=True
    )
    together = inp.inpaint(list(ims), list(ms))
    for im, m, t in zip(ims, ms, together, strict=True):
        alone = LamaInpainter(rec, CPU).inpaint([im], [m])[0]
        assert t.shape == im.shape
        # same fill as alone, up to what the differently sized padding adds as context
        assert np.array_equal(t[~m], im[~m]) and np.abs(t[m].astype(int) - alone[m]).mean() < 40


@pytest.mark.parametrize("bad", ["shape", "tuple"])
def test_wrong_output_names_shapes(bad):
    def model(image, mask):
        return image[:, :, :-1] if bad == "shape" else (image,)

    inp = LamaInpainter(model, CPU)
    im, m = _rand(12, 20, 0)
    got = r"torch.Size\(\[1, 3, 15, 24\]\)" if bad == "shape" else "tuple"
    with pytest.raises(ForcompError, match=rf"^LaMa returned {got}; expected \(1, 3, 16, 24\)$"):
        inp.inpaint([im], [m])


def test_images_and_masks_count_checked():
    inp = LamaInpainter(_constant_model(0.5), CPU)
    im, m = _rand(8, 8, 0)
    with pytest.raises(ValueError, match="^got 2 images but 1 masks$"):
        inp.inpaint([im, im], [m])


def test_small_images_run_at_full_size_without_work_px():
    call, seen = _spy(_constant_model(0.5))
    for work_px in (None, 64):
        seen.clear()
        im, m = _rand(5, 6, 1)
        LamaInpainter(call, CPU, work_px=work_px).inpaint([im], [m])
        x = seen[0][0]
        assert x.shape == (1, 3, 8, 8)
        np.testing.assert_allclose(x[0, :, :5, :6].permute(1, 2, 0).numpy(), im / 255, atol=1e-7)


def test_work_px_sizes():
    call, seen = _spy(_constant_model(0.5))
    inp = LamaInpainter(call, CPU, work_px=32)
    for (h, w), (sh, sw) in [
        ((96, 128), (24, 32)),
        ((128, 96), (32, 24)),
        ((400, 40), (32, 8)),
        ((40, 400), (8, 32)),
    ]:
        seen.clear()
        im, m = _rand(h, w, 2)
        out = inp.inpaint([im], [m])[0]
        x, mk = seen[0]
        assert x.shape[2:] == (ceil_to(sh, 8), ceil_to(sw, 8)), (h, w)
        # the downscaled image (area average) in the unpadded corner; the fill is upsampled back
        assert abs(float(x[0, :, :sh, :sw].mean()) - im.mean() / 255) < 0.02
        assert out.shape == im.shape and np.array_equal(out[~m], im[~m]) and (out[m] == 128).all()


def test_work_px_downscales_by_area_average():
    """Each cell of the downscaled image is the mean of the pixels it covers (one-pixel lines survive)."""
    call, seen = _spy(_constant_model(0.5))
    im = np.zeros((96, 128, 3), np.uint8)
    im[:, ::4] = 255  # a 1-pixel line every 4 pixels: a 4x4 cell averages to 63.75
    im[::8, :, 1] = 200
    m = np.zeros((96, 128), bool)
    m[40:50, 60:70] = True
    LamaInpainter(call, CPU, work_px=32).inpaint([im], [m])
    x = seen[0][0][0, :, :24, :32].permute(1, 2, 0).numpy() * 255
    want = im.astype(np.float64).reshape(24, 4, 32, 4, 3).mean((1, 3))
    assert np.abs(x - want).max() <= 0.51


@pytest.mark.parametrize("spot", [(0, 0), (1, 1), (2, 3), (37, 70), (95, 127), (50, 0)])
def test_work_px_keeps_every_hole_pixel_a_hole(spot):
    """A downscaled mask cell holding any hole pixel is hole: no object colour is offered as context."""
    call, seen = _spy(torch.jit.script(DiffusionLama()))
    inp = LamaInpainter(call, CPU, work_px=32)
    im = np.zeros((96, 128, 3), np.uint8)
    im[...] = (40, 160, 60)
    m = np.zeros((96, 128), bool)
    m[spot] = True
    im[m] = (255, 0, 0)
    out = inp.inpaint([im], [m])[0]
    small = seen[0][1][0, 0].numpy() > 0.5
    y, x = spot
    assert small[y * 24 // 96, x * 32 // 128], f"hole pixel {spot} lost in the 24x32 mask"
    assert small.sum() <= 4, "only the cells around the pixel"
    assert out[spot][0] < 60, f"object red {out[spot]} kept in its own fill"


# ----------------------------------------------------------------------------- loading and the probe


def test_probe_calls_with_a_real_hole(tmp_path):
    model = load_lama(_recorder_file(tmp_path / LAMA_FILE), CPU)
    assert model.calls == 1 and not model.training
    b, h, w = PROBE_SHAPE
    assert (b, h, w) == (2, 24, 40)
    assert model.last_image.shape == (2, 3, 24, 40) and bool((model.last_image == 0.5).all())
    want = torch.zeros(2, 1, 24, 40)
    want[:, :, 6:12, 10:20] = 1
    assert torch.equal(model.last_mask, want)
    assert load_lama(tmp_path / LAMA_FILE, CPU, probe=False).calls == 0


class _Raises(nn.Module):
    def __init__(self, msg: str) -> None:
        super().__init__()
        self.msg = msg

    def forward(self, image, mask):
        raise RuntimeError(self.msg)


@pytest.mark.parametrize(
    "msg, first", [("shape mismatch\nsecond line", "shape mismatch"), ("", "RuntimeError")]
)
def test_probe_failure_message(tmp_path, monkeypatch, msg, first):
    make_diffusion_lama(tmp_path / LAMA_FILE)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: _Raises(msg))
    with pytest.raises(ForcompError) as e:
        load_lama(tmp_path / LAMA_FILE, CPU)
    assert str(e.value) == (
        f"{tmp_path / LAMA_FILE} does not behave like LaMa: calling it as model(image (2, 3, 24, 40), "
        f"mask (2, 1, 24, 40)) failed (a model exported with fixed input shapes cannot run forcomp's "
        f"batches): {first}"
    )


class _Returns(nn.Module):
    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def forward(self, image, mask):
        return self.out


@pytest.mark.parametrize(
    "out, shown",
    [(torch.zeros(2, 3, 24, 41), "(2, 3, 24, 41)"), ([1, 2], "list"), (torch.zeros(()), "Tensor")],
)
def test_probe_wrong_output_message(tmp_path, monkeypatch, out, shown):
    make_diffusion_lama(tmp_path / LAMA_FILE)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: _Returns(out))
    with pytest.raises(ForcompError) as e:
        load_lama(tmp_path / LAMA_FILE, CPU)
    assert str(e.value) == (
        f"{tmp_path / LAMA_FILE} does not behave like LaMa: model(image, mask) returned {shown}, "
        f"expected (2, 3, 24, 40)"
    )


@pytest.mark.parametrize("content", [b"", b"not a zip archive\n"])
def test_load_failure_message(tmp_path, content):
    (tmp_path / LAMA_FILE).write_bytes(content)
    with pytest.raises(ForcompError) as e:
        load_lama(tmp_path / LAMA_FILE, CPU)
    msg = str(e.value)
    assert msg.startswith(f"cannot load LaMa from {tmp_path / LAMA_FILE}: it is not a TorchScript file (")
    assert msg.endswith(f"). Expected the TorchScript big-lama.pt from {lama_mod.LAMA_SOURCE}")
    detail = msg.split(" file (", 1)[1].rsplit("). Expected", 1)[0]
    assert "\n" not in detail and detail.split(": ", 1)[0] == type(e.value.__cause__).__name__
    assert detail.split(": ", 1)[1] == str(e.value.__cause__).strip().splitlines()[0]


def test_load_failure_without_message(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise ValueError("  ")

    monkeypatch.setattr(torch.jit, "load", fail)
    with pytest.raises(ForcompError, match=r"not a TorchScript file \(ValueError: ValueError\)\. Expected"):
        load_lama(tmp_path / LAMA_FILE, CPU)


def test_missing_file_message(tmp_path):
    from forcomp.errors import WeightsNotFoundError

    with pytest.raises(
        WeightsNotFoundError, match=rf"^LaMa checkpoint not found: expected {tmp_path / LAMA_FILE}\."
    ):
        build_lama_inpainter(weights_dir=tmp_path, device="cpu")


def test_build_passes_options_and_logs(tmp_path, caplog):
    _recorder_file(tmp_path / LAMA_FILE)
    with caplog.at_level(logging.INFO, logger="forcomp.offline.inpainters.lama"):
        inp = build_lama_inpainter(
            weights_dir=str(tmp_path), device="cpu", max_batch=3, max_pad_waste=0.5, work_px=40, pad_mod=16
        )
    assert (inp.max_batch, inp.max_pad_waste, inp.work_px, inp.pad_mod) == (3, 0.5, 40, 16)
    assert inp.weights_id == LAMA_FILE and inp.device == CPU and inp.model.calls == 1
    assert f"lama inpainter: {LAMA_FILE} on cpu" in caplog.messages
    assert build_lama_inpainter(weights_dir=tmp_path, device="cpu", probe=False).model.calls == 0
    other = _recorder_file(tmp_path / "other.pt")
    assert (
        build_lama_inpainter(weights_dir=tmp_path, device="cpu", checkpoint=other.name).weights_id
        == "other.pt"
    )
    with pytest.raises(
        ValueError, match=r"^checkpoint must be a file name in the weights directory, got 'a/b.pt'$"
    ):
        build_lama_inpainter(weights_dir=tmp_path, device="cpu", checkpoint="a/b.pt")
