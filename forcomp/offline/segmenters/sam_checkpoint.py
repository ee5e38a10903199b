"""SAM checkpoints: find the official file under ``weights/``, infer its architecture, load it safely.

The architecture is inferred from the file's tensor shapes (embedding width, depth, heads, which
blocks attend globally), so any SAM-format state dict loads unchanged; the file is read with
:func:`forcomp.models.checkpoints.load_state_dict_file` (``weights_only=True``): a checkpoint
cannot run code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forcomp.errors import ForcompError, WeightsNotFoundError
from forcomp.models.checkpoints import load_state_dict_file, state_dict_mismatch
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
    problem = state_dict_mismatch(model, sd)
    if problem is not None:
        raise ForcompError(f"{path} does not fit the SAM architecture: {problem}")
    model.load_state_dict(sd, strict=True)
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
