"""Attribution methods: shapes, non-negativity, batching, layer choice, and where they point."""

from __future__ import annotations

import math

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
