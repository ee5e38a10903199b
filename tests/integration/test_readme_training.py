"""The README's training snippets, executed as written: each code block is taken from README.md by
its heading and run in a namespace emulating the script at that point (its argparse defaults for
the names used, ``data_config``, ``device``, the script's own variables), on a tiny cache in the
working directory named ``cache``. Only what needs a download (torchvision's ``presets`` module,
not an installed package) is stubbed. ``FORCOMP_README`` points at another copy of the README.
"""

from __future__ import annotations

import os
import re
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import torch
from recombine.conftest import make_cache
from torch.utils.data import RandomSampler
from torchvision.transforms import v2

pytest.importorskip("timm")
README = Path(os.environ.get("FORCOMP_README", Path(__file__).resolve().parents[2] / "README.md"))


def blocks(heading: str) -> list[str]:
    """The ```python blocks between ``heading`` and the next heading of any level."""
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    fenced, headings = False, []  # (line number, title) of the headings outside code blocks
    for i, line in enumerate(lines):
        fenced = fenced != line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            headings.append((i, line.lstrip("#").strip()))
    at = [k for k, (_, title) in enumerate(headings) if title == heading]
    assert at, f"{README} has no heading {heading!r}"
    start = headings[at[0]][0]
    end = headings[at[0] + 1][0] if at[0] + 1 < len(headings) else len(lines)
    found = re.findall(r"```python\n(.*?)```", "\n".join(lines[start:end]) + "\n", flags=re.S)
    assert found, f"no python block under {heading!r}"
    return found


def timm_args(**over: Any) -> Namespace:
    """timm train.py's defaults (identical in v1.0.28 and main) for the names the snippets read."""
    a = dict(
        seed=42, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3], hflip=0.5, vflip=0.0, color_jitter=0.4,
        color_jitter_prob=None, grayscale_prob=None, gaussian_blur_prob=None, aa=None, aug_repeats=0,
        aug_splits=0, jsd_loss=False, reprob=0.0, remode="pixel", recount=1, resplit=False, mixup=0.0,
        cutmix=0.0, cutmix_minmax=None, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
        mixup_off_epoch=0, smoothing=0.1, no_aug=False, train_crop_mode=None, workers=0, batch_size=4,
        pin_mem=False, no_prefetcher=False, distributed=False, num_classes=None, model_dtype=None,
    )  # fmt: skip
    a.update(over)
    ns = Namespace(**a)
    ns.prefetcher = not ns.no_prefetcher  # as the script sets it
    return ns


DATA_CONFIG = {
    "input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225), "crop_pct": 0.875,
}  # fmt: skip


@pytest.fixture
def in_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_cache(tmp_path / "cache", split="train", per_class=4, fg_px=12, bg_size=(96, 80))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(code: str, ns: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - the README's snippet, as written
    return ns


def test_quick_start(in_cache_dir):
    ns = run(blocks("Quick start: two ways into a training script")[0], {})
    assert ns["train_set"].size == (224, 224) and ns["num_classes"] == 3 and ns["loader"].dataset.epoch == 1


def test_timm_per_sample(in_cache_dir):
    from timm.data import create_loader

    ns = run(blocks("timm, per-sample path")[0], {"args": timm_args()})
    loader = create_loader(
        ns["dataset_train"], input_size=DATA_CONFIG["input_size"], batch_size=4, is_training=True,
        use_prefetcher=True, num_workers=0, device=torch.device("cpu"),
    )  # fmt: skip
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)


@pytest.mark.parametrize("prefetcher", [True, False])
@pytest.mark.parametrize("script", ["v1.0.28", "main"])
def test_timm_fast(in_cache_dir, prefetcher, script):
    from timm.data import Mixup

    torch.manual_seed(0)
    args = timm_args(no_prefetcher=not prefetcher, mixup=0.8, cutmix=1.0, reprob=0.25)
    fast = blocks("timm, fast path")
    ns = run(fast[0], {"args": args, "data_config": DATA_CONFIG, "device": torch.device("cpu")})
    loader_train, dataset_train = ns["loader_train"], ns["dataset_train"]
    # the script's mixup set-up: FastCollateMixup (unused by the fast loader) or its own mixup_fn
    mixup_fn = (
        None if prefetcher else Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3, label_smoothing=0.1)
    )
    firsts = []
    for epoch in range(2):
        if script == "v1.0.28":
            run(fast[1], {"loader_train": loader_train, "epoch": epoch})
        else:  # timm main's _set_loader_epoch
            if hasattr(loader_train.batch_sampler, "set_epoch"):
                loader_train.batch_sampler.set_epoch(epoch)
            elif hasattr(loader_train.sampler, "set_epoch"):
                loader_train.sampler.set_epoch(epoch)
        for i, (inp, target) in enumerate(loader_train):
            if mixup_fn is not None:
                inp, target = mixup_fn(inp, target)
            assert inp.shape == (4, 3, 32, 32) and inp.dtype == torch.float32
            assert -1.5 < float(inp.mean()) < 1.5 and target.shape == (4, 3)  # normalised, soft targets
            if i == 0:
                firsts.append(inp.clone())
        assert dataset_train.epoch == epoch
    assert not torch.equal(firsts[0], firsts[1])


def _presets_stub() -> Namespace:
    """torchvision's references/classification/presets.py is not installable: its training preset."""

    def preset(*, crop_size: int, random_erase_prob: float = 0.0, **_: Any) -> v2.Compose:
        return v2.Compose([
            v2.RandomResizedCrop(crop_size, antialias=True), v2.RandomHorizontalFlip(0.5), v2.PILToTensor(),
            v2.ToDtype(torch.float, scale=True), v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            v2.RandomErasing(random_erase_prob), v2.ToPureTensor(),
        ])  # fmt: skip

    return Namespace(ClassificationPresetTrain=preset)


def torchvision_args(**over: Any) -> Namespace:
    """torchvision references/classification/train.py's defaults for the names used (crop size
    small for the tiny cache)."""
    a = dict(
        train_crop_size=32, interpolation="bilinear", auto_augment=None, random_erase=0.0, ra_magnitude=9,
        augmix_severity=3, backend="pil", use_v2=False, mixup_alpha=0.0, cutmix_alpha=0.0, batch_size=4,
        workers=0, distributed=False, label_smoothing=0.0, start_epoch=0,
    )  # fmt: skip
    a.update(over)
    return Namespace(**a)


def test_torchvision_per_sample(in_cache_dir):
    args = torchvision_args()
    ns = run(
        blocks("torchvision, per-sample path")[0],
        {
            "args": args, "presets": _presets_stub(), "train_crop_size": 32, "interpolation": "bilinear",
            "auto_augment_policy": None, "random_erase_prob": 0.0, "ra_magnitude": 9, "augmix_severity": 3,
        },
    )  # fmt: skip
    image, label = ns["dataset"][0]
    assert image.shape == (3, 32, 32) and 0 <= label < 3


def test_torchvision_fast(in_cache_dir):
    args = torchvision_args(mixup_alpha=0.2, cutmix_alpha=1.0, random_erase=0.25)
    fast = blocks("torchvision, fast path")
    ns = run(fast[0], {"args": args})
    dataset = ns["dataset"]
    train_sampler = RandomSampler(dataset)  # load_data's, not distributed
    num_classes = len(dataset.classes)  # the script's line
    ns = run(
        fast[1],
        {"dataset": dataset, "args": args, "device": torch.device("cpu"), "num_classes": num_classes,
         "train_sampler": train_sampler},
    )  # fmt: skip
    data_loader = ns["data_loader"]
    firsts = {}
    for epoch in (0, 1, 2):
        run(
            fast[2],
            {"data_loader": data_loader, "epoch": epoch, "args": args, "train_sampler": train_sampler},
        )
        image, target = next(iter(data_loader))
        assert image.shape == (4, 3, 32, 32) and target.shape == (4, num_classes)
        firsts[epoch] = image.clone()
    # --resume: args.start_epoch = 2 (a new process, the same cache)
    resumed = run(fast[0], {"args": args})["dataset"]
    ns = run(
        fast[1],
        {"dataset": resumed, "args": args, "device": torch.device("cpu"), "num_classes": num_classes,
         "train_sampler": RandomSampler(resumed)},
    )  # fmt: skip
    torch.manual_seed(5)  # the mixers draw from torch's default generator; the first picks are seeded
    run(fast[2], {"data_loader": ns["data_loader"], "epoch": 2, "args": args})
    assert ns["data_loader"].dataset.epoch == 0  # told at the next iteration
    image, _ = next(iter(ns["data_loader"]))
    assert ns["data_loader"].dataset.epoch == 2 and not torch.equal(image, firsts[0])
