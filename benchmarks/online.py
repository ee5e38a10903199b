"""Benchmark: online recombination throughput, forcomp vs a ForNet-equivalent per-sample PIL pipeline.

Every pipeline produces the same training distribution: ForNet's paste on the full-resolution
background (``paste_pre_transform=True``), then RandomResizedCrop(224) + flip + normalize.

(a) ``ForNet __getitem__``: a reproduction of ForNet's per-sample ``__getitem__`` (PIL decode,
    resize, Gaussian-feathered alpha paste on the full-size background, then torchvision's
    RandomResizedCrop(224) + flip + normalize), in a DataLoader: the reference of every ratio.
(0) ``ImageFolder``: plain ``ImageFolder`` over the same backgrounds + RandomResizedCrop(224) +
    flip + normalize: what training without recombination costs.
(b) ``forcomp fast``: ``ForComp(split="train", size=224).loader(...)`` with the crop and flip fused
    into the recombination (each pixel resampled once from the full-resolution parts); on a CPU
    device the workers paste per batch, then the main process normalises.
(c) ``forcomp per-sample``: ``ForComp(size=None, transform=<the same v2 transform as (a)>)`` in a
    DataLoader (ImageFolder's contract).
Each on one thread (no workers, ``torch.set_num_threads(1)``) and with ``--workers`` DataLoader
workers. Plus the worker side alone (read, decode, crop, collate: what feeds a GPU; and with the
paste: what a CPU worker does), one thread; the kernel alone on one 256-image 224² batch; and
single-thread costs of each stage. Same synthetic cache (ImageNet-sized 500x375 backgrounds),
medians over repeats. Prints a table and writes ``benchmarks/results/online.json``.

    python benchmarks/online.py [--items 256] [--batch 64] [--workers 2] [--repeats 3] [--quick]

``--quick`` (128 items unless ``--items`` is given, no kernel-only rows) takes about half a minute
per repeat on 2 cores.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from forcomp import ForComp
from forcomp.cache.images import decode_background, decode_foreground
from forcomp.cache.reader import CacheReader
from forcomp.recombine.functional import composite
from forcomp.recombine.params import RecombineConfig, sample_params
from forcomp.recombine.transform import collate_parts

REF = "ForNet __getitem__ (reproduction)"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def make_cache(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ratios = {}
    for i in range(n):
        cls = f"n{(i % 10) + 1:08d}"
        w, h = 500, 375
        bg = (rng.uniform(0, 255, (h // 8, w // 8, 3))).astype(np.uint8)
        bgimg = Image.fromarray(bg).resize((w, h), Image.BICUBIC)
        fw, fh = int(rng.integers(120, 300)), int(rng.integers(100, 260))
        yy, xx = np.mgrid[0:fh, 0:fw]
        alpha = (((xx - fw / 2) / (fw / 2)) ** 2 + ((yy - fh / 2) / (fh / 2)) ** 2 <= 1).astype(
            np.uint8
        ) * 255
        rgba = np.dstack([rng.uniform(0, 255, (fh, fw, 3)).astype(np.uint8), alpha])
        for kind, img, ext in (
            ("foregrounds", Image.fromarray(rgba, "RGBA"), "WEBP"),
            ("backgrounds", bgimg, "JPEG"),
        ):
            d = root / "train" / kind / cls
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"img{i:05d}.{ext}", quality=90)
        ratios[f"{cls}/img{i:05d}.JPEG"] = float((alpha > 0).sum()) / (w * h)
    (root / "fg_bg_ratios_train.json").write_text(json.dumps(ratios))
    return root


class PILRecombine(Dataset):
    """ForNet-style per-sample recombination (background 'all'), written for this benchmark."""

    def __init__(self, cache: Path) -> None:
        self.reader = CacheReader(cache, "train")
        self.cfg = RecombineConfig()
        self.tf = v2_train_transform()

    def __len__(self) -> int:
        return len(self.reader.fg)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([i, os.getpid()])
        fg = Image.open(io.BytesIO(self.reader.fg_bytes(i))).convert("RGBA")
        j = int(rng.integers(len(self.reader.bg)))
        bg = Image.open(io.BytesIO(self.reader.bg_bytes(j))).convert("RGB")
        fr, br = float(self.reader.fg_ratio[i]), float(self.reader.bg_ratio[j])
        fill = np.asarray(fg.split()[-1]).mean() / 255
        lo, hi = min(fr, br), max(fr, br)
        scale = rng.uniform(lo * 0.7, hi * 1.3) / fill
        area = bg.size[0] * bg.size[1]
        gw = max(1, round(np.sqrt(area * scale * fg.size[0] / fg.size[1])))
        gh = max(1, round(np.sqrt(area * scale * fg.size[1] / fg.size[0])))
        fg = fg.resize((gw, gh))
        x = round(rng.uniform(0, 1) * (bg.size[0] - gw))
        y = round(rng.uniform(0, 1) * (bg.size[1] - gh))
        m = fg.split()[-1].filter(ImageFilter.GaussianBlur((rng.uniform() * 0.9 + 0.1) * 4.0))
        m = m.point(lambda p: 2 * p - 255 if p > 128 else 0)
        bg.paste(fg.convert("RGB"), (x, y), m)
        return self.tf(bg), 0


def packed_copy(cache: Path) -> Path:
    """A copy of the cache with its packed form (``forcomp pack``): QOI foregrounds, one data file."""
    import shutil

    from forcomp.cache.packing import pack_split

    dst = cache.parent / (cache.name + "_packed")
    if not dst.exists():
        shutil.copytree(cache, dst)
        pack_split(dst, "train")
    return dst


def v2_train_transform() -> v2.Compose:
    """ForNet's recipe after the paste: RandomResizedCrop(224) + flip + normalize (PIL in)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN.flatten().tolist(), STD.flatten().tolist()),
        ]
    )


def stage_costs(cache: Path, n: int = 64, repeats: int = 3) -> dict[str, float]:
    """Single-thread milliseconds per image of each stage, to explain the pipelines' ratios."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reader = CacheReader(cache, "train")
        fgb = [reader.fg_bytes(i) for i in range(min(n, len(reader.fg)))]
        bgb = [reader.bg_bytes(i) for i in range(min(n, len(reader.bg)))]
        pil = PILRecombine(cache)
        ds = ForComp(cache, "train", size=224, background="all", seed=0)
        per_sample = ForComp(cache, "train", size=None, background="all", seed=0)
        samples = [ds.load_parts(i) for i in range(n)]
        parts = collate_parts(samples)
        rec = ds.recombine
        params = rec.make_params(parts)

        def ms(fn) -> float:
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return 1000 * statistics.median(times) / n

        return {
            "decode fg+bg, PIL (the PIL pipeline's)": ms(
                lambda: [
                    (Image.open(io.BytesIO(f)).convert("RGBA"), Image.open(io.BytesIO(b)).convert("RGB"))
                    for f, b in zip(fgb, bgb, strict=True)
                ]
            ),
            "decode fg+bg, forcomp's strict decoders": ms(
                lambda: [
                    (decode_foreground(f, "fg"), decode_background(b, "bg"))
                    for f, b in zip(fgb, bgb, strict=True)
                ]
            ),
            "PIL pipeline, whole __getitem__": ms(lambda: [pil[i] for i in range(n)]),
            "forcomp worker: load_parts (decode, draw, crop+resize bg)": ms(
                lambda: [ds.load_parts(i) for i in range(n)]
            ),
            "forcomp worker: collate, padded (feeds a GPU)": ms(lambda: collate_parts(samples)),
            "forcomp worker: collate, unpadded (a CPU paste)": ms(lambda: collate_parts(samples, pad=False)),
            "forcomp: paste (window kernel, per batch)": ms(lambda: rec(parts, params)),
            "forcomp per-sample path: ds[i] without transform (PIL out)": ms(
                lambda: [per_sample[i] for i in range(n)]
            ),
        }
    finally:
        torch.set_num_threads(threads)


def time_loader(make_iter, n_items: int, repeats: int) -> tuple[float, list[float]]:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        count = 0
        for batch in make_iter():
            count += batch[0].shape[0]
        if batch[0].device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates), rates


KERNELS = {
    # name: (method, compiled); "auto" is the window kernel on the CPU and the matrix one elsewhere
    "auto": ("auto", False),
    "matrix, eager": ("matrix", False),
    "matrix, compiled": ("matrix", True),
}


def kernel_rate(device: str, repeats: int, B: int = 256, kernel: str = "auto") -> float:
    """Images per second of the paste kernel alone on one ``B x 224²`` batch (warm-up excluded)."""
    method, compiled = KERNELS[kernel]
    fn = torch.compile(composite, fullgraph=True) if compiled else composite
    g = torch.Generator(device=device).manual_seed(0)
    fg = torch.randint(0, 256, (B, 4, 256, 256), dtype=torch.uint8, device=device, generator=g)
    hw = torch.randint(96, 256, (B, 2), device=device, generator=g)
    bg = torch.randint(0, 256, (B, 3, 224, 224), dtype=torch.uint8, device=device, generator=g)
    ones = torch.ones(B, device=device)
    times = []
    for _ in range(repeats + (2 if compiled else 1)):  # the compiled kernel's first call compiles
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        p = sample_params(0.2 * ones, 0.3 * ones, hw, 0.7 * ones, (224, 224), RecombineConfig(), generator=g)
        fn(fg, hw, bg, p, method=method)  # type: ignore[arg-type]
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return B / statistics.median(times[2 if compiled else 1 :])


def worker_rate(ds: ForComp, batch: int, repeats: int, paste: bool) -> float:
    """Images per second of the worker side on one thread: load_parts + collate (+ the paste)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, len(ds), batch):
                # feeding a GPU the workers also shrink each foreground to its pasted size
                items = range(i, min(i + batch, len(ds)))
                samples = [ds.load_parts(j, fg_at_paste_size=not paste) for j in items]
                parts = collate_parts(samples, pad=not paste)  # a CPU paste reads them unpadded
                if paste:
                    ds.recombine(parts)
            rates.append(len(ds) / (time.perf_counter() - t))
        return statistics.median(rates)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=None, help="default 256 (128 with --quick)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "online.json")
    ap.add_argument("--quick", action="store_true", help="128 items by default, no kernel-only rows")
    args = ap.parse_args()
    if args.items is None:
        args.items = 128 if args.quick else 256
    cache = make_cache(Path(tempfile.mkdtemp(prefix="forcomp-online-")), args.items)
    threads = torch.get_num_threads()
    pil = PILRecombine(cache)
    fast = ForComp(cache, "train", size=224, background="all", seed=0)
    packed_fast = ForComp(packed_copy(cache), "train", size=224, background="all", seed=0)
    per_sample = ForComp(cache, "train", size=None, background="all", seed=0, transform=v2_train_transform())
    norm = v2.Normalize(MEAN.flatten().tolist(), STD.flatten().tolist())
    runs: dict[str, list[float]] = {}
    settings = [("1 thread", 0), (f"{args.workers} workers", args.workers)]
    folder = ImageFolder(str(cache / "train" / "backgrounds"), transform=v2_train_transform())
    pipelines = {
        REF: lambda nw: DataLoader(pil, batch_size=args.batch, num_workers=nw),
        "ImageFolder + RandomResizedCrop + flip": lambda nw: DataLoader(
            folder, batch_size=args.batch, num_workers=nw
        ),
        "forcomp fast (crop+flip fused)": lambda nw: fast.loader(
            args.batch, num_workers=nw, batch_transform=norm
        ),
        "forcomp fast, packed form": lambda nw: packed_fast.loader(
            args.batch, num_workers=nw, batch_transform=norm
        ),
        "forcomp per-sample (size=None)": lambda nw: DataLoader(
            per_sample, batch_size=args.batch, num_workers=nw
        ),
    }
    # Repeats outermost, pipelines interleaved: on a shared machine the load drifts, and
    # interleaving exposes every pipeline to the same drift (medians then compare like with like).
    # The main process gets one thread in both settings: with workers it only collects batches
    # (and, for forcomp, normalises), and more threads would compete with the workers' cores.
    torch.set_num_threads(1)
    # The objects made so far (torch and torchvision alone: 300k+) out of the garbage collector:
    # a full collection over them takes ~0.2 s and falls at random into one pipeline's timing.
    gc.freeze()
    for _ in range(args.repeats):
        for label, nw in settings:
            for name, make in pipelines.items():
                runs.setdefault(f"{name}, {label}", []).extend(
                    time_loader(lambda make=make, nw=nw: make(nw), args.items, 1)[1]
                )
    rows = {k: (statistics.median(v), v) for k, v in runs.items()}
    # Ratio to the PIL pipeline run next to it in the same repeat, then the median: the load of a
    # shared machine drifts between repeats (a 1.5x swing was seen), and pairing cancels it.
    paired = {
        k: statistics.median(a / b for a, b in zip(v, runs[f"{REF}, {k.rsplit(', ', 1)[-1]}"], strict=True))
        for k, v in runs.items()
    }
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        mean, std = MEAN.cuda(), STD.cuda()  # once, outside the timed loop (a copy is a sync)
        rows[f"forcomp fast, cuda, {args.workers} workers"] = time_loader(
            lambda: (
                ((x - mean) / std, y)
                for x, y in fast.loader(args.batch, num_workers=args.workers, device="cuda")
            ),
            args.items,
            args.repeats,
        )
    workers = {
        "worker side: read, decode, crop, collate (feeds a GPU)": worker_rate(
            fast, args.batch, args.repeats, False
        ),
        "worker side + paste (a CPU worker)": worker_rate(fast, args.batch, args.repeats, True),
    }
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    kernel = {
        f"{dev}, {k}": kernel_rate(dev, args.repeats, kernel=k)
        for dev in devices
        for k in KERNELS
        if (dev == "cuda" or k != "matrix, compiled")  # compiling for the CPU: minutes, not the CPU's path
        and not args.quick
    }
    stages = stage_costs(cache)
    pil_one = rows[f"{REF}, 1 thread"][0]
    print(f"{'pipeline':<50} {'img/s':>8} {'x ForNet (paired median)':>25}")
    for name, (rate, _) in rows.items():
        ratio = f"{paired[name]:>24.2f}x" if name in paired else ""
        print(f"{name:<50} {rate:>8.1f} {ratio}")
    for name, rate in workers.items():
        print(f"{name:<56} {rate:>8.1f} img/s/core  {rate / pil_one:>5.2f}x ForNet per core")
    for dev, r in kernel.items():
        print(f"{'kernel only, 256x224², ' + dev:<46} {r:>8.0f}")
    print("\nstage costs, one thread, ms per image:")
    for name, v in stages.items():
        print(f"  {name:<66} {v:>6.2f}")
    machine = f"{platform.machine()}, {os.cpu_count()} cores" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    )
    print(
        f"machine: {machine}; {args.items} items, batch {args.batch}, {args.workers} workers, "
        f"median of {args.repeats}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": vars(args) | {"out": os.path.relpath(args.out)},
                "pipelines": {
                    k: {"img_per_s": v[0], "runs": v[1], "vs_fornet_paired_median": paired.get(k)}
                    for k, v in rows.items()
                },
                "worker_side_img_per_s_one_thread": workers,
                "worker_side_vs_fornet_one_thread": {k: v / pil_one for k, v in workers.items()},
                "load_average_1_5_15_min": os.getloadavg(),
                "kernel_img_per_s": kernel,
                "stage_ms_per_image_one_thread": stages,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
