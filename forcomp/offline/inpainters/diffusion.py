"""Diffusion inpainter: a diffusers inpainting pipeline from a local directory under ``weights/``.

Each image is resized so its long side is the pipeline's native size (``unet.sample_size ×
vae_scale_factor``: 512 for Stable Diffusion 2 inpainting, 1024 for SDXL inpainting), both sides a
multiple of 8; images of the same working size run as one batch. The prompt is ``"background"`` by
default with a negative prompt against objects, every image gets its own generator seeded from
``seed`` and the image content (so a resumed build reproduces a fresh one, whatever the batching),
and the fill is resized back; only the hole is replaced. fp16 on CUDA, fp32 on CPU.

Weights: a ``save_pretrained`` directory (``model_index.json`` and one folder per component) with
safetensors weights, loaded with ``local_files_only=True``, ``use_safetensors=True`` and
``trust_remote_code=False``: no pickle is unpickled, no code from the directory runs, and no hub
is reached (without touching ``HF_HUB_OFFLINE`` or other process-wide settings).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.errors import ForcompError
from forcomp.offline.registry import BackendSpec
from forcomp.weights import find_model_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

PIPELINES = {
    "stable-diffusion-2-inpainting": "https://huggingface.co/stabilityai/stable-diffusion-2-inpainting",
    "stable-diffusion-xl-1.0-inpainting-0.1": "https://huggingface.co/diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}

SPECS = [
    BackendSpec(
        name="sd",
        factory="forcomp.offline.inpainters.diffusion:build_sd_inpainter",
        weights=tuple((f"{d}/model_index.json",) for d in PIPELINES),
        priority=10,
        extra="diffusion",
        description="a diffusers inpainting pipeline from a local directory (slow, highest quality)",
    ),
]


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def content_seed(seed: int, image: np.ndarray) -> int:
    """``seed`` mixed with a checksum of the image: per-image randomness independent of batching."""
    return (seed * 1_000_003 + zlib.crc32(np.ascontiguousarray(image[::7, ::7]).tobytes())) % (2**63)


class DiffusionInpainter:
    """A diffusers inpainting pipeline, batched by working size (see module docstring).

    Args:
        pipe: the loaded pipeline (``AutoPipelineForInpainting``).
        device: where it runs.
        weights_id: the pipeline directory name, written to the index.
        prompt, negative_prompt: text conditioning.
        steps: denoising steps.
        guidance_scale: classifier-free guidance.
        strength: 1.0 repaints the hole from noise.
        seed: base seed (mixed with each image's content).
        work_px: long side of the working size (None: the pipeline's native size).
        max_batch: images per pipeline call.
    """

    name = "sd"

    def __init__(
        self,
        pipe: Any,
        device: torch.device,
        *,
        weights_id: str,
        prompt: str = "background",
        negative_prompt: str = "object, person, animal, text, watermark",
        steps: int = 25,
        guidance_scale: float = 7.5,
        strength: float = 1.0,
        seed: int = 0,
        work_px: int | None = None,
        max_batch: int = 4,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        native = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
        if work_px is not None and work_px < 32:
            raise ValueError(f"work_px must be None or >= 32, got {work_px}")
        self.pipe = pipe
        self.device = device
        self.weights_id: str | None = weights_id
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.strength = strength
        self.seed = seed
        self.work_px = work_px or native
        self.max_batch = max_batch

    def work_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) at which an image is filled: long side ``work_px``, multiples of 8."""
        s = self.work_px / max(h, w)
        return _round8(h * s), _round8(w * s)

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2
        import torch
        from PIL import Image

        from forcomp.offline.masks import resize_hole

        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.work_size(*im.shape[:2]), []).append(i)
        filled: dict[int, np.ndarray] = {}
        for (wh, ww), idx in sorted(groups.items()):
            for k in range(0, len(idx), self.max_batch):
                chunk = idx[k : k + self.max_batch]
                pil_imgs = [
                    Image.fromarray(cv2.resize(images[i], (ww, wh), interpolation=cv2.INTER_AREA))
                    for i in chunk
                ]
                pil_masks = [
                    Image.fromarray(resize_hole(masks[i], (ww, wh)).astype(np.uint8) * 255) for i in chunk
                ]
                gens = [torch.Generator("cpu").manual_seed(content_seed(self.seed, images[i])) for i in chunk]
                with torch.inference_mode():
                    result = self.pipe(
                        prompt=[self.prompt] * len(chunk),
                        negative_prompt=[self.negative_prompt] * len(chunk),
                        image=pil_imgs,
                        mask_image=pil_masks,
                        height=wh,
                        width=ww,
                        num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale,
                        strength=self.strength,
                        generator=gens,
                        output_type="np",
                    )
                outs = np.asarray(result.images)
                for i, o in zip(chunk, outs, strict=True):
                    filled[i] = np.clip(o * 255 + 0.5, 0, 255).astype(np.uint8)
        out = []
        for i, (im, m) in enumerate(zip(images, masks, strict=True)):
            f = cv2.resize(filled[i], (im.shape[1], im.shape[0]), interpolation=cv2.INTER_CUBIC)
            res = im.copy()
            res[m] = f[m]
            out.append(res)
        return out


def find_pipeline_dir(weights_dir: Path, pipeline: str = "auto") -> Path:
    """``pipeline``: ``auto`` (first present of :data:`PIPELINES`) or a directory name under ``weights/``."""
    return find_model_dir(
        weights_dir,
        pipeline,
        PIPELINES,
        marker="model_index.json",
        what="diffusers inpainting pipeline",
        option="pipeline",
    )


def load_pipeline(path: Path, device: torch.device, dtype: Any) -> Any:
    """``AutoPipelineForInpainting.from_pretrained`` on a local directory: safetensors, no remote code."""
    try:
        from diffusers import AutoPipelineForInpainting
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the sd inpainter needs diffusers: pip install 'forcomp[diffusion]'") from e
    from diffusers.utils import deprecation_utils

    kw: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False}
    # Newer diffusers renamed torch_dtype to dtype; the old name still works there but warns.
    kw["dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"] = dtype
    try:
        components = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ForcompError(f"{path / 'model_index.json'} is not readable JSON: {e}") from e
    if "safety_checker" in components:
        # Backgrounds are not generated content for people; the checker would black out false positives.
        kw.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = AutoPipelineForInpainting.from_pretrained(str(path), **kw)
    except Exception as e:  # missing files, no safetensors, a pickle refused, bad JSON...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ForcompError(
            f"cannot load the inpainting pipeline from {path}: {first} "
            "(forcomp needs a diffusers save_pretrained directory with .safetensors weights)"
        ) from e
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd_inpainter(
    *,
    weights_dir: Path,
    device: str | None = None,
    pipeline: str = "auto",
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto",
    **options: Any,
) -> DiffusionInpainter:
    """Load the pipeline once; ``options`` go to :class:`DiffusionInpainter` (``prompt``, ``steps``...)."""
    import torch

    if dtype not in ("auto", "float16", "bfloat16", "float32"):
        raise ValueError(f"dtype must be auto, float16, bfloat16 or float32, got {dtype!r}")
    path = find_pipeline_dir(Path(weights_dir), pipeline)
    from forcomp.models.devices import resolve_device  # imports torch: not at backend listing

    dev = resolve_device(device)
    torch_dtype = (
        (torch.float16 if dev.type == "cuda" else torch.float32) if dtype == "auto" else getattr(torch, dtype)
    )
    pipe = load_pipeline(path, dev, torch_dtype)
    log.info("sd inpainter: %s (%s) on %s, %s", path.name, type(pipe).__name__, dev, torch_dtype)
    return DiffusionInpainter(pipe, dev, weights_id=path.name, **options)
