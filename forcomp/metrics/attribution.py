"""Batched attribution maps for the true class: input×gradient, integrated gradients, Grad-CAM.

All methods return a non-negative map ``(B, H, W)`` at input resolution, for the class given per
sample. They are implemented here with autograd and forward hooks (captum / pytorch-grad-cam are
not dependencies); every method processes a whole batch in one forward/backward pass.

- ``input_x_gradient`` and ``integrated_gradients`` work for any differentiable model. Both are
  taken with respect to the *model input* (after normalisation), channel-wise absolute values summed
  over channels.
- ``gradcam`` needs a spatial feature map: for CNNs the last module (in execution order) that
  produces a 4-d spatial map after a convolution, read as ``(B, C, h, w)`` or, for channels-last
  layers (timm Swin/ConvNeXt-style ``(B, h, w, C)`` outputs), permuted to it; a layer whose layout
  cannot be told from its shape and the model's declared format is reported as unavailable rather
  than read the wrong way. For Vision Transformers (timm
  ``VisionTransformer`` and relatives, torchvision ``VisionTransformer``) the input of the last
  block's attention (``blocks[-1].norm1`` / ``encoder.layers[-1].ln_1``, as pytorch-grad-cam
  recommends, because the last block's patch-token outputs do not reach a class-token head), with
  prefix tokens dropped and the rest reshaped to the patch grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("input_x_gradient", "integrated_gradients", "gradcam")

_POOLS = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
)


class AttributionUnavailable(RuntimeError):
    """A method does not apply to this model (e.g. Grad-CAM on a model without a spatial map)."""


def _true_class_score(logits: Tensor, target: Tensor) -> Tensor:
    return logits.gather(1, target.view(-1, 1)).sum()


def input_x_gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``|x · ∂y_target/∂x|`` summed over channels.

    Args:
        model: Any differentiable classifier returning logits ``(B, K)``.
        x: Model input (already normalised).
        target: Class index per sample.

    Returns:
        Attribution ``(B, H, W)``, float32, ≥ 0.

    Shape:
        x: ``(B, C, H, W)``; target: ``(B,)``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_true_class_score(model(x), target), x)
    return (x.detach() * grad).abs().sum(1).float()


def integrated_gradients(
    model: nn.Module, x: Tensor, target: Tensor, *, steps: int = 16, baseline: Tensor | None = None
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017), midpoint Riemann sum with ``steps`` points.

    The baseline defaults to zeros in model-input space (the dataset mean colour after ImageNet
    normalisation). Memory stays at one batch: the path points are evaluated one after another.

    Returns:
        Attribution ``(B, H, W)``, float32, ≥ 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = x.detach()
    base = torch.zeros_like(x) if baseline is None else baseline.to(x).expand_as(x)
    total = torch.zeros_like(x)
    with torch.enable_grad():
        for i in range(steps):
            alpha = (i + 0.5) / steps
            xi = (base + alpha * (x - base)).requires_grad_(True)
            (grad,) = torch.autograd.grad(_true_class_score(model(xi), target), xi)
            total += grad
    return ((x - base) * total / steps).abs().sum(1).float()


@dataclass(frozen=True)
class CamTarget:
    """Where Grad-CAM reads activations: a module, and how to turn its output into ``(B, C, h, w)``.

    For ``kind="conv"`` the hints decide between ``(B, C, h, w)`` and channels-last ``(B, h, w, C)``
    when the output's shape alone does not: ``declared_format`` is the model's own feature format
    (timm ``output_fmt``, e.g. ``"NHWC"`` for Swin), ``channels`` its feature width (timm
    ``num_features``), ``module_nchw`` whether the module itself always returns channels-first maps
    (convolution, batch norm, pooling).
    """

    name: str
    module: nn.Module
    kind: str  # "conv" | "vit"
    prefix_tokens: int = 0
    patch_size: tuple[int, int] | None = None
    declared_format: str | None = None
    channels: int | None = None
    module_nchw: bool = False


def _vit_target(model: nn.Module) -> CamTarget | None:
    blocks = getattr(model, "blocks", None)
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) and patch_embed is not None:
        last = blocks[-1]
        if hasattr(last, "norm1"):
            ps = getattr(patch_embed, "patch_size", None)
            ps = (ps, ps) if isinstance(ps, int) else tuple(ps) if ps is not None else None
            prefix = int(
                getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0)
            )
            norm1 = cast(nn.Module, last.norm1)  # a submodule: nn.Module.__getattr__ is typed loosely
            name = next(n for n, m in model.named_modules() if m is norm1)
            return CamTarget(name, norm1, "vit", prefix, ps)
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is not None and hasattr(model, "conv_proj") and len(layers) and hasattr(layers[-1], "ln_1"):
        ps = int(cast(int, model.patch_size))  # torchvision ViT: an int attribute
        name = next(n for n, m in model.named_modules() if m is layers[-1].ln_1)
        return CamTarget(name, layers[-1].ln_1, "vit", 1, (ps, ps))
    return None


_NCHW_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.modules.batchnorm._BatchNorm, *_POOLS)


def _conv_cam_target(model: nn.Module, name: str, module: nn.Module) -> CamTarget:
    fmt = getattr(model, "output_fmt", None)
    fmt = getattr(fmt, "value", fmt)  # timm's Format enum or a plain string
    channels = getattr(model, "num_features", None)
    return CamTarget(
        name,
        module,
        "conv",
        declared_format=fmt.upper() if isinstance(fmt, str) else None,
        channels=channels if isinstance(channels, int) and not isinstance(channels, bool) else None,
        module_nchw=isinstance(module, _NCHW_MODULES),
    )


def _grid_plausible(grid: tuple[int, int], hw: tuple[int, int]) -> bool:
    """Whether ``grid`` can be the input ``hw`` downsampled by one stride (up to rounding)."""
    (h, w), (H, W) = grid, hw
    if not (1 <= h <= H and 1 <= w <= W):
        return False
    sy, sx = H / h, W / w
    return abs(sy - sx) <= 0.25 * max(sy, sx)


def feature_layout(shape: tuple[int, ...], hw: tuple[int, int], target: CamTarget) -> str | None:
    """``"nchw"``, ``"nhwc"`` or ``None`` (cannot tell) for a 4-d feature map of input size ``hw``.

    The shape decides when only one reading gives a grid with the input's aspect ratio (Swin's
    ``(B, 7, 7, 768)`` on 224 px); otherwise the module type, the model's declared format and its
    feature width decide, in that order.
    """
    if len(shape) != 4:
        return None
    nchw = _grid_plausible((shape[2], shape[3]), hw)
    nhwc = _grid_plausible((shape[1], shape[2]), hw)
    if nchw != nhwc:
        return "nchw" if nchw else "nhwc"
    if not nchw:
        return None
    if target.module_nchw:
        return "nchw"
    if target.declared_format in ("NCHW", "NHWC"):
        return target.declared_format.lower()
    if target.channels is not None and (shape[1] == target.channels) != (shape[3] == target.channels):
        return "nchw" if shape[1] == target.channels else "nhwc"
    return None


def _conv_target(model: nn.Module, x: Tensor) -> CamTarget | None:
    """Trace one forward pass; pick the last module finishing with a spatial map after a conv."""
    names = {m: n for n, m in model.named_modules() if m is not model}
    calls: dict[nn.Module, int] = {}
    finished: list[tuple[nn.Module, bool]] = []
    conv_seen = [False]

    def hook(module: nn.Module, _inp: object, out: object) -> None:
        calls[module] = calls.get(module, 0) + 1
        if isinstance(module, nn.Conv2d):
            conv_seen[0] = True
        spatial = isinstance(out, Tensor) and out.dim() == 4 and out.shape[-1] > 1 and out.shape[-2] > 1
        finished.append((module, spatial and conv_seen[0] and not isinstance(module, _POOLS)))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    for module, ok in reversed(finished):
        if ok and calls[module] == 1:
            return _conv_cam_target(model, names[module], module)
    return None


def find_cam_target(model: nn.Module, x: Tensor, layer: str | None = None) -> CamTarget:
    """Choose the Grad-CAM layer (see module docstring), or use ``layer`` (a module name).

    Raises:
        AttributionUnavailable: If the model has no spatial map Grad-CAM can use.
        ValueError: If ``layer`` names no module.
    """
    vit = _vit_target(model)
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"gradcam layer {layer!r} is not a module of the model")
        if vit is not None and modules[layer] is vit.module:
            return vit
        if vit is not None:
            return CamTarget(layer, modules[layer], "vit", vit.prefix_tokens, vit.patch_size)
        return _conv_cam_target(model, layer, modules[layer])
    if vit is not None:
        return vit
    conv = _conv_target(model, x)
    if conv is None:
        raise AttributionUnavailable(
            "gradcam: the model has no spatial feature map after a convolution and is not a "
            "recognised Vision Transformer; use input_x_gradient or integrated_gradients"
        )
    return conv


def _tokens_to_grid(t: Tensor, target: CamTarget, hw: tuple[int, int]) -> Tensor:
    """``(B, N, D)`` tokens → ``(B, D, h, w)``, dropping prefix (class/distillation/register) tokens."""
    t = t[:, target.prefix_tokens :]
    n = t.shape[1]
    if (
        target.patch_size is not None
        and (hw[0] // target.patch_size[0]) * (hw[1] // target.patch_size[1]) == n
    ):
        h, w = hw[0] // target.patch_size[0], hw[1] // target.patch_size[1]
    else:
        h = w = math.isqrt(n)
        if h * w != n:
            raise AttributionUnavailable(f"gradcam: cannot reshape {n} tokens to a patch grid")
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def gradcam(model: nn.Module, x: Tensor, target: Tensor, *, cam_target: CamTarget) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(Σ_c mean_hw(∂y/∂A_c) · A_c)``, upsampled bilinearly.

    Returns:
        Attribution ``(B, H, W)``, float32, ≥ 0.
    """
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: Tensor) -> None:
        store["act"] = out

    handle = cam_target.module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # ensures a graph even if all weights are frozen
            score = _true_class_score(model(x), target)
            act = store["act"]
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    act, grad = act.detach().float(), grad.float()
    if cam_target.kind == "vit":
        hw = (x.shape[-2], x.shape[-1])
        act = _tokens_to_grid(act, cam_target, hw)
        grad = _tokens_to_grid(grad, cam_target, hw)
    elif act.dim() != 4:
        raise AttributionUnavailable(f"gradcam: layer {cam_target.name} gives shape {tuple(act.shape)}")
    else:
        layout = feature_layout(tuple(act.shape), (x.shape[-2], x.shape[-1]), cam_target)
        if layout is None:
            raise AttributionUnavailable(
                f"gradcam: cannot tell whether layer {cam_target.name}'s output {tuple(act.shape)} is "
                "(B, C, h, w) or channels-last (B, h, w, C); gradcam skipped for this model rather than "
                "computed on a possibly wrong layout (choose another layer with gradcam_layer, or use "
                "input_x_gradient)"
            )
        if layout == "nhwc":
            act, grad = act.permute(0, 3, 1, 2), grad.permute(0, 3, 1, 2)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


class Attributor:
    """Holds a model and the per-model choices (Grad-CAM layer), computes maps batch by batch.

    Args:
        model: Classifier in eval mode; receives ``x`` as given (normalise before calling).
        methods: Names from :data:`METHODS`.
        ig_steps: Path points for integrated gradients.
        gradcam_layer: Module name for Grad-CAM; ``None`` picks it automatically.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> attr = Attributor(m, ("input_x_gradient", "gradcam"))
        >>> maps = attr(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
        >>> maps["gradcam"].shape
        torch.Size([2, 8, 8])
    """

    def __init__(
        self,
        model: nn.Module,
        methods: tuple[str, ...] | list[str],
        *,
        ig_steps: int = 16,
        gradcam_layer: str | None = None,
    ) -> None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {tuple(methods)}")
        self.model = model
        self.methods = tuple(methods)
        self.ig_steps = ig_steps
        self.gradcam_layer = gradcam_layer
        self.cam_target: CamTarget | None = None
        self.unavailable: dict[str, str] = {}

    def _fn(self, method: str, x: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        if method == "input_x_gradient":
            return lambda a, t: input_x_gradient(self.model, a, t)
        if method == "integrated_gradients":
            return lambda a, t: integrated_gradients(self.model, a, t, steps=self.ig_steps)
        if self.cam_target is None:
            self.cam_target = find_cam_target(self.model, x, self.gradcam_layer)
            log.info("gradcam layer: %s (%s)", self.cam_target.name, self.cam_target.kind)
        target = self.cam_target
        return lambda a, t: gradcam(self.model, a, t, cam_target=target)

    def __call__(self, x: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Maps for each available method; methods that do not apply are recorded in ``unavailable``."""
        out: dict[str, Tensor] = {}
        for method in self.methods:
            if method in self.unavailable:
                continue
            try:
                out[method] = self._fn(method, x)(x, target)
            except AttributionUnavailable as e:
                log.warning("%s", e)
                self.unavailable[method] = str(e)
        return out


def focus_scores(
    attribution: Tensor, mask: Tensor, eps: float = 1e-12, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Per-image foreground focus ``(Σ A·M / Σ A) / (Σ M / |image|)``; NaN where undefined.

    Undefined means an all-zero attribution map or an empty mask (the object left the canvas).

    Shape:
        attribution, mask: ``(B, H, W)`` (mask in [0, 1], soft edges allowed) → ``(B,)`` of ``dtype``
        (computed in float64 either way; the bias report keeps float64).
    """
    a = attribution.flatten(1).double()
    m = mask.flatten(1).to(a)
    a_sum, m_sum = a.sum(1), m.sum(1)
    share_attr = (a * m).sum(1) / a_sum.clamp_min(eps)
    share_area = m_sum / m.shape[1]
    focus = share_attr / share_area.clamp_min(eps)
    bad = (a_sum <= eps) | (m_sum <= eps) | ~torch.isfinite(a_sum)
    return torch.where(bad, torch.full_like(focus, float("nan")), focus).to(dtype)
