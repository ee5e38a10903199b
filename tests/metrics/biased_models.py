"""Hand-built classifiers whose biases are known by construction, for the synthetic colour cache.

The synthetic cache (``conftest.py``) gives class k an object of colour ``OBJECT_RGB[k]`` on a
background of colour ``BACKGROUND_RGB[k]``; the eight colours are the corners of the RGB cube
(shrunk to [0.1, 0.9]), so one linear detector + ReLU per colour fires on its own colour only.

Every model is ``1×1 conv (colour detectors) → ReLU → spatial window → mean pool → head``:

- ``invariant``: object colours anywhere in the image → recognises any visible object.
- ``center``: object colours inside the central window only (inside nonant cell 4).
- ``border``: background colours in an outer ring only — a pure background model.
- ``large``: object colours anywhere, but only once the object covers ``min_area`` of the image.

With no evidence all logits tie and ``argmax`` returns class 0 (chance level on balanced classes).
A tiny class-independent brightness term (``eps``) does not change any prediction but gives every
pixel the model looks at a non-zero gradient, so attribution maps show *where* the model looks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CUBE_LO, CUBE_HI = 0.1, 0.9
OBJECT_CORNERS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 1))
BACKGROUND_CORNERS = ((0, 1, 1), (1, 0, 1), (1, 1, 0), (0, 0, 0))


def corner_rgb(corner: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(CUBE_LO + (CUBE_HI - CUBE_LO) * c for c in corner)  # type: ignore[return-value]


OBJECT_RGB = tuple(corner_rgb(c) for c in OBJECT_CORNERS)
BACKGROUND_RGB = tuple(corner_rgb(c) for c in BACKGROUND_CORNERS)
PEAK = 0.4  # detector response at its own colour; 0 at every other corner


class Window(nn.Module):
    """Multiply a feature map by a fixed 0/1 spatial window (``all`` / ``center`` / ``border``)."""

    def __init__(
        self, kind: str, *, center: tuple[float, float] = (0.375, 0.625), ring: float = 0.15
    ) -> None:
        super().__init__()
        self.kind, self.center, self.ring = kind, center, ring

    def weights(self, h: int, w: int, device: torch.device) -> Tensor:
        ys = (torch.arange(h, device=device) + 0.5) / h
        xs = (torch.arange(w, device=device) + 0.5) / w
        if self.kind == "all":
            return torch.ones(h, w, device=device)
        if self.kind == "center":
            lo, hi = self.center
            return (((ys >= lo) & (ys <= hi))[:, None] & ((xs >= lo) & (xs <= hi))[None, :]).float()
        if self.kind == "border":
            r = self.ring
            inner = ((ys > r) & (ys < 1 - r))[:, None] & ((xs > r) & (xs < 1 - r))[None, :]
            return (~inner).float()
        raise ValueError(f"unknown window {self.kind!r}")

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x.shape[-2], x.shape[-1], x.device)


class ColourWindowNet(nn.Module):
    """Colour detectors pooled over a window; see module docstring."""

    def __init__(
        self,
        corners: tuple[tuple[int, int, int], ...],
        window: str,
        *,
        min_area: float = 0.0,
        alpha: float = 50.0,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        k = len(corners)
        self.features = nn.Conv2d(3, k + 1, kernel_size=1)
        with torch.no_grad():
            for i, c in enumerate(corners):
                u = torch.tensor([2.0 * v - 1.0 for v in c])
                self.features.weight[i, :, 0, 0] = u
                self.features.bias[i] = -(float(u @ torch.tensor(corner_rgb(c))) - PEAK)
            self.features.weight[k, :, 0, 0] = 1.0 / 3.0  # brightness: same for every class
            self.features.bias[k] = 0.0
        for p in self.parameters():
            p.requires_grad_(False)
        self.act = nn.ReLU()
        self.window = Window(window)
        self.k, self.min_area, self.alpha, self.eps = k, min_area, alpha, eps

    def forward(self, x: Tensor) -> Tensor:
        f = self.window(self.act(self.features(x)))  # (B, K+1, H, W)
        area = self.window.weights(x.shape[-2], x.shape[-1], x.device).sum().clamp_min(1.0)
        pooled = f.sum((2, 3)) / area  # evidence ≈ PEAK × share of the window in that colour
        evidence = torch.relu(pooled[:, : self.k] - PEAK * self.min_area)
        return self.alpha * evidence + self.eps * pooled[:, self.k :]


def invariant() -> nn.Module:
    return ColourWindowNet(OBJECT_CORNERS, "all")


def center() -> nn.Module:
    return ColourWindowNet(OBJECT_CORNERS, "center")


def border() -> nn.Module:
    return ColourWindowNet(BACKGROUND_CORNERS, "border")


def large(min_area: float = 0.10) -> nn.Module:
    return ColourWindowNet(OBJECT_CORNERS, "all", min_area=min_area)


class ConstantNet(nn.Module):
    """Answers class 0 for every image (a model at chance): logits do not depend on the input."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, k, kernel_size=1)  # for Grad-CAM; multiplied by 0 below
        self.bias = nn.Parameter(torch.zeros(k))
        with torch.no_grad():
            self.bias[0] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return 0.0 * self.features(x).mean((2, 3)) + self.bias


def constant() -> nn.Module:
    return ConstantNet()


factory = invariant  # `tests/metrics/biased_models.py:factory` for the CLI tests

MODELS = {"invariant": invariant, "center": center, "border": border, "large": large}


class MappedNet(nn.Module):
    """The invariant model's 4 logits at outputs ``outputs`` of an ``n_outputs``-way head.

    Every other output is *larger* than any mapped one (1000 plus a term that depends on the image), as
    a real 1000-way model's scores for classes outside the cache can be: only the rule "argmax over the
    mapped outputs" gets the cache's classes right; an argmax over all outputs is always wrong.
    """

    def __init__(self, outputs: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        self.inner = invariant()
        self.outputs, self.n_outputs = tuple(outputs), n_outputs

    def forward(self, x: Tensor) -> Tensor:
        z = self.inner(x)
        unmapped = 1e3 + 10.0 * x.mean((1, 2, 3)).view(-1, 1).expand(-1, self.n_outputs)
        z = z[:, : len(self.outputs)]  # class k has colour k: a cache of the first classes
        return unmapped.to(z.dtype).index_copy(1, torch.tensor(self.outputs, device=x.device), z)


class PaddedNet(MappedNet):
    """The invariant model's 4 logits placed at outputs 7, 2, 5, 0 of a 10-way head (the others larger)."""

    OUTPUTS = (7, 2, 5, 0)

    def __init__(self) -> None:
        super().__init__(self.OUTPUTS, 10)


def padded() -> nn.Module:
    return PaddedNet()


def tiny_swin(num_classes: int) -> nn.Module:
    """A randomly initialised timm Swin small enough for tests (64 px, channels-last features)."""
    import pytest

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 1, 1),
        embed_dim=16,
        img_size=64,
        window_size=2,
        num_classes=num_classes,
    ).eval()
