"""Segment-anything (SAM) segmenter: box prompts in, cleaned object masks out.

How it works, per batch:
1. The image encoder sees the batch in chunks (resized to 1024 on the long side on the model's
   device, normalised, padded; bf16 autocast on CUDA). The chunk size follows from the device's
   free memory (:func:`auto_encoder_batch`): the real ViT-B/L/H encoders have global-attention
   blocks whose attention maps are heads × 4096 × 4096 per image (≈1–3 GiB for ViT-H), so a fixed
   batch that fits a test model can exhaust a GPU or a host. A chunk that still runs out of memory
   is split in halves and retried, and later chunks use the smaller size.
2. Each image is prompted with boxes: a detector's boxes (``grounded-sam`` passes them in), else
   a central box and the whole image. SAM's multimask output gives three masks per box with a
   predicted IoU each.
3. Every mask is cleaned (holes and specks below ``min_region_ratio`` of the image removed, the
   largest connected object kept, plus parts at least ``keep_frac`` of its size), near-duplicates
   are merged away, and the candidates are returned best first by predicted IoU.

Checkpoints: the official files ``sam_vit_{h,l,b}_*.pth`` in the weights directory. The
architecture is inferred from the file's tensor shapes (embedding width, depth, heads, which
blocks attend globally), so any SAM-format state dict loads unchanged, and it is loaded with
``torch.load(..., weights_only=True)``: a checkpoint cannot run code.

The small model helpers here (:func:`resolve_device`, :func:`load_state_dict_file`) are shared by
the other model backends.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from forcomp.errors import ForcompError, WeightsNotFoundError
from forcomp.offline.registry import BackendSpec
from forcomp.offline.segmenters.base import MaskCandidate
from forcomp.weights import ENV_VAR, file_problem, find_weight

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

SAM_CHECKPOINTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SAM_SOURCE = (
    "https://github.com/facebookresearch/segment-anything#model-checkpoints "
    "(https://dl.fbaipublicfiles.com/segment_anything/<file name>)"
)

SPECS = [
    BackendSpec(
        name="sam",
        factory="forcomp.offline.segmenters.sam:build_sam_segmenter",
        weights=tuple((f,) for f in SAM_CHECKPOINTS.values()),
        priority=20,
        extra="sam",
        description="segment-anything ViT-H/L/B (largest checkpoint present), box-prompted",
    ),
]


# ----------------------------------------------------------------------------- shared model helpers


def resolve_device(device: str | None) -> torch.device:
    """``None`` → CUDA when available, else CPU; an explicit CUDA device must exist."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ForcompError(f"device={device!r} was requested but CUDA is not available; use --device cpu")
    return dev


def load_state_dict_file(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint that must be a state dict, without running any code from it.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which refuses pickled objects
    other than tensors and plain containers. A ``{"model": sd}`` / ``{"state_dict": sd}`` wrapper
    is unwrapped.

    Raises:
        ForcompError: naming the file, when it is not a readable state dict.
    """
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, zip errors, truncated files...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ForcompError(
            f"cannot load {what} {path}: it is not a plain state dict that loads with "
            f"weights_only=True ({type(e).__name__}: {first}). forcomp never unpickles code; "
            "re-save it with torch.save(model.state_dict(), path) or use the official file."
        ) from e
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ForcompError(f"cannot load {what} {path}: it does not hold a state dict (name → tensor)")
    return sd


# ----------------------------------------------------------------------------- SAM checkpoints


def infer_sam_config(sd: dict[str, torch.Tensor], *, path: Path) -> dict[str, Any]:
    """The ``_build_sam`` arguments that match a SAM state dict, read from its tensor shapes.

    ``embed_dim`` is the patch embedding's width, ``depth`` the number of encoder blocks, the head
    width the relative-position tables' width (heads = embed_dim / head width), and global-attention
    blocks are those whose relative-position table spans the whole 64×64 token grid rather than a
    14×14 window.
    """
    key = "image_encoder.patch_embed.proj.weight"
    if key not in sd or "image_encoder.pos_embed" not in sd:
        raise ForcompError(
            f"{path} is not a segment-anything checkpoint (no {key!r}); expected an official "
            f"sam_vit_*.pth file from {SAM_SOURCE}"
        )
    embed_dim, _, patch, _ = sd[key].shape
    grid = int(sd["image_encoder.pos_embed"].shape[1])
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ForcompError(f"{path}: encoder blocks are missing or not numbered 0..N-1")
    window = 14
    head_dim = int(sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    global_idx = [
        i for i in blocks if int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) != 2 * window - 1
    ]
    if patch != 16 or grid * patch != 1024 or embed_dim % head_dim:
        raise ForcompError(
            f"{path}: unsupported SAM geometry (patch {patch}, input {grid * patch}, width {embed_dim}, "
            f"head width {head_dim}); forcomp builds SAM with 16 px patches at 1024 px"
        )
    return {
        "encoder_embed_dim": int(embed_dim),
        "encoder_depth": len(blocks),
        "encoder_num_heads": int(embed_dim // head_dim),
        "encoder_global_attn_indexes": global_idx,
    }


def load_sam(path: Path) -> Any:
    """Build the SAM architecture matching ``path`` and load it (``weights_only=True``), in eval mode."""
    try:
        from segment_anything.build_sam import _build_sam
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the sam backend needs segment-anything: pip install 'forcomp[sam]'") from e
    sd = load_state_dict_file(path, what="SAM checkpoint")
    cfg = infer_sam_config(sd, path=path)
    model = _build_sam(**cfg, checkpoint=None)  # checkpoint=None: SAM's own loader uses a bare torch.load
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ForcompError(f"{path} does not fit the SAM architecture: {str(e).splitlines()[0]}") from e
    log.info(
        "loaded SAM %s (width %d, depth %d, heads %d)",
        path.name,
        cfg["encoder_embed_dim"],
        cfg["encoder_depth"],
        cfg["encoder_num_heads"],
    )
    return model.eval()


def find_sam_checkpoint(weights_dir: Path, model: str = "auto") -> Path:
    """``model`` is ``auto`` (largest usable: H, L, B), ``vit_h``/``vit_l``/``vit_b``, or a file name.

    A git-lfs pointer or an empty file under a checkpoint's name is skipped by ``auto``.
    """
    if model == "auto":
        found: list[str] = []
        for name in SAM_CHECKPOINTS.values():
            if (weights_dir / name).is_file():
                if (problem := file_problem(weights_dir / name)) is None:
                    return weights_dir / name
                found.append(problem)
        if found:
            raise WeightsNotFoundError(
                f"no usable SAM checkpoint: {'; '.join(found)}. Get it from: {SAM_SOURCE}"
            )
        want = ", ".join(str(weights_dir / n) for n in SAM_CHECKPOINTS.values())
        raise WeightsNotFoundError(
            f"no SAM checkpoint found: expected one of {want}. Put one there (or pass --weights DIR / "
            f"set ${ENV_VAR}). Get it from: {SAM_SOURCE}"
        )
    name = SAM_CHECKPOINTS.get(model, model)
    if Path(name).name != name:
        raise ValueError(
            f"sam model must be auto, vit_h, vit_l, vit_b or a file name in weights/, got {model!r}"
        )
    return find_weight(weights_dir, name, what="SAM checkpoint", source=SAM_SOURCE)


# ----------------------------------------------------------------------------- mask clean-up


def clean_mask(mask: np.ndarray, *, min_region_ratio: float = 0.001, keep_frac: float = 0.25) -> np.ndarray:
    """Remove holes and specks smaller than ``min_region_ratio`` of the image; keep the main object."""
    from segment_anything.utils.amg import remove_small_regions

    from forcomp.offline.segmenters.classical import keep_main_object

    area = min_region_ratio * mask.size
    if area >= 1:
        mask, _ = remove_small_regions(mask, area, mode="holes")
        mask, _ = remove_small_regions(mask, area, mode="islands")
    if not mask.any():
        return mask.astype(bool)
    return keep_main_object(mask, keep_frac=keep_frac)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def dedupe(cands: list[MaskCandidate], iou: float) -> list[MaskCandidate]:
    """Best first; drop a candidate whose mask overlaps a better one by more than ``iou``."""
    kept: list[MaskCandidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        if all(mask_iou(c.mask, k.mask) <= iou for k in kept):
            kept.append(c)
    return kept


# ----------------------------------------------------------------------------- encoder memory


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


# ----------------------------------------------------------------------------- segmenter


def prompt_boxes(h: int, w: int, prompts: Sequence[str], center_frac: float) -> np.ndarray:
    """XYXY boxes for the weight-free prompts: ``center`` (middle ``center_frac`` of each side), ``image``."""
    out = []
    for p in prompts:
        if p == "center":
            mx, my = w * (1 - center_frac) / 2, h * (1 - center_frac) / 2
            out.append([mx, my, w - mx, h - my])
        elif p == "image":
            out.append([0.0, 0.0, float(w), float(h)])
        else:
            raise ValueError(f"box prompt must be 'center' or 'image', got {p!r}")
    return np.asarray(out, np.float32)


class SamSegmenter:
    """SAM prompted with boxes (see module docstring).

    Args:
        predictor: the loaded model.
        weights_id: checkpoint file name, written to the index.
        prompts: weight-free box prompts, from ``center`` and ``image``.
        center_frac: side length of the central box as a share of the image side.
        max_candidates: candidates returned per image (best first).
        max_area_ratio: masks covering more of the image are dropped (a whole-image mask is no object).
        min_region_ratio, keep_frac: clean-up (see :func:`clean_mask`).
        dedupe_iou: candidates overlapping a better one by more than this are dropped.
    """

    name = "sam"

    def __init__(
        self,
        predictor: SamBoxPredictor,
        *,
        weights_id: str,
        prompts: Sequence[str] = ("center", "image"),
        center_frac: float = 0.7,
        max_candidates: int = 3,
        max_area_ratio: float = 0.9,
        min_region_ratio: float = 0.001,
        keep_frac: float = 0.25,
        dedupe_iou: float = 0.9,
    ) -> None:
        if not prompts or any(p not in ("center", "image") for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of 'center'/'image', got {prompts!r}")
        if not 0 < center_frac <= 1:
            raise ValueError(f"center_frac must be in (0, 1], got {center_frac}")
        if max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        if not 0 < max_area_ratio <= 1:
            raise ValueError(f"max_area_ratio must be in (0, 1], got {max_area_ratio}")
        if not 0 <= min_region_ratio < 0.5:
            raise ValueError(f"min_region_ratio must be in [0, 0.5), got {min_region_ratio}")
        if not 0 < dedupe_iou <= 1:
            raise ValueError(f"dedupe_iou must be in (0, 1], got {dedupe_iou}")
        self.predictor = predictor
        self.weights_id: str | None = weights_id
        self.prompts = tuple(prompts)
        self.center_frac = center_frac
        self.max_candidates = max_candidates
        self.max_area_ratio = max_area_ratio
        self.min_region_ratio = min_region_ratio
        self.keep_frac = keep_frac
        self.dedupe_iou = dedupe_iou

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def candidates_from_boxes(
        self,
        embedding: torch.Tensor,
        image_hw: tuple[int, int],
        boxes: np.ndarray,
        *,
        box_scores: Sequence[float] | np.ndarray | None = None,
        labels: Sequence[str | None] | None = None,
    ) -> list[list[MaskCandidate]]:
        """Per box: its cleaned masks (best of SAM's three first), scored by IoU × box score."""
        if len(boxes) == 0:
            return []
        masks, ious = self.predictor.predict_boxes(embedding, image_hw, boxes)
        h, w = image_hw
        out: list[list[MaskCandidate]] = []
        for b in range(len(boxes)):
            per_box = []
            for c in np.argsort(-ious[b]):
                m = clean_mask(masks[b, c], min_region_ratio=self.min_region_ratio, keep_frac=self.keep_frac)
                ratio = np.count_nonzero(m) / (h * w)
                if ratio == 0 or ratio > self.max_area_ratio:
                    continue
                score = float(np.clip(ious[b, c], 0.0, 1.0))
                if box_scores is not None:
                    score *= float(box_scores[b])
                per_box.append(MaskCandidate(mask=m, score=score, label=labels[b] if labels else None))
            out.append(per_box)
        return out

    def segment(self, images: Sequence[np.ndarray], classes: Sequence[str]) -> list[list[MaskCandidate]]:
        if not images:
            return []
        emb = self.predictor.embed(images)
        results = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            boxes = prompt_boxes(h, w, self.prompts, self.center_frac)
            per_box = self.candidates_from_boxes(emb[i], (h, w), boxes, labels=list(self.prompts))
            flat = [c for cands in per_box for c in cands]
            results.append(dedupe(flat, self.dedupe_iou)[: self.max_candidates])
        return results


def build_sam_segmenter(
    *,
    weights_dir: Path,
    device: str | None = None,
    model: str = "auto",
    encoder_batch_size: int | Literal["auto"] = "auto",
    amp: bool = True,
    **options: Any,
) -> SamSegmenter:
    """Load SAM once (``model``: ``auto`` = largest present, ``vit_h``/``vit_l``/``vit_b``, or a file name).

    Other ``options`` go to :class:`SamSegmenter` (``prompts``, ``max_candidates``...).
    """
    path = find_sam_checkpoint(Path(weights_dir), model)
    dev = resolve_device(device)
    predictor = SamBoxPredictor(load_sam(path), dev, encoder_batch_size=encoder_batch_size, amp=amp)
    log.info("sam segmenter: %s on %s", path.name, dev)
    return SamSegmenter(predictor, weights_id=path.name, **options)
