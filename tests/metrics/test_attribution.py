"""Attribution methods: shapes, non-negativity, batching, layer choice, and where they point."""

from __future__ import annotations

import math

import biased_models
import pytest
import torch
from biased_models import BACKGROUND_RGB, OBJECT_RGB, border, center, invariant
from torch import nn

from forcomp.metrics.attribution import (
    AttributionUnavailable,
    Attributor,
    find_cam_target,
    focus_scores,
    gradcam,
    input_x_gradient,
    integrated_gradients,
)


def scene(k: int, box: tuple[int, int, int, int], size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-k object (a rectangle) on the class-k background; returns (image, mask)."""
    img = torch.tensor(BACKGROUND_RGB[k]).view(3, 1, 1).expand(3, size, size).clone()
    mask = torch.zeros(size, size)
    y0, x0, y1, x1 = box
    img[:, y0:y1, x0:x1] = torch.tensor(OBJECT_RGB[k]).view(3, 1, 1)
    mask[y0:y1, x0:x1] = 1
    return img, mask


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [
        scene(0, (18, 18, 30, 30)),
        scene(1, (2, 30, 14, 44)),
        scene(2, (16, 4, 34, 20)),
        scene(3, (20, 20, 28, 28)),
    ]
    x = torch.stack([i for i, _ in items])
    m = torch.stack([m for _, m in items])
    return x, torch.arange(4), m


def test_focus_formula() -> None:
    mask = torch.zeros(1, 10, 10)
    mask[0, :5] = 1  # half the image
    assert focus_scores(torch.ones(1, 10, 10), mask).item() == pytest.approx(1.0)  # spread as if by chance
    assert focus_scores(mask.clone(), mask).item() == pytest.approx(2.0)  # all on the object
    assert focus_scores(1 - mask, mask).item() == pytest.approx(0.0)
    assert math.isnan(focus_scores(torch.zeros(1, 10, 10), mask).item())  # no attribution: undefined
    assert math.isnan(focus_scores(torch.ones(1, 10, 10), torch.zeros(1, 10, 10)).item())


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients", "gradcam"])
def test_maps_nonnegative_batched_equals_single(method: str, batch) -> None:
    x, y, _ = batch
    model = invariant().eval()
    att = Attributor(model, (method,), ig_steps=4)
    full = att(x, y)[method]
    assert full.shape == (4, 48, 48) and full.dtype == torch.float32 and (full >= 0).all()
    single = torch.cat([att(x[i : i + 1], y[i : i + 1])[method] for i in range(4)])
    assert torch.allclose(full, single, atol=1e-6)


def test_invariant_model_attributes_to_the_object(batch) -> None:
    x, y, m = batch
    model = invariant().eval()
    for fn in (input_x_gradient, lambda *a: integrated_gradients(*a, steps=8)):
        f = focus_scores(fn(model, x, y), m)
        area = m.flatten(1).mean(1)
        assert torch.allclose(f, 1 / area, rtol=0.05), (f, 1 / area)  # (almost) everything on the object


def test_border_model_attributes_to_the_border(batch) -> None:
    x, y, m = batch
    f = focus_scores(input_x_gradient(border().eval(), x, y), m)
    assert (f < 0.3).all(), f  # a pure background model looks away from the object


def test_center_model_sees_only_central_objects(batch) -> None:
    x, y, m = batch
    f = focus_scores(input_x_gradient(center().eval(), x, y), m)
    assert f[0] > 3 and f[1] < 0.1  # item 0 is centred, item 1 sits in a corner


def test_gradcam_layer_choice_cnn_vit_and_mlp() -> None:
    from torchvision.models import resnet18

    x = torch.rand(2, 3, 64, 64)
    assert find_cam_target(resnet18().eval(), x).name == "layer4"
    assert find_cam_target(invariant().eval(), x).name == "window"
    timm = pytest.importorskip("timm")
    vit = timm.create_model("test_vit", pretrained=False).eval()
    t = find_cam_target(vit, torch.rand(2, 3, 160, 160))
    assert t.kind == "vit" and t.name.endswith("norm1") and t.prefix_tokens == vit.num_prefix_tokens
    cam = gradcam(vit, torch.rand(2, 3, 160, 160), torch.tensor([0, 1]), cam_target=t)
    assert cam.shape == (2, 160, 160) and (cam >= 0).all()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 4)).eval()
    with pytest.raises(AttributionUnavailable):
        find_cam_target(mlp, x)
    att = Attributor(mlp, ("input_x_gradient", "gradcam"))
    maps = att(x, torch.tensor([0, 1]))
    assert set(maps) == {"input_x_gradient"} and "gradcam" in att.unavailable


def test_torchvision_vit_gradcam() -> None:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    )
    nn.init.normal_(vit.heads.head.weight, std=0.1)
    t = find_cam_target(vit.eval(), torch.rand(1, 3, 32, 32))
    assert t.kind == "vit" and t.name.endswith("ln_1")
    cam = gradcam(vit, torch.rand(2, 3, 32, 32), torch.tensor([0, 2]), cam_target=t)
    assert cam.shape == (2, 32, 32) and cam.sum() > 0


def test_attributor_validates_methods() -> None:
    with pytest.raises(ValueError, match="methods"):
        Attributor(invariant(), ("saliency",))


def _reference_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Grad-CAM by hand on a channels-last layer: permute (B, h, w, C) → (B, C, h, w) first."""
    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.update(act=out))
    try:
        score = model(x).gather(1, y.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, store["act"])
    finally:
        handle.remove()
    act, grad = store["act"].detach().permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    return torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def test_gradcam_on_channels_last_swin_matches_permuted_reference() -> None:
    swin = biased_models.tiny_swin(3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 64, 64, generator=g), torch.tensor([0, 1, 2, 0])
    t = find_cam_target(swin, x)
    assert t.name == "norm" and t.kind == "conv"  # timm Swin's last norm outputs (B, h, w, C)
    cam = Attributor(swin, ("gradcam",))(x, y)["gradcam"]
    ref = _reference_cam(swin, swin.norm, x, y)
    assert cam.shape == ref.shape == (4, 64, 64) and ref.std() > 0
    assert _corr(cam, ref) > 0.99


class _ChannelsLastNet(nn.Module):
    """A conv whose output is permuted to (B, h, w, C) and layer-normed, as Swin/ConvNeXt blocks do."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.norm(self.conv(x).permute(0, 2, 3, 1))  # (B, h, w, C)
        return self.head(f.mean((1, 2)))


def test_gradcam_ambiguous_layout_is_skipped_not_guessed() -> None:
    torch.manual_seed(0)
    model = _ChannelsLastNet(8).eval()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])  # (B, 8, 8, 8): both readings fit the shape
    att = Attributor(model, ("input_x_gradient", "gradcam"))
    maps = att(x, y)
    assert set(maps) == {"input_x_gradient"}
    assert "channels-last" in att.unavailable["gradcam"]
    model.output_fmt = "NHWC"  # a declared format settles it
    cam = Attributor(model, ("gradcam",))(x, y)["gradcam"]
    assert _corr(cam, _reference_cam(model, model.norm, x, y)) > 0.99
