"""The GPU check: CUDA tests, online kernel and loader throughput, offline model stages, in one run.

Made to run unattended on a freshly lent GPU machine (one H100 or H200) within about 8 minutes:

1. ``tests``: the CUDA tests (``pytest -m gpu``): dtypes, autocast, both kernels against the CPU
   reference, masks, determinism, the offline models on CUDA.
2. ``kernel``: the paste kernel alone on 256 x 224² batches, img/s per input dtype, eager and
   ``torch.compile``-d, float32 and TF32 matmuls (with the TF32 output's difference to float32).
3. ``loader``: the whole training input pipeline feeding the GPU (DataLoader workers decode uint8
   parts; the GPU pastes, crops/flips and normalises) with 8 and 16 workers, next to a plain
   torchvision ``ImageFolder`` loader (RandomResizedCrop + flip per sample, normalise on the GPU) on
   the same source images with the same worker count.
4. ``decode``: JPEG decoding of the cache's backgrounds on the GPU (``decode_jpeg(device="cuda")``
   on batches) against one CPU thread.
5. ``offline``: ``benchmarks/offline.py`` on CUDA — SAM ViT-B, a big-lama-shaped generator and
   Grounding DINO tiny with random weights of the real sizes: img/s per stage, peak memory.

Every section records its own error instead of stopping the run, and the JSON (plus the device
name, driver, torch and CUDA versions) is written after each section, so a run cut short still
reports what it measured. ``--device cpu --quick`` is the dry run the test suite does, so the script
does not rot between GPU loans.

    python benchmarks/gpu.py [--device cuda] [--quick] [--out DIR] [--skip offline,decode]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without installing forcomp
    sys.path.insert(0, str(ROOT))

SECTIONS = ("kernel", "loader", "decode", "tests", "offline")  # most wanted first: a cut-short run keeps them
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (CUDA events on a GPU, wall clock on the CPU), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["driver"] = f"unknown ({e})"
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        pass
    return env


# ---------------------------------------------------------------- 1. CUDA tests


def run_tests(device: torch.device, quick: bool, out: Path) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess; on the CPU (dry run) only collect them."""
    xml = out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    if device.type != "cuda":
        cmd.append("--collect-only")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t = time.perf_counter()
    r = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=200 if not quick else 120, env=env
    )
    res: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit_code": r.returncode, "seconds": 0.0}
    res["seconds"] = round(time.perf_counter() - t, 1)
    (out / "cuda_tests.log").write_text(r.stdout + r.stderr)
    if xml.exists() and device.type == "cuda":
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        assert suite is not None
        res.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
        res["failed"] = [
            f"{c.get('classname')}::{c.get('name')}"
            for c in suite.iter("testcase")
            if c.find("failure") is not None or c.find("error") is not None
        ]
        res["skipped_reasons"] = sorted(
            {
                (c.find("skipped").get("message") or "")
                for c in suite.iter("testcase")
                if c.find("skipped") is not None
            }
        )
    else:
        res["collected"] = sum(1 for ln in r.stdout.splitlines() if "::" in ln) or r.stdout.count("<Function")
    res["tail"] = (r.stdout + r.stderr)[-1500:]
    return res


# ---------------------------------------------------------------- 2. kernel


def _kernel_inputs(
    B: int, device: torch.device, canvas: int, *, noise_alpha: bool = False
) -> tuple[torch.Tensor, ...]:
    """Foregrounds as the cache holds them: textured RGB, a solid elliptic object touching its box,
    zeros in the padding beyond each valid size. ``noise_alpha``: 20% of alpha pixels transparent
    at random instead (a stress case for the blend's division by alpha, not real content)."""
    g = torch.Generator().manual_seed(0)
    fg = torch.randint(0, 256, (B, 4, 256, 256), dtype=torch.uint8, generator=g)
    hw = torch.randint(96, 257, (B, 2), generator=g)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    h, w = hw[:, 0, None, None].float(), hw[:, 1, None, None].float()
    inside = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
    if noise_alpha:
        inside = torch.rand(B, 256, 256, generator=g) < 0.8
    valid = (yy < h) & (xx < w)
    fg[:, 3] = (inside & valid).to(torch.uint8) * 255
    fg *= valid[:, None].to(torch.uint8)
    bg = torch.randint(0, 256, (B, 3, canvas, canvas), dtype=torch.uint8, generator=g)
    return fg.to(device), hw.to(device), bg.to(device)


def _diff(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    d = (out.int() - ref.int()).abs()
    return {"max_abs_diff": int(d.max()), "share_pixels_changed": float((d > 0).float().mean())}


def _params(hw: torch.Tensor, canvas: int) -> Any:
    from forcomp.recombine.params import RecombineConfig, sample_params

    B = hw.shape[0]
    g = torch.Generator().manual_seed(1)
    ones = torch.ones(B)
    p = sample_params(
        0.2 * ones, 0.3 * ones, hw.cpu(), 0.7 * ones, (canvas, canvas), RecombineConfig(), generator=g
    )
    return type(p)(*(t.to(hw.device) for t in p))


def bench_kernel(device: torch.device, quick: bool) -> dict[str, Any]:
    from forcomp.recombine.functional import composite

    B, canvas = (16, 64) if quick else (256, 224)
    warmup, repeats = (1, 2) if quick else (3, 15)
    fg8, hw, bg8 = _kernel_inputs(B, device, canvas)
    params = _params(hw, canvas)
    radius = 12
    rows: dict[str, Any] = {"batch": B, "canvas": canvas}
    dtypes = {
        "uint8": torch.uint8,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }
    methods = ["matrix"] + (["window"] if device.type == "cpu" else [])
    ref_u8: torch.Tensor | None = None
    for dname, dt in dtypes.items():
        fg = fg8 if dt == torch.uint8 else (fg8.to(dt) / 255)
        bg = bg8 if dt == torch.uint8 else (bg8.to(dt) / 255)
        for m in methods:
            key = f"{m}, eager, {dname}"
            try:
                ts = time_call(
                    lambda fg=fg, bg=bg, m=m: composite(
                        fg, hw, bg, params, smoothing_radius=radius, method=m
                    ),
                    device,
                    warmup=warmup,
                    repeats=repeats,
                )
                rows[key] = {
                    "img_per_s": round(B / statistics.median(ts)),
                    "ms_per_batch": statistics.median(ts) * 1e3,
                }
            except Exception as e:  # noqa: BLE001 - recorded, the check goes on
                rows[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
        if dt == torch.uint8:
            ref_u8 = composite(fg8, hw, bg8, params, smoothing_radius=radius, method="matrix")[0]
    # compiled matrix path, fp32 matmuls and TF32 matmuls (uint8 in/out, as the loader feeds it)
    if device.type == "cuda" or not quick:
        for tf32, dynamic in ((False, False), (True, False), (False, True)):
            key = f"matrix, compiled{' dynamic' if dynamic else ''}, uint8{', tf32' if tf32 else ''}"
            prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            try:
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
                torch._dynamo.reset()
                fn = torch.compile(
                    lambda f, h, b, p: composite(f, h, b, p, smoothing_radius=radius, method="matrix"),
                    fullgraph=True,
                    dynamic=dynamic,
                )
                t0 = time.perf_counter()
                out = fn(fg8, hw, bg8, params)[0]
                _sync(device)
                compile_s = time.perf_counter() - t0
                ts = time_call(lambda fn=fn: fn(fg8, hw, bg8, params), device, warmup=warmup, repeats=repeats)
                row = {
                    "img_per_s": round(B / statistics.median(ts)),
                    "ms_per_batch": statistics.median(ts) * 1e3,
                    "compile_s": round(compile_s, 1),
                }
                if ref_u8 is not None:
                    row["vs_eager_fp32"] = _diff(out, ref_u8)
                    nfg, nhw, nbg = _kernel_inputs(B, device, canvas, noise_alpha=True)
                    nref = composite(nfg, nhw, nbg, params, smoothing_radius=radius, method="matrix")[0]
                    row["vs_eager_fp32_noise_alpha"] = _diff(fn(nfg, nhw, nbg, params)[0], nref)
                rows[key] = row
            except Exception as e:  # noqa: BLE001
                rows[key] = {"error": f"{type(e).__name__}: {e}"[:400]}
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    # the default path a user gets: Recombine's forward (sampling included) on a Parts batch
    try:
        from forcomp.recombine.transform import Parts, Recombine

        ones = torch.ones(B, device=device)
        parts = Parts(
            fg=fg8, fg_hw=hw, bg=bg8, fg_ratio=0.2 * ones, bg_ratio=0.3 * ones,
            labels=torch.zeros(B, dtype=torch.int64, device=device),
        )  # fmt: skip
        rec = Recombine(seed=0)
        ts = time_call(lambda: rec(parts), device, warmup=max(warmup, 2), repeats=repeats)
        rows["Recombine() default, params + paste, uint8 in, float32 out"] = {
            "img_per_s": round(B / statistics.median(ts)),
            "ms_per_batch": statistics.median(ts) * 1e3,
            "method": getattr(rec, "method", "?"),
        }
    except Exception as e:  # noqa: BLE001
        rows["Recombine() default, params + paste, uint8 in, float32 out"] = {
            "error": f"{type(e).__name__}: {e}"[:400]
        }
    return rows


# ---------------------------------------------------------------- 3. loader (and the data it reads)


def _make_item(args: tuple[int, str]) -> tuple[str, float]:
    """One synthetic ImageNet-sized photo, its cut-out foreground and its object-free background."""
    from PIL import Image

    i, root = args
    rng = np.random.default_rng(i)
    w, h = 500, 375
    cls = f"n{(i % 10) + 1:08d}"
    small = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    fw, fh = int(rng.integers(120, 300)), int(rng.integers(100, 260))
    yy, xx = np.mgrid[0:fh, 0:fw]
    alpha = ((((xx - fw / 2) / (fw / 2)) ** 2 + ((yy - fh / 2) / (fh / 2)) ** 2) <= 1).astype(np.uint8) * 255
    obj = np.asarray(
        Image.fromarray(rng.uniform(0, 255, (fh // 6 + 1, fw // 6 + 1, 3)).astype(np.uint8)).resize((fw, fh))
    )
    x0, y0 = int(rng.integers(0, w - fw)), int(rng.integers(0, h - fh))
    photo = bg.copy()
    region = photo[y0 : y0 + fh, x0 : x0 + fw]
    region[alpha > 0] = obj[alpha > 0]
    base = Path(root)
    for sub, img, ext in (
        (f"source/{cls}", Image.fromarray(photo), "JPEG"),
        (f"cache/train/foregrounds/{cls}", Image.fromarray(np.dstack([obj, alpha]), "RGBA"), "WEBP"),
        (f"cache/train/backgrounds/{cls}", Image.fromarray(bg), "JPEG"),
    ):
        d = base / sub
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"img{i:05d}.{ext}", quality=90)
    return f"{cls}/img{i:05d}.JPEG", float((alpha > 0).sum()) / (w * h)


def make_data(root: Path, n: int, procs: int) -> tuple[Path, Path]:
    """``root/source`` (an ImageFolder) and ``root/cache`` (its foregrounds/backgrounds), ``n`` items."""
    jobs = [(i, str(root)) for i in range(n)]
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            ratios = dict(pool.map(_make_item, jobs, chunksize=16))
    else:
        ratios = dict(map(_make_item, jobs))
    (root / "cache" / "fg_bg_ratios_train.json").write_text(json.dumps(ratios))
    return root / "source", root / "cache"


def _drain(batches: Any, device: torch.device, skip: int = 1) -> tuple[float, int]:
    """img/s over a loader, not counting its first ``skip`` batches (worker start-up, compiling)."""
    it = iter(batches)
    for _ in range(skip):
        next(it)
    _sync(device)
    t0, count = time.perf_counter(), 0
    for batch in it:
        count += batch[0].shape[0]
    _sync(device)
    if count == 0:
        raise RuntimeError("the loader yielded one batch only: pass more --items")
    return count / max(time.perf_counter() - t0, 1e-9), count


def _compile_counters() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a diagnostic only
        return -1


def bench_loader(
    device: torch.device, quick: bool, workers_list: list[int], data: tuple[Path, Path]
) -> dict[str, Any]:
    """Steady-state img/s of each loader over ``4 x items`` samples drawn with replacement."""
    from torch.utils.data import DataLoader, RandomSampler
    from torchvision import datasets
    from torchvision.transforms import v2

    from forcomp import ForComp
    from forcomp.recombine.functional import composite

    source, cache = data
    batch = 32 if quick else 256
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    n_items = sum(1 for _ in (cache / "train" / "foregrounds").rglob("*.WEBP"))
    # Steady state: the first wave (one batch per worker, made while the workers start, and the
    # compiles) is not timed, then ``waves`` more waves are. A run shorter than that measures the
    # batches prefetched during start-up (the first GPU run here reported 2-10x too much).
    waves = 1 if quick else 6
    rows: dict[str, Any] = {"batch": batch, "items": n_items, "timed_waves_per_worker": waves}
    size = 64 if quick else 224
    tv_tf = v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )

    def sampler(ds: Any, nw: int) -> RandomSampler:
        n = n_items if quick else batch * max(nw, 1) * (waves + 1)
        return RandomSampler(ds, replacement=True, num_samples=n, generator=torch.Generator().manual_seed(0))

    def record(key: str, run: Callable[[], tuple[float, int]], nw: int) -> None:
        graphs = _compile_counters()
        try:
            rate, n = run()
            rows[key] = {
                "img_per_s": round(rate),
                "img_per_s_per_worker": round(rate / max(nw, 1)),
                "images_timed": n,
                "new_graphs": _compile_counters() - graphs,
            }
        except Exception as e:  # noqa: BLE001
            rows[key] = {"error": f"{type(e).__name__}: {e}"[:400], "trace": traceback.format_exc()[-800:]}

    def packed_copy() -> Path:
        """A copy of the cache with its packed form (``forcomp pack``), made once."""
        import shutil

        from forcomp.cache.packing import pack_split

        dst = cache.parent / (cache.name + "_packed")
        if not (dst / "train" / "packed" / "index.npz").exists():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(cache, dst)
            pack_split(dst, "train")
        return dst

    for nw in workers_list:
        skip = 1 if quick else max(nw, 1)

        def tv_run(nw: int = nw) -> tuple[float, int]:
            ds = datasets.ImageFolder(str(source), transform=tv_tf)
            dl = DataLoader(
                ds,
                batch_size=batch,
                sampler=sampler(ds, nw),
                num_workers=nw,
                pin_memory=device.type == "cuda",
            )

            def batches() -> Any:
                for x, y in dl:
                    x = x.to(device, non_blocking=True)
                    yield (x.float() / 255 - mean) / std, y.to(device, non_blocking=True)

            return _drain(batches(), device, skip)  # noqa: B023 (runs within this iteration)

        record(f"ImageFolder + RandomResizedCrop + flip, {nw} workers", tv_run, nw)
        variants: dict[str, str | None] = {"default": None, "packed form": "packed"}
        if not quick and device.type == "cuda" and nw == max(workers_list):
            variants |= {"eager": "eager", "compiled dynamic=None": "dynamic_none"}
        for label, variant in variants.items():

            def fc_run(nw: int = nw, variant: str | None = variant) -> tuple[float, int]:
                torch._dynamo.reset()  # each row compiles afresh (no shared recompile budget)
                fc = ForComp(packed_copy() if variant == "packed" else cache, "train", size=size, seed=0)
                rec = fc.recombine
                if variant == "eager" and rec is not None:
                    rec.compile = False
                elif variant == "dynamic_none" and rec is not None:  # static first, then recompiles
                    rec._compiled = torch.compile(composite, fullgraph=True, dynamic=None)
                it = fc.loader(batch, num_workers=nw, device=device, sampler=sampler(fc, nw))
                return _drain((((x - mean) / std, y) for x, y, *_ in it), device, skip)  # noqa: B023

            record(
                f"forcomp loader ({label}), paste + crop/flip + normalise on {device.type}, {nw} workers",
                fc_run,
                nw,
            )
    return rows


# ---------------------------------------------------------------- 4. JPEG decode


def bench_decode(device: torch.device, quick: bool, cache: Path) -> dict[str, Any]:
    from torchvision.io import decode_jpeg, read_file

    files = sorted((cache / "train" / "backgrounds").rglob("*.JPEG"))[: 32 if quick else 256]
    datas = [read_file(str(f)) for f in files]
    rows: dict[str, Any] = {"images": len(datas), "size": "500x375"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ts = time_call(lambda: [decode_jpeg(d) for d in datas], torch.device("cpu"), warmup=1, repeats=3)
        rows["cpu, one thread"] = {"img_per_s": round(len(datas) / statistics.median(ts))}
    finally:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        try:
            ts = time_call(lambda: decode_jpeg(datas, device=device), device, warmup=2, repeats=5)
            rows["cuda, one batched call"] = {"img_per_s": round(len(datas) / statistics.median(ts))}
        except Exception as e:  # noqa: BLE001
            rows["cuda, one batched call"] = {"error": f"{type(e).__name__}: {e}"[:400]}
    return rows


# ---------------------------------------------------------------- 5. offline models


def run_offline(device: torch.device, quick: bool, out: Path) -> dict[str, Any]:
    script = ROOT / "benchmarks" / "offline.py"
    res_path = out / "offline.json"
    if quick:  # dry run: the script's command line and imports, not SAM-B on a CPU (20 s per image)
        cmd = [sys.executable, str(script), "--help"]
    else:
        cmd = [sys.executable, str(script), "--device", device.type, "--images", "8", "--out", str(res_path)]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    res: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit_code": r.returncode}
    res["seconds"] = round(time.perf_counter() - t, 1)
    res["tail"] = (r.stdout + r.stderr)[-3000:]
    if res_path.exists():
        res["results"] = json.loads(res_path.read_text())
    return res


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the dry run)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the dry run the test suite does")
    ap.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu")
    )
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip, of {','.join(SECTIONS)}")
    ap.add_argument(
        "--items", type=int, default=None, help="synthetic items for the loader (default 2048; quick 48)"
    )
    ap.add_argument(
        "--workers", default=None, help="worker counts for the loader rows (default 8,16; quick 0,2)"
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu --quick for the dry run", file=sys.stderr)
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(SECTIONS)
    if unknown:
        ap.error(f"--skip: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    workers = [int(w) for w in (args.workers or ("0,2" if args.quick else "8,16")).split(",")]
    items = args.items or (48 if args.quick else 2048)
    report: dict[str, Any] = {"environment": environment(device), "quick": args.quick, "sections": {}}
    json_path = out / "gpu.json"

    def save() -> None:
        json_path.write_text(json.dumps(report, indent=1, default=str))

    tmp = Path(tempfile.mkdtemp(prefix="forcomp-gpu-"))
    data: tuple[Path, Path] | None = None
    t_all = time.perf_counter()
    try:
        for name in SECTIONS:
            if name in skip:
                continue
            t = time.perf_counter()
            print(f"[gpu-check] {name} ...", flush=True)
            try:
                if name in ("loader", "decode") and data is None:
                    data = make_data(tmp, items, procs=min(16, os.cpu_count() or 1))
                if name == "tests":
                    res = run_tests(device, args.quick, out)
                elif name == "kernel":
                    res = bench_kernel(device, args.quick)
                elif name == "loader":
                    assert data is not None
                    res = bench_loader(device, args.quick, workers, data)
                elif name == "decode":
                    assert data is not None
                    res = bench_decode(device, args.quick, data[1])
                else:
                    res = run_offline(device, args.quick, out)
            except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
                res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            res["section_seconds"] = round(time.perf_counter() - t, 1)
            report["sections"][name] = res
            save()
            print(json.dumps({name: _summary(res)}, default=str), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report["total_seconds"] = round(time.perf_counter() - t_all, 1)
    save()
    print(f"[gpu-check] done in {report['total_seconds']} s; results in {json_path}")
    return 0


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    """The figures of a section without logs, for the console."""
    return {
        k: (v.get("img_per_s", v.get("error", v)) if isinstance(v, dict) else v)
        for k, v in res.items()
        if k not in ("tail", "trace", "skipped_reasons", "results")
    }


if __name__ == "__main__":
    sys.exit(main())
