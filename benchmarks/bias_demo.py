"""Controlled experiment: does forcomp training reduce background, center and size bias?

1. Generate a synthetic dataset with known shortcuts (``shortcut_data.py``): in train, each class
   mostly sits on its own kind of background, near the centre, at a typical size; a val split is
   drawn the same way (new images); the test split breaks all three shortcuts.
2. Build the cache with ``forcomp build`` (default weight-free backends): train split from the
   train images, val split from the val images (the bias metrics run on it: its backgrounds
   correlate with the class, as ImageNet's do — on shortcut-free images background robustness
   has nothing to detect).
3. Train the same small model (a small CNN and a tiny torchvision ViT) (a) plainly on the train
   images and (b) on forcomp recombinations of the train cache, over several seeds; both arms with
   the same RandomResizedCrop + flip recipe (ForComp fuses the crop into the recombination).
4. Report accuracy on the shortcut-free test split and the four bias metrics (+ BG-gap),
   mean ± std over seeds: a table on stdout, JSON and a plot in ``--out``.

    python benchmarks/bias_demo.py                # default: <= 15 min on 2 CPU cores
    python benchmarks/bias_demo.py --quick        # CI-sized smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from shortcut_data import SHAPES, make_split  # noqa: E402

import forcomp  # noqa: E402
from forcomp.offline.config import BuildConfig  # noqa: E402
from forcomp.offline.entry import build_cache  # noqa: E402
from forcomp.recombine.params import CROP_TRIES, RecombineConfig, sample_crop  # noqa: E402

log = logging.getLogger("bias_demo")


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2·width, 4·width channels), global average pooling, a linear head."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def make_model(arch: str, num_classes: int, size: int) -> nn.Module:
    if arch == "cnn":
        return SmallCNN(num_classes)
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=size,
        patch_size=size // 6,  # a 6x6 token grid
        num_layers=3,
        num_heads=4,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=num_classes,
    )


def load_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of an ImageFolder as a uint8 (N, 3, H, W) tensor and labels (tiny data: fits in memory)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            xs.append(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train(model: nn.Module, batches, steps: int, lr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _, (x, y) in zip(range(steps), batches, strict=False):  # batches is endless
        loss = F.cross_entropy(model(_flip(x, g)), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()


def _random_resized_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-sample RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) of a uint8 batch, torchvision's
    sampling (forcomp's ``sample_crop``), so the plain arm trains with the same recipe as ForComp's
    train split, which fuses this crop into the recombination."""
    B, _, H, W = x.shape
    cfg = RecombineConfig(crop_scale=(0.08, 1.0), hflip_prob=0.0)
    u = torch.rand(B, 2 * CROP_TRIES + 2, generator=g)
    box = sample_crop(torch.tensor([[H, W]] * B), cfg, u, (H, W))
    out = torch.empty(B, 3, H, W)
    for i, (x0, y0, w, h) in enumerate(torch.stack(box[:4], 1).long().tolist()):
        crop = x[i : i + 1, :, y0 : y0 + h, x0 : x0 + w].float()
        out[i] = F.interpolate(crop, size=(H, W), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.clamp_(0, 255) / 255


def plain_batches(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
    """The plain arm: the source images with the same RandomResizedCrop (flip: in ``train``)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i : i + batch]
            yield _random_resized_crop(x[idx], g), y[idx]


def recombine_settings(size: int) -> dict:
    """ForNet's defaults are for 224 px canvases: feather the edge proportionally on smaller ones."""
    return {"mask_smoothing_sigma": 4.0 * size / 224}


def forcomp_batches(cache: Path, size: int, batch: int, seed: int):
    ds = forcomp.ForComp(
        cache,
        split="train",
        size=size,
        background="all",
        seed=seed,
        hflip_prob=0.0,
        **recombine_settings(size),
    )  # the train split's fused RandomResizedCrop is the recipe both arms share; ``train`` flips both
    epoch = 0
    while True:
        ds.epoch = epoch
        yield from ds.loader(batch, shuffle=True, drop_last=True, num_workers=0)
        epoch += 1


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = 0
    for i in range(0, len(x), 256):
        correct += int((model(x[i : i + 256].float() / 255).argmax(1) == y[i : i + 256]).sum())
    return correct / len(x)


DEFAULT_LR = {"cnn": 3e-3, "vit": 3e-4}  # at 3e-3 the tiny ViT does not even fit its train split

HEADLINES = (
    "test_acc",
    "accuracy",
    "background_robustness",
    "bg_gap",
    "foreground_focus",
    "center_bias",
    "size_bias",
)


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    data = out / "data"
    t0 = time.perf_counter()
    if not (data / "train").exists():
        make_split(data, "train", args.per_class, args.size, seed=0)
        make_split(data, "test", args.test_per_class, args.size, seed=0)
        make_split(data, "val", args.test_per_class, args.size, seed=0)
    cache = out / "cache"
    for split, folder in (("train", data / "train"), ("val", data / "val")):
        s = build_cache(
            folder,
            cache,
            BuildConfig(split=split, segmenter="classical", inpainter="telea", workers=args.workers),
        )
        log.info("cache %s: %s", split, s.format().splitlines()[1].strip())
    t_build = time.perf_counter() - t0
    xtr, ytr = load_folder(data / "train")
    xte, yte = load_folder(data / "test")
    results: dict = {"runs": []}
    for arch in args.archs:
        for mode in ("plain", "forcomp"):
            for seed in range(args.seeds):
                torch.manual_seed(seed)  # the demo script owns its process: model init is seeded here
                model = make_model(arch, len(SHAPES), args.size)
                batches = (
                    plain_batches(xtr, ytr, args.batch_size, seed)
                    if mode == "plain"
                    else forcomp_batches(cache, args.size, args.batch_size, seed)
                )
                t1 = time.perf_counter()
                train(model, batches, args.steps, args.lr or DEFAULT_LR[arch], seed)
                t_train = time.perf_counter() - t1
                if seed == 0:  # kept for `forcomp evaluate --model benchmarks/bias_demo_models.py:...`
                    (out / "models").mkdir(parents=True, exist_ok=True)
                    torch.save(model.state_dict(), out / "models" / f"{arch}_{mode}.pt")
                report = forcomp.evaluate(
                    model,
                    cache,
                    split="val",
                    size=args.size,
                    normalize=None,
                    batch_size=128,
                    seed=0,
                    methods=("input_x_gradient",),
                    recombine=recombine_settings(args.size),
                )
                row = {
                    "arch": arch,
                    "mode": mode,
                    "seed": seed,
                    "train_s": t_train,
                    "test_acc": accuracy(model, xte, yte),
                    "accuracy": report["accuracy"],
                    **{k: report[k]["score"] for k in HEADLINES[2:]},
                }
                log.info("%s", row)
                results["runs"].append(row)
    results["summary"] = summarise(results["runs"])
    results["settings"] = {
        k: (os.path.relpath(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    }
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.system()}"
    results["build_s"] = t_build
    results["total_s"] = time.perf_counter() - t0
    return results


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for r in runs:
        summary.setdefault(f"{r['arch']}/{r['mode']}", []).append(r)
    out = {}
    for key, rs in summary.items():
        out[key] = {}
        for h in HEADLINES:
            vals = [float(r[h]) for r in rs]
            out[key][h] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
    return out


def format_table(summary: dict) -> str:
    cols = HEADLINES
    head = f"| {'model / training':<18} | " + " | ".join(f"{c:>22}" for c in cols) + " |"
    sep = "|" + "-" * 20 + "|" + "|".join("-" * 24 for _ in cols) + "|"
    lines = [head, sep]
    for key, v in summary.items():
        lines.append(
            f"| {key:<18} | "
            + " | ".join(f"{v[c]['mean']:>13.3f} ± {v[c]['std']:<6.3f}" for c in cols)
            + " |"
        )
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("test_acc", "background_robustness", "center_bias", "size_bias", "foreground_focus")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2))
    keys = list(summary)
    for ax, m in zip(axes, metrics, strict=True):
        means = [summary[k][m]["mean"] for k in keys]
        stds = [summary[k][m]["std"] for k in keys]
        colours = ["#888888" if k.endswith("plain") else "#2a7ab0" for k in keys]
        ax.bar(range(len(keys)), means, yerr=stds, color=colours, capsize=3)
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.suptitle("plain (grey) vs forcomp (blue) training, mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/bias_demo"))
    ap.add_argument("--quick", action="store_true", help="CI-sized: tiny data, 1 seed, few steps")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default: 3e-3 CNN, 3e-4 ViT: where each fits its plain train split)",
    )
    ap.add_argument("--archs", nargs="+", default=["cnn", "vit"], choices=["cnn", "vit"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "bias_demo.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.per_class, args.test_per_class, args.steps = 2, 24, 12, 20
        args.json = args.out / "bias_demo.json"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(args)
    table = format_table(res["summary"])
    print(table)
    print(f"machine: {res['machine']}; build {res['build_s']:.0f}s, total {res['total_s']:.0f}s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    plot(res["summary"], args.out / "bias_demo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
