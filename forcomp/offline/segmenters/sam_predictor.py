"""SAM's predictor: a batched image encoder sized to the device's free memory, and box-prompt decoding.

The image encoder sees the batch in chunks (resized to 1024 on the long side on the model's
device, normalised, padded; bf16 autocast on CUDA). The chunk size follows from the device's free
memory (:func:`auto_encoder_batch`): the real ViT-B/L/H encoders have global-attention blocks whose
attention maps are heads × 4096 × 4096 per image (≈1–3 GiB for ViT-H), so a fixed batch that fits
a test model can exhaust a GPU or a host. A chunk that still runs out of memory is split in halves
and retried, and later chunks use the smaller size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


def free_memory_bytes(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: ``mem_get_info``; CPU: ``MemAvailable``)."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        avail: int | None = None
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            try:
                import psutil  # type: ignore[import-untyped]

                avail = int(psutil.virtual_memory().available)
            except ImportError:
                return None
        # A container or Slurm job may be limited below the host's free memory (cgroup v2).
        try:
            limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            if limit != "max":
                avail = min(avail, int(limit) - used) if avail is not None else int(limit) - used
        except (OSError, ValueError):
            pass
        return avail
    return None


def encoder_bytes_per_image(encoder: Any, *, dtype_bytes: int) -> int:
    """Peak working memory of one image in SAM's image encoder, estimated from its architecture.

    Global-attention blocks materialise the full ``(heads, T, T)`` attention map over the T = 64×64
    tokens, and segment-anything keeps about three such maps alive at the peak (scores, the
    decomposed relative-position sum, softmax); windowed blocks do the same over 14×14 windows. The
    token activations (qkv, MLP) add about 16 × T × width values. For ViT-H it gives 3.3 GiB per
    image in float32 and 1.7 GiB under bf16 (batch 8: 26 and 13 GiB, in line with the 18–24 and
    ~16 GiB a review of the architecture estimated); ViT-B 2.4 and 1.2 GiB. Only part of the free
    memory is planned for (``memory_fraction``); the rest is headroom.
    """
    blocks = list(encoder.blocks)
    grid = int(encoder.img_size) // int(encoder.patch_embed.proj.kernel_size[0])
    tokens = grid * grid
    width = int(encoder.patch_embed.proj.out_channels)
    attn = 0
    for blk in blocks:
        heads = int(blk.attn.num_heads)
        win = int(blk.window_size)
        if win > 0:
            n_win = (-(-grid // win)) ** 2
            attn = max(attn, 3 * heads * n_win * (win * win) ** 2)
        else:
            attn = max(attn, 3 * heads * tokens * tokens)
    return (attn + 16 * tokens * width) * dtype_bytes


def auto_encoder_batch(
    encoder: Any,
    device: torch.device,
    *,
    amp: bool,
    max_batch: int = 16,
    memory_fraction: float = 0.6,
    free_bytes: int | None = None,
) -> int:
    """Images per image-encoder call that fit ``memory_fraction`` of the device's free memory.

    ``free_bytes`` overrides the query (tests); when the free memory cannot be read the batch is 1.
    """
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    if free is None:
        return 1
    dtype_bytes = 2 if amp and device.type == "cuda" else 4
    per_image = encoder_bytes_per_image(encoder, dtype_bytes=dtype_bytes)
    return max(1, min(max_batch, int(free * memory_fraction) // per_image))


def is_out_of_memory(e: BaseException) -> bool:
    """A CUDA OOM, or the CPU allocator failing to allocate."""
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError from torch 2.5 on, same class
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg
    )


# ----------------------------------------------------------------------------- predictor


class SamBoxPredictor:
    """Holds a SAM model; encodes batches of images and decodes box prompts per image.

    Like segment-anything's ``SamPredictor.predict_torch``, but the image encoder sees a whole batch
    and the resize runs on the model's device.

    Args:
        model: a segment-anything ``Sam`` in eval mode.
        device: where it runs.
        encoder_batch_size: images per image-encoder call, or ``"auto"`` (the default): as many as
            fit in the device's free memory now (:func:`auto_encoder_batch`), at most 16. Either
            way a call that runs out of memory is split and retried, and the batch is lowered.
        amp: bf16 autocast for the image encoder on CUDA.
    """

    def __init__(
        self,
        model: Any,
        device: torch.device,
        *,
        encoder_batch_size: int | Literal["auto"] = "auto",
        amp: bool = True,
    ) -> None:
        if encoder_batch_size != "auto" and (
            not isinstance(encoder_batch_size, int) or encoder_batch_size < 1
        ):
            raise ValueError(f"encoder_batch_size must be 'auto' or an int >= 1, got {encoder_batch_size!r}")
        self.model = model.to(device).eval()
        self.amp = amp
        self.img_size = int(model.image_encoder.img_size)
        self.encoder_batch_size: int = (
            auto_encoder_batch(self.model.image_encoder, self.model.device, amp=amp)
            if encoder_batch_size == "auto"
            else encoder_batch_size
        )
        log.info(
            "SAM image encoder batch: %d (%s)",
            self.encoder_batch_size,
            "from free memory" if encoder_batch_size == "auto" else "set",
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _input_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.img_size / max(h, w)
        return int(h * s + 0.5), int(w * s + 0.5)

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        h, w = image.shape[:2]
        x = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1)[None].float()
        x = F.interpolate(x, self._input_size(h, w), mode="bilinear", align_corners=False, antialias=True)
        return self.model.preprocess(x[0].round().clamp(0, 255))

    def embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Image embeddings ``(B, 256, 64, 64)`` float32 on the model's device."""
        import torch

        out: list[torch.Tensor] = []
        i = 0
        while i < len(images):
            n = self.encoder_batch_size
            out.append(self._embed_chunk(images[i : i + n]))
            i += n
        return torch.cat(out)

    def _embed_chunk(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Encode ``images`` in one call; on out-of-memory, halve the batch and encode each half."""
        import torch

        try:
            with torch.inference_mode():
                x = torch.stack([self._prepare(im) for im in images])
                use_amp = self.amp and self.device.type == "cuda"
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                    return self.model.image_encoder(x).float()
        except RuntimeError as e:  # torch's OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e) or len(images) == 1:
                raise
        # Retried outside the except block, so the failed call's frames and tensors are freed first.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(images) // 2
        self.encoder_batch_size = min(self.encoder_batch_size, max(1, half))
        log.warning(
            "SAM image encoder ran out of memory on %d images; retrying in halves (batch now %d)",
            len(images),
            self.encoder_batch_size,
        )
        return torch.cat([self._embed_chunk(images[:half]), self._embed_chunk(images[half:])])

    def predict_boxes(
        self,
        embedding: torch.Tensor,
        image_hw: tuple[int, int],
        boxes_xyxy: np.ndarray,
        *,
        multimask: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks for XYXY pixel boxes of one image.

        Returns:
            ``masks`` ``(N, C, H, W)`` bool and ``iou`` ``(N, C)`` float32 (C = 3 with ``multimask``).
        """
        import torch
        import torch.nn.functional as F

        h, w = image_hw
        ih, iw = self._input_size(h, w)
        with torch.inference_mode():
            boxes = torch.as_tensor(np.asarray(boxes_xyxy, np.float32).reshape(-1, 4), device=self.device)
            boxes = boxes * torch.tensor([iw / w, ih / h, iw / w, ih / h], device=self.device)
            sparse, dense = self.model.prompt_encoder(points=None, boxes=boxes, masks=None)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            # SAM's postprocess_masks upsamples to 1024², crops the unpadded input and resizes to the
            # image; one resize to the image's scale then a crop is the same map at a quarter of the
            # cost for ImageNet-sized images (many boxes × 3 masks per image add up).
            side = round(self.img_size * max(h / ih, w / iw))
            up = F.interpolate(low_res.float(), (side, side), mode="bilinear", align_corners=False)
            masks = up[..., :h, :w] > self.model.mask_threshold
        return masks.cpu().numpy(), iou.float().cpu().numpy()
