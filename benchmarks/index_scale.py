"""Start-up time and memory of reading an ImageNet-sized cache, next to torchvision's ImageFolder.

Builds (once, under ``benchmarks/_work/``) a cache of ``--items`` foregrounds and backgrounds in
``--classes`` class folders, every file a hard link to one tiny WEBP or JPEG (the listing and the
index are what is measured, not decoding), then measures, each in a fresh process, interleaved over
``--repeats`` rounds: the seconds to construct and the resident memory added by

- ``ImageFolder(CACHE/train/backgrounds)`` (the same number of files: what a script has today),
- ``CacheReader(CACHE, "train")`` (forcomp's validated, array-based listing),
- ``ForComp(CACHE, "train")`` (the dataset on top of it).

It also iterates a DataLoader with 2 workers over ``--epoch-items`` items of ``ForComp``'s index (no
decoding: ``__getitem__`` replaced by an index touch) and reports each worker's private memory at the
start and end, to show whether it grows over an epoch (copy-on-read of per-item Python objects).

    python benchmarks/index_scale.py                      # 1,281,167 items in 1000 classes
    python benchmarks/index_scale.py --items 200000 --classes 200 --repeats 3

Prints a table and writes ``benchmarks/results/index_scale.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, json, os, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
what, cache = sys.argv[1], sys.argv[2]
import torch, torchvision  # imported before the baseline: every contender needs them
import numpy
from forcomp.cache.reader import CacheReader
try:
    from forcomp.recombine.dataset import ForComp
except Exception:
    ForComp = None
gc.collect(); base = rss(); t0 = time.perf_counter()
if what == "imagefolder":
    from torchvision.datasets import ImageFolder
    obj = ImageFolder(os.path.join(cache, "train", "backgrounds"))
    n = len(obj)
elif what == "reader":
    obj = CacheReader(cache, "train", packed=False); n = len(obj.fg)
else:  # "forcomp" on the folders; "forcomp packed" on a copy with the packed form
    obj = ForComp(cache, "train", size=224); n = len(obj)
dt = time.perf_counter() - t0
gc.collect()
print(json.dumps({"what": what, "seconds": dt, "added_bytes": rss() - base, "items": n}))
"""

EPOCH = r"""
import json, os, sys
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
def private_bytes():
    total = 0
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total
what, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if what == "imagefolder":
    from torchvision.datasets import ImageFolder
    ds = ImageFolder(os.path.join(cache, "train", "backgrounds"))
    def touch(i):
        path, label = ds.samples[i]  # what ImageFolder.__getitem__ reads of its index
else:
    from forcomp.recombine.dataset import ForComp
    ds = ForComp(cache, "train", size=224)
    def touch(i):
        # what load_parts reads of the index for item i, without decoding any file
        label = int(ds.labels[i])
        ds.key(i), float(ds.reader.fg_ratio[i]), ds.pools.of_class(label)[:1], int(ds.reader.fg_bg[i])
class Touch(Dataset):
    calls = 0
    def __len__(self): return min(n, len(ds))
    def __getitem__(self, i):
        touch(i)
        Touch.calls += 1
        mem = private_bytes() if Touch.calls % 5000 == 1 else -1
        return torch.tensor([get_worker_info().id, Touch.calls, mem])
gen = torch.Generator().manual_seed(0)
dl = DataLoader(Touch(), batch_size=1000, num_workers=2, shuffle=True, generator=gen)
first, last = {}, {}
for b in dl:
    for w, c, m in b.tolist():
        if m >= 0:
            first.setdefault(w, m)
            last[w] = m
print(json.dumps({"first_private": max(first.values()), "last_private": max(last.values())}))
"""


def make_cache(cache: Path, items: int, classes: int) -> None:
    """ImageNet-like cache of hard links to one tiny file per kind (created once)."""
    done = cache / ".complete"
    if done.exists() and json.loads(done.read_text()) == {"items": items, "classes": classes}:
        return
    import shutil

    from PIL import Image

    if cache.exists():
        shutil.rmtree(cache)
    seed = cache / "_seed"
    seed.mkdir(parents=True)
    fg = Image.new("RGBA", (8, 8), (200, 10, 10, 255))
    fg.putpixel((0, 0), (0, 0, 0, 0))  # an object that does not fill its box, as real masks
    fg.save(seed / "fg.WEBP", "WEBP", lossless=True)
    Image.new("RGB", (16, 16), (10, 200, 10)).save(seed / "bg.JPEG", "JPEG")
    ratios: dict[str, float] = {}
    per = [items // classes + (1 if c < items % classes else 0) for c in range(classes)]
    for c, count in enumerate(per):
        cls = f"n{c:08d}"
        for kind, src in (("foregrounds", seed / "fg.WEBP"), ("backgrounds", seed / "bg.JPEG")):
            d = cache / "train" / kind / cls
            d.mkdir(parents=True)
            ext = ".WEBP" if kind == "foregrounds" else ".JPEG"
            first = d / f"{cls}_0{ext}"
            shutil.copyfile(src, first)  # one inode per class folder: a file takes at most 65000 links
            for k in range(1, count):
                os.link(first, d / f"{cls}_{k}{ext}")
        for k in range(count):
            ratios[f"{cls}/{cls}_{k}.JPEG"] = 0.25
    buf = io.StringIO()
    json.dump(ratios, buf)
    (cache / "fg_bg_ratios_train.json").write_text(buf.getvalue())
    done.write_text(json.dumps({"items": items, "classes": classes}))


def make_packed_copy(cache: Path) -> Path:
    """A hard-linked copy of ``cache`` with its packed form (``forcomp pack``), made once."""
    dst = cache.parent / (cache.name + "_packed")
    if not (dst / "train" / "packed" / "index.npz").exists():
        import shutil

        from forcomp.cache.packing import pack_split

        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-al", str(cache), str(dst)], check=True)
        t0 = time.perf_counter()
        summary = pack_split(dst, "train")
        print(f"packed copy ready in {time.perf_counter() - t0:.0f} s ({summary.data_bytes / 1e6:.0f} MB)")
    return dst


def run_child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        err = out.stderr.strip().splitlines()
        return {"error": err[-1] if err else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_281_167, help="items (default: ImageNet-1k train)")
    ap.add_argument("--classes", type=int, default=1000, help="class folders (default: 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: 3)")
    ap.add_argument("--epoch-items", type=int, default=200_000, help="items of the worker-memory epoch")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "index_scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index_scale.json")
    args = ap.parse_args(argv)
    cache = args.work / f"cache_{args.items}_{args.classes}"
    t0 = time.perf_counter()
    make_cache(cache, args.items, args.classes)
    print(f"cache of {args.items} items ready in {time.perf_counter() - t0:.0f} s: {cache}")
    packed = make_packed_copy(cache)
    rows: dict[str, list[dict]] = {"imagefolder": [], "reader": [], "forcomp": [], "forcomp packed": []}
    for _ in range(args.repeats):
        for what in rows:
            rows[what].append(run_child(CHILD, what, str(packed if what == "forcomp packed" else cache)))
    result: dict = {"items": args.items, "classes": args.classes, "repeats": args.repeats, "rows": {}}
    print(f"{'what':<14}{'start s (median)':>18}{'added MB (median)':>20}{'x ImageFolder mem':>20}")
    base_mem = statistics.median(r["added_bytes"] for r in rows["imagefolder"] if "error" not in r)
    for what, rs in rows.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"{what:<14} failed: {rs[0]['error']}")
            result["rows"][what] = {"error": rs[0]["error"]}
            continue
        sec = statistics.median(r["seconds"] for r in ok)
        mem = statistics.median(r["added_bytes"] for r in ok)
        result["rows"][what] = {"seconds": sec, "added_bytes": mem, "runs": ok}
        print(f"{what:<14}{sec:>18.2f}{mem / 1e6:>20.0f}{mem / base_mem:>20.2f}")
    result["worker_epoch"] = {}
    for what in ("imagefolder", "forcomp"):
        epoch = run_child(EPOCH, what, str(cache), str(args.epoch_items))
        result["worker_epoch"][what] = epoch
        if "error" in epoch:
            print(f"{what}: worker memory over an epoch failed: {epoch['error']}")
        else:
            print(
                f"{what}: DataLoader worker private memory over {args.epoch_items} items (2 workers): "
                f"first batch {epoch['first_private'] / 1e6:.0f} MB, "
                f"last {epoch['last_private'] / 1e6:.0f} MB"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
