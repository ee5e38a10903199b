"""Benchmark: images/s per core of the default (weight-free) offline build on ImageNet-sized images.

Makes an ImageFolder of ~500x375 images from scikit-image's sample photos (random crops, flips and
rescales of each, deterministic), builds it with ``workers=1`` (one core) and ``workers=N``, and
reports the median over repeats. Prints a table and writes ``benchmarks/results/build.json``.

    python benchmarks/build.py [--images 40] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from forcomp.demo import SAMPLE_CLASSES, _load_sample
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache


def make_imagenet_like(root: Path, n: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    photos = {wnid: _load_sample(loader) for wnid, (_, loader) in SAMPLE_CLASSES.items()}
    wnids = sorted(photos)
    for i in range(n):
        wnid = wnids[i % len(wnids)]
        img = photos[wnid]
        h, w = img.shape[:2]
        s = rng.uniform(0.75, 1.0)
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BICUBIC)
        (root / wnid).mkdir(parents=True, exist_ok=True)
        out.save(root / wnid / f"img{i:04d}.JPEG", quality=90)
    return root


def run(images: int, repeats: int, workers: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="forcomp-bench-"))
    try:
        source = make_imagenet_like(tmp / "src", images)
        rows = []
        for w in sorted({1, workers}):
            rates = []
            for r in range(repeats):
                cache = tmp / f"cache_w{w}_r{r}"
                s = build_cache(source, cache, BuildConfig(split="val", workers=w, batch_size=4))
                rates.append(s.processed / s.elapsed_s)
                shutil.rmtree(cache)
            med = statistics.median(rates)
            rows.append(
                {
                    "workers": w,
                    "img_per_s": med,
                    "img_per_s_per_core": med / w,
                    "runs": rates,
                    "ok": s.ok,
                    "no_object": s.no_object,
                }
            )
        return {
            "benchmark": "offline build, classical segmenter + telea inpainter",
            "image_size": [500, 375],
            "images": images,
            "repeats": repeats,
            "machine": (
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
            ),
            "results": rows,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "build.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = run(args.images, args.repeats, args.workers)
    print(f"{'workers':>8} {'img/s':>8} {'img/s/core':>11}  runs")
    for r in res["results"]:
        runs = ", ".join(f"{x:.2f}" for x in r["runs"])
        print(f"{r['workers']:>8} {r['img_per_s']:>8.2f} {r['img_per_s_per_core']:>11.2f}  [{runs}]")
    print(f"target: >= 2 img/s per core; machine: {res['machine']}; total {time.perf_counter() - t0:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
