"""Benchmark: images/s per stage of the model-based offline build (detect, segment, inpaint).

Runs forcomp's own backends, loaded through the registries from a weights directory, on
ImageNet-sized (500×375) images made from scikit-image's sample photos:

- detect: Grounding DINO (Swin-T + BERT-base, the ``grounding-dino-tiny`` architecture), prompted
  with each class's name and two WordNet parents;
- segment: SAM ViT-B (image encoder on the batch, then the detector's boxes; also SAM alone with
  its weight-free center/image box prompts);
- inpaint: LaMa big-lama (and, with ``--with-sd``, Stable Diffusion 2 inpainting, 25 steps).

When ``--weights DIR`` holds the real checkpoints they are used. Otherwise the models are built with
**random weights at their real sizes** (the real architectures: segment-anything's ViT-B,
transformers' Grounding DINO default config, an FFC-ResNet generator with big-lama's configuration
written here from the LaMa paper, diffusers' SD2-inpainting UNet/VAE/CLIP-H sizes), saved under the
official file names and loaded by forcomp exactly as real ones would be. Random weights change the
output, not the compute (detection boxes are capped at ``--max-detections`` so SAM's decoder does a
realistic amount of work). Output says which.

The SAM image-encoder batch is the one forcomp picks from the device's free memory (reported);
on CUDA the JSON also holds each stage's peak GPU memory (``torch.cuda.max_memory_allocated`` over
the stage's calls, resident models included).

Prints a table and writes ``benchmarks/results/offline.json``. On a CPU-only machine keep it small
(the default is 2 images); on a GPU use e.g. ``--images 64 --batch-size 16``.

    python benchmarks/offline.py [--images 2] [--batch-size 2] [--device cpu|cuda|all] \
        [--weights DIR] [--with-sd]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("offline-bench")


# ----------------------------------------------------------------------------- big-lama architecture
# FFC-ResNet generator (Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier
# Convolutions", 2022) with big-lama's configuration: 4-channel input (masked image + mask), 64 base
# channels, 3 downsamplings, 18 FFC residual blocks at 512 channels with 75% of the channels in
# the global (Fourier) branch, 3 upsamplings, sigmoid output. Random init; ~51M parameters.


class FourierUnit(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * cin, 2 * cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
        f = torch.cat([f.real, f.imag], 1)
        f = torch.relu(self.bn(self.conv(f)))
        re, im = f.chunk(2, 1)
        return torch.fft.irfftn(torch.complex(re, im), s=(h, w), dim=(-2, -1), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(cin, cout // 2, 1, bias=False), nn.BatchNorm2d(cout // 2), nn.ReLU()
        )
        self.fu = FourierUnit(cout // 2, cout // 2)
        self.conv2 = nn.Conv2d(cout // 2, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class FFCBlock(nn.Module):
    """Fast Fourier convolution + BN + ReLU on a (local, global) channel split."""

    def __init__(
        self, cin: int, cout: int, k: int, gin: float, gout: float, stride: int = 1, pad: int = 0
    ) -> None:
        super().__init__()
        self.in_g, self.out_g = int(cin * gin), int(cout * gout)
        in_l, out_l = cin - self.in_g, cout - self.out_g
        self.l2l = (
            nn.Conv2d(in_l, out_l, k, stride, pad, bias=False, padding_mode="reflect")
            if in_l and out_l
            else None
        )
        self.l2g = (
            nn.Conv2d(in_l, self.out_g, k, stride, pad, bias=False, padding_mode="reflect")
            if in_l and self.out_g
            else None
        )
        self.g2l = (
            nn.Conv2d(self.in_g, out_l, k, stride, pad, bias=False, padding_mode="reflect")
            if self.in_g and out_l
            else None
        )
        self.g2g = SpectralTransform(self.in_g, self.out_g) if self.in_g and self.out_g else None
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else None
        self.bn_g = nn.BatchNorm2d(self.out_g) if self.out_g else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xl, xg = x[:, : x.shape[1] - self.in_g], x[:, x.shape[1] - self.in_g :]
        outs = []
        if self.bn_l is not None:
            yl = torch.zeros(0)
            if self.l2l is not None:
                yl = self.l2l(xl)
            if self.g2l is not None:
                yl = yl + self.g2l(xg) if self.l2l is not None else self.g2l(xg)
            outs.append(torch.relu(self.bn_l(yl)))
        if self.bn_g is not None:
            yg = torch.zeros(0)
            if self.l2g is not None:
                yg = self.l2g(xl)
            if self.g2g is not None:
                yg = yg + self.g2g(xg) if self.l2g is not None else self.g2g(xg)
            outs.append(torch.relu(self.bn_g(yg)))
        return torch.cat(outs, 1)


class FFCResBlock(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.a = FFCBlock(dim, dim, 3, ratio, ratio, pad=1)
        self.b = FFCBlock(dim, dim, 3, ratio, ratio, pad=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class BigLama(nn.Module):
    """``model(image (B,3,H,W) in [0,1], mask (B,1,H,W) in {0,1}) -> (B,3,H,W)``, as big-lama.pt."""

    def __init__(self, ngf: int = 64, n_down: int = 3, n_blocks: int = 18, ratio: float = 0.75) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), FFCBlock(4, ngf, 7, 0.0, 0.0)]
        for i in range(n_down):
            cin, cout = ngf * 2**i, ngf * 2 ** (i + 1)
            layers.append(FFCBlock(cin, cout, 3, 0.0, ratio if i == n_down - 1 else 0.0, stride=2, pad=1))
        dim = ngf * 2**n_down
        layers += [FFCResBlock(dim, ratio) for _ in range(n_blocks)]
        for i in range(n_down):
            cin, cout = ngf * 2 ** (n_down - i), ngf * 2 ** (n_down - i - 1)
            layers += [
                nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Sigmoid()]
        self.generator = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = image * (1 - mask)
        pred = self.generator(torch.cat([masked, mask], 1))
        return mask * pred + (1 - mask) * image


# ----------------------------------------------------------------------------- random real-size weights


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def make_random_weights(wdir: Path, with_sd: bool) -> dict[str, Any]:
    """Real-size architectures with random weights, saved under the official names."""
    info: dict[str, Any] = {}
    torch.manual_seed(0)
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"]()
    torch.save(sam.state_dict(), wdir / "sam_vit_b_01ec64.pth")
    info["sam_vit_b_01ec64.pth"] = _n_params(sam)
    del sam

    lama = BigLama().eval()
    torch.jit.save(torch.jit.script(lama), str(wdir / "big-lama.pt"))
    info["big-lama.pt"] = _n_params(lama)
    del lama

    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    # Grounding DINO's default config is grounding-dino-tiny (Swin-T + BERT-base). The real BERT
    # vocabulary is not at hand: a character-level WordPiece vocabulary padded to BERT's 30522
    # entries keeps the embedding size real (prompts become longer token sequences: slightly more
    # text compute than the real tokenizer gives).
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = (
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", "'"]
        + list(chars)
        + [f"##{c}" for c in chars]
    )
    vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    det = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    d = wdir / "grounding-dino-tiny"
    det.save_pretrained(d)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tok).save_pretrained(d)
    info["grounding-dino-tiny"] = _n_params(det)
    del det

    if with_sd:
        from diffusers import (
            AutoencoderKL,
            DDIMScheduler,
            StableDiffusionInpaintPipeline,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
        alphabet = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
        cvocab: dict[str, int] = {}
        for c in alphabet:
            cvocab.setdefault(c, len(cvocab))
            cvocab.setdefault(c + "</w>", len(cvocab))
        cvocab["<|startoftext|>"] = len(cvocab)
        cvocab["<|endoftext|>"] = len(cvocab)
        ctok = CLIPTokenizer(vocab=cvocab, merges=[], model_max_length=77)
        # SD 2 inpainting sizes: UNet 320-640-1280-1280 with linear projections and 1024-d
        # cross attention (OpenCLIP ViT-H text encoder, 23 layers used), VAE 128-256-512-512.
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=9,
            out_channels=4,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
        )
        vae = AutoencoderKL(
            block_out_channels=[128, 256, 512, 512],
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            latent_channels=4,
            layers_per_block=2,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=1024,
                intermediate_size=4096,
                num_attention_heads=16,
                num_hidden_layers=23,
                hidden_act="gelu",
                projection_dim=1024,
                bos_token_id=cvocab["<|startoftext|>"],
                eos_token_id=cvocab["<|endoftext|>"],
                pad_token_id=cvocab["<|endoftext|>"],
            )
        )
        pipe = StableDiffusionInpaintPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text,
            tokenizer=ctok,
            scheduler=DDIMScheduler(steps_offset=1),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(wdir / "stable-diffusion-2-inpainting")
        info["stable-diffusion-2-inpainting"] = _n_params(unet) + _n_params(vae) + _n_params(text)
        del pipe, unet, vae, text
    return info


# ----------------------------------------------------------------------------- images


def make_images(n: int) -> tuple[list[np.ndarray], list[str]]:
    spec = importlib.util.spec_from_file_location("_forcomp_bench_build", ROOT / "benchmarks" / "build.py")
    assert spec and spec.loader
    build_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_bench)
    tmp = Path(tempfile.mkdtemp(prefix="forcomp-offline-imgs-"))
    try:
        build_bench.make_imagenet_like(tmp, n)
        files = sorted(tmp.glob("*/*.JPEG"))
        from PIL import Image

        return [np.asarray(Image.open(f).convert("RGB")) for f in files], [f.parent.name for f in files]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, device: str) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def bench_device(
    device: str, wdir: Path, images: list[np.ndarray], classes: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    from forcomp.offline.inpainters import INPAINTERS
    from forcomp.offline.segmenters import SEGMENTERS

    rows: list[dict[str, Any]] = []
    on_cuda = device.startswith("cuda")
    peaks: dict[str, int] = {}

    def stage_timed(key: str, fn: Any) -> tuple[Any, float]:
        """``timed``, also keeping the stage's peak GPU memory over all its calls."""
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        out, dt = timed(fn, device)
        if on_cuda:
            peaks[key] = max(peaks.get(key, 0), torch.cuda.max_memory_allocated(device))
        return out, dt

    def row(stage: str, model: str, seconds: float, n: int, note: str = "", peak: str | None = None) -> None:
        r: dict[str, Any] = {
            "device": device,
            "stage": stage,
            "model": model,
            "images": n,
            "seconds": seconds,
            "img_per_s": n / seconds,
            "note": note,
        }
        if on_cuda and peak is not None:
            r["peak_gpu_mib"] = round(peaks.get(peak, 0) / 2**20, 1)
        rows.append(r)
        log.info("%s %-8s %-28s %.3f img/s", device, stage, model, n / seconds)

    grounded = SEGMENTERS.build(
        "grounded-sam",
        weights_dir=wdir,
        device=device,
        sam="vit_b",
        max_detections=args.max_detections,
        box_threshold=0.0,
    )
    # the SAM encoder batch: forcomp's own choice from the free memory (encoder_batch_size="auto");
    # without --batch-size the pipeline batch is that too (at most the number of images)
    sam_batch = grounded.sam.predictor.encoder_batch_size
    bs = args.batch_size or min(sam_batch, len(images))
    grounded.detector.batch_size = bs
    batches = [(images[i : i + bs], classes[i : i + bs]) for i in range(0, len(images), bs)]
    sam_only = SEGMENTERS.build("sam", weights_dir=wdir, device=device, model="vit_b")
    sam_only.predictor = grounded.sam.predictor  # one SAM in memory for both
    lama = INPAINTERS.build("lama", weights_dir=wdir, device=device, max_batch=bs)

    # warm-up on one image (kernel selection, allocator), not timed
    one = [images[0]]
    grounded.segment(one, classes[:1])
    lama.inpaint(one, [np.zeros(images[0].shape[:2], bool)])

    t_det = t_emb = t_dec = t_sam = t_lama = 0.0
    masks: list[np.ndarray] = []
    for imgs, cls in batches:
        prompts = [grounded.prompts(c) for c in cls]
        dets, dt = stage_timed("detect", lambda: grounded.detector.detect(imgs, prompts))  # noqa: B023
        t_det += dt
        emb, dt = stage_timed("encoder", lambda: grounded.sam.predictor.embed(imgs))  # noqa: B023
        t_emb += dt

        def decode(imgs: list[np.ndarray], dets: list[Any], emb: torch.Tensor) -> list[np.ndarray]:
            out = []
            for i, (im, d) in enumerate(zip(imgs, dets, strict=True)):
                per_box = grounded.sam.candidates_from_boxes(
                    emb[i], im.shape[:2], d.boxes, box_scores=d.scores
                )
                flat = [c for cs in per_box for c in cs]
                out.append(flat[0].mask if flat else np.zeros(im.shape[:2], bool))
            return out

        ms, dt = stage_timed("boxes", lambda: decode(imgs, dets, emb))  # noqa: B023
        t_dec += dt
        masks += ms
        _, dt = stage_timed("sam", lambda: sam_only.segment(imgs, cls))  # noqa: B023
        t_sam += dt
    n = len(images)
    # Masks from random weights can be empty or huge; inpaint a realistic hole where they are.
    holes = []
    for im, m in zip(images, masks, strict=True):
        ratio = m.mean()
        if not 0.02 <= ratio <= 0.6:
            h, w = im.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            m = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
        holes.append(m)
    for i in range(0, n, bs):
        _, dt = stage_timed("lama", lambda: lama.inpaint(images[i : i + bs], holes[i : i + bs]))  # noqa: B023
        t_lama += dt

    enc_note = f"image encoder, batch {min(bs, sam_batch)} (forcomp's choice from free memory: {sam_batch})"
    row(
        "detect", "grounding-dino-tiny", t_det, n, f"prompts: class + 2 WordNet parents; batch {bs}", "detect"
    )
    row("segment", "sam_vit_b (encoder)", t_emb, n, enc_note, "encoder")
    row(
        "segment",
        "sam_vit_b (boxes)",
        t_dec,
        n,
        f"decode <= {args.max_detections} detector boxes/image + clean-up",
        "boxes",
    )
    row(
        "segment",
        "sam_vit_b (sam backend)",
        t_sam,
        n,
        "encoder + center/image box prompts, 3 candidates",
        "sam",
    )
    row("inpaint", "big-lama", t_lama, n, f"full resolution, batch {bs}", "lama")
    if args.with_sd:
        sd = INPAINTERS.build("sd", weights_dir=wdir, device=device, steps=args.sd_steps, max_batch=bs)
        sd.inpaint(one, [holes[0]])
        t_sd = 0.0
        for i in range(0, n, bs):
            _, dt = stage_timed("sd", lambda: sd.inpaint(images[i : i + bs], holes[i : i + bs]))  # noqa: B023
            t_sd += dt
        row(
            "inpaint",
            "stable-diffusion-2-inpainting",
            t_sd,
            n,
            f"{args.sd_steps} steps at 512, batch {bs}",
            "sd",
        )
    # end to end (stages in sequence, excluding decode/encode of files): 1 / sum of per-image times
    e2e_g = t_det + t_emb + t_dec + t_lama
    e2e_s = t_sam + t_lama
    row("total", "grounded-sam + lama", e2e_g, n, "detect + SAM encoder + boxes + LaMa")
    row("total", "sam + lama", e2e_s, n, "SAM backend + LaMa")
    for r in rows:
        r["sam_encoder_batch"] = sam_batch
        r["batch_size"] = bs
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per pipeline batch (default: the SAM encoder batch forcomp picks from free memory)",
    )
    p.add_argument("--device", default="all", help="cpu, cuda, or all (cpu, plus cuda when available)")
    p.add_argument("--weights", type=Path, default=None, help="use real checkpoints from this directory")
    p.add_argument("--with-sd", action="store_true", help="also time the diffusion inpainter (slow on CPU)")
    p.add_argument("--sd-steps", type=int, default=25)
    p.add_argument("--max-detections", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "offline.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    needed = ["sam_vit_b_01ec64.pth", "big-lama.pt", "grounding-dino-tiny/config.json"]
    if args.with_sd:
        needed.append("stable-diffusion-2-inpainting/model_index.json")
    tmp = Path(tempfile.mkdtemp(prefix="forcomp-offline-weights-"))
    try:
        if args.weights and all((args.weights / f).exists() for f in needed):
            wdir, weights_note, sizes = args.weights, f"real checkpoints from {args.weights}", {}
        else:
            if args.weights:
                log.info("not all of %s are in %s: using random weights", needed, args.weights)
            t0 = time.perf_counter()
            sizes = make_random_weights(tmp, args.with_sd)
            wdir, weights_note = tmp, "RANDOM weights, real architectures and sizes (no checkpoints at hand)"
            log.info("built random-weight models in %.0fs: %s", time.perf_counter() - t0, sizes)
        images, classes = make_images(args.images)
        devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
        devices = [d for d in devices if not d.startswith("cuda") or torch.cuda.is_available()]
        rows = []
        for dev in devices:
            rows += bench_device(dev, wdir, images, classes, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}" + (
        f", {gpu}" if gpu else ", no GPU"
    )
    print(f"\nforcomp offline build, per stage ({machine}); weights: {weights_note}")
    batch = sorted({(r["device"], r["batch_size"], r["sam_encoder_batch"]) for r in rows})
    batch_text = ", ".join(f"{d}: batch {b} (SAM encoder batch picked: {s})" for d, b, s in batch)
    print(f"{len(images)} images of 500x375, {batch_text}, torch {torch.__version__}\n")
    print("| device | stage | model | img/s | s/img | peak GPU MiB | note |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['device']} | {r['stage']} | {r['model']} | {r['img_per_s']:.3f} "
            f"| {1 / r['img_per_s']:.2f} | {r.get('peak_gpu_mib', '-')} | {r['note']} |"
        )
    result = {
        "benchmark": "offline build per stage (benchmarks/offline.py)",
        "weights": weights_note,
        "parameters": sizes,
        "machine": machine,
        "torch": torch.__version__,
        "images": len(images),
        "image_size": [500, 375],
        "batch_size": args.batch_size or "auto (the SAM encoder batch forcomp picks, per device)",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
