"""Tiny random-weight versions of the real model architectures, saved as forcomp expects them.

Nothing here downloads anything: SAM is segment-anything's own ``_build_sam`` with a tiny image
encoder, the detectors are transformers' real classes with tiny configs and a character-level
tokenizer, the diffusion pipeline is diffusers' Stable Diffusion inpainting pipeline built from
tiny components (as diffusers' own fast tests do), and LaMa is a tiny TorchScript module with
big-lama's call signature: either painting holes with a known colour (proof that it ran) or
filling them from their known context (:class:`DiffusionLama`, for what a real inpainter copies).
The tiny SAM has a global-attention block like the real encoders (a 64×64-token attention map).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LAMA_FILL = (1.0, 0.0, 1.0)  # the tiny LaMa paints holes magenta: proof that it ran


def make_sam(path: Path, *, depth: int = 2, embed_dim: int = 32, heads: int = 2, global_attn=(1,)) -> Path:
    """A tiny SAM (real architecture, random weights) saved as a state dict at ``path``."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    model = _build_sam(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=list(global_attn),
        checkpoint=None,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _char_vocab() -> list[str]:
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"]
        + list(chars)
        + [f"##{c}" for c in chars]
    )


def make_grounding_dino(path: Path) -> Path:
    """A tiny Grounding DINO (Swin + BERT, random weights) with processor files, via save_pretrained."""
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    vocab = _char_vocab()
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    proc = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tok,
    )
    backbone = SwinConfig(
        window_size=7,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        image_size=64,
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    cfg = GroundingDinoConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        num_queries=20,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        backbone_config=backbone,
        max_text_len=128,
        text_config={
            "model_type": "bert",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "max_position_embeddings": 128,
            "vocab_size": len(vocab),
        },
    )
    model = GroundingDinoForObjectDetection(cfg).eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def _clip_tokenizer(max_len: int):
    from transformers import CLIPTokenizer

    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to chr(256 + n).
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    # Special ids must not be 0: OWLv2 treats a query whose first token is 0 as padding.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_len), len(vocab)


def make_owlv2(path: Path) -> Path:
    """A tiny OWLv2 (random weights) with processor files, via save_pretrained."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(0)
    tok, n_vocab = _clip_tokenizer(16)
    proc = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok
    )
    cfg = Owlv2Config(
        text_config={
            "vocab_size": n_vocab,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": n_vocab - 2,
            "eos_token_id": n_vocab - 1,
            "pad_token_id": n_vocab - 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    model = Owlv2ForObjectDetection(cfg).eval()
    # Random box deltas are often degenerate (sub-pixel boxes); zero them so each query predicts its
    # own patch-sized box from the model's grid prior: real boxes for the wiring tests.
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


class TinyLama(nn.Module):
    """big-lama's call signature; paints the hole with ``LAMA_FILL`` and records the batch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 3, padding=1)
        self.register_buffer("fill", torch.tensor(LAMA_FILL).view(1, 3, 1, 1))
        self.calls = 0
        self.last_batch = 0
        self.last_h = 0
        self.last_w = 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_batch = image.shape[0]
        self.last_h = image.shape[2]
        self.last_w = image.shape[3]
        x = torch.cat([image * (1 - mask), mask], 1)
        pred = self.fill + 0.0 * self.conv(x)
        return image * (1 - mask) + pred * mask


def make_lama(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(TinyLama().eval()), str(path))
    return path


class DiffusionLama(nn.Module):
    """big-lama's call signature; fills the hole from its known context like an inpainter does.

    Iterated masked mean diffusion: each step, every unknown pixel next to a known one takes the
    mean of its known 3×3 neighbours and becomes known. Whatever the mask marks as known (padding
    included) flows into the hole, so a leak of object colour into the fill is measurable.
    """

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = (mask < 0.5).to(image.dtype)
        x = image * known
        w = known
        for _ in range(image.shape[2] + image.shape[3]):
            if bool((w > 0).all()):
                break
            num = F.avg_pool2d(x * w, 3, 1, 1)
            den = F.avg_pool2d(w, 3, 1, 1)
            grow = (den > 0) & (w == 0)
            x = torch.where(grow, num / den.clamp_min(1e-12), x)
            w = torch.where(grow, torch.ones_like(w), w)
        return image * known + x * (1 - known)


def make_diffusion_lama(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(DiffusionLama().eval()), str(path))
    return path


def make_sd_inpaint(path: Path) -> Path:
    """A tiny Stable Diffusion inpainting pipeline (9-channel UNet), via save_pretrained (safetensors)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=8,
    )
    tok, n_vocab = _clip_tokenizer(77)
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=n_vocab - 2,
            eos_token_id=n_vocab - 1,
            pad_token_id=n_vocab - 1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=n_vocab,
            max_position_embeddings=77,
        )
    )
    pipe = StableDiffusionInpaintPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- shared test weights

SAM_FILE = "sam_vit_b_01ec64.pth"
GDINO_DIR = "grounding-dino-tiny"
OWL_DIR = "owlv2-base-patch16-ensemble"
LAMA_FILE = "big-lama.pt"
SD_DIR = "stable-diffusion-2-inpainting"

BUILDERS = {
    # one windowed and one global-attention block, as the real encoders interleave them
    SAM_FILE: lambda p: make_sam(p, global_attn=(1,)),
    GDINO_DIR: make_grounding_dino,
    OWL_DIR: make_owlv2,
    LAMA_FILE: make_lama,
    SD_DIR: make_sd_inpaint,
}
_SHARED: list[Path] = []


def weights_with(factory, dest: Path, *names: str) -> Path:
    """``dest`` holding links to the named tiny checkpoints, each built once per test session.

    ``factory`` is pytest's ``tmp_path_factory``.
    """
    # Rebuilt when the folder is gone: several pytest sessions in one process (mutmut) or another
    # session's clean-up of old temporary folders can remove it between tests.
    if not _SHARED or not _SHARED[0].is_dir():
        _SHARED[:] = [factory.mktemp("tiny-weights")]
    shared = _SHARED[0]
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (shared / name).exists():
            BUILDERS[name](shared / name)
        (dest / name).symlink_to(shared / name)
    return dest


class RedVsGreen(nn.Module):
    """A 2-class "classifier": class 0 is likely when the input is redder than it is green."""

    pretrained_cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "input_size": (3, 32, 32)}

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.inputs_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs_seen += x.shape[0]
        red_minus_green = x[:, 0].mean((1, 2)) - x[:, 1].mean((1, 2))
        return torch.stack([self.scale * red_minus_green, torch.zeros_like(red_minus_green)], 1)


def red_vs_green() -> nn.Module:
    return RedVsGreen()
