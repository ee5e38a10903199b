"""A cache built by forcomp is read correctly by the ForAug authors' ``ForNet`` loader.

Their loader needs torch/torchvision/datadings and its own ``utils`` module, so this test does not
import it: ``FolderForNet`` below is a reader of our own that follows their published code
(https://github.com/tobna/ForAug, ``fornet.py``: ``ForNet.init_dataset_loading``, ``__init__`` and
``__getitem__``) step by step: how it decides folder versus zip mode, how it lists classes and files,
orders classes into labels, renames and looks up the ratio keys, prunes backgrounds, and opens the
images. It is written from their description, not copied. Every item is read through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import CLASSES, make_imagefolder

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache


class FolderForNet:
    """ForNet's loading semantics for the folder form of a cache (``train=True`` → ``train`` split)."""

    def __init__(self, root: str, train: bool = True, pruning_ratio: float = 0.8) -> None:
        split = "train" if train else "val"
        self.root, self.split = root, split
        # Folder mode: no backgrounds zip, and a <split>/backgrounds folder.
        has_zip = os.path.exists(f"{root}/backgrounds_{split}.zip")
        assert not has_zip and os.path.exists(os.path.join(root, split, "backgrounds")), (
            "ForNet would use zips"
        )
        # Classes: the folder names under <split>/foregrounds; files: every entry of each class folder
        # (no extension filter in folder mode), as "<class>/<file name>".
        classes = set(os.listdir(os.path.join(root, split, "foregrounds")))
        self.foregrounds = [
            f"{c}/{f}" for c in classes for f in os.listdir(os.path.join(root, split, "foregrounds", c))
        ]
        self.backgrounds = [
            f"{c}/{f}" for c in classes for f in os.listdir(os.path.join(root, split, "backgrounds", c))
        ]
        # Labels: classes sorted by the number after their first letter (ImageNet wnids).
        self.classes = sorted(classes, key=lambda x: int(x[1:]))
        self.trgt_map = {c: i for i, c in enumerate(self.classes)}
        # Ratios: keys reduced to their last two path components in folder mode.
        with open(f"{root}/fg_bg_ratios_{split}.json") as f:
            ratios = json.load(f)
        self.fg_bg_ratios = {"/".join(k.split("/")[-2:]): v for k, v in ratios.items()}
        # Pruning: a background is usable only if it has a ratio below pruning_ratio; the last listed
        # background of each class is the fallback when a class would lose all of them.
        if pruning_ratio <= 1.0:
            self.all_backgrounds = {b.split("/")[-2]: b for b in self.backgrounds}
            self.backgrounds = [
                b for b in self.backgrounds if b in self.fg_bg_ratios and self.fg_bg_ratios[b] < pruning_ratio
            ]
        # background_combination="same": allowed backgrounds per class, from the file's class folder.
        self.cls_to_allowed_bg: dict[str, list[str]] = {}
        for b in self.backgrounds:
            self.cls_to_allowed_bg.setdefault(b.split("/")[-2], []).append(b)

    def __len__(self) -> int:
        return len(self.foregrounds)

    def item(self, idx: int) -> tuple[Image.Image, Image.Image, float, float, int]:
        """(foreground RGBA, its own background RGB, fg ratio, bg ratio, target) as ``__getitem__``
        gets them for ``background_combination="original"``."""
        fg_file = self.foregrounds[idx]
        trgt_cls = fg_file.split("/")[-2]
        fg = Image.open(os.path.join(self.root, self.split, "foregrounds", fg_file)).convert("RGBA")
        bg_file = fg_file.replace("foregrounds", "backgrounds").replace("WEBP", "JPEG")
        bg = Image.open(os.path.join(self.root, self.split, "backgrounds", bg_file)).convert("RGB")
        orig_fg_ratio = self.fg_bg_ratios[
            fg_file.replace("foregrounds", "backgrounds").replace("WEBP", "JPEG")
        ]
        bg_fg_ratio = self.fg_bg_ratios[bg_file]
        return fg, bg, orig_fg_ratio, bg_fg_ratio, self.trgt_map[trgt_cls]


@pytest.fixture(scope="module")
def train_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A train split of the synthetic ImageFolder plus one image without an object, built by the
    weight-free default backends."""
    root = tmp_path_factory.mktemp("fornet")
    source = make_imagefolder(root / "source")
    Image.new("RGB", (96, 72), (120, 120, 120)).save(source / CLASSES[1] / "empty.png")
    cache = root / "cache"
    summary = build_cache(source, cache, BuildConfig(split="train", segmenter="classical", inpainter="telea"))
    assert summary.exit_code == 0, summary.format()
    return source, cache


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_item_reads_through_fornets_semantics(split, train_cache, built_cache):
    cache = train_cache[1] if split == "train" else built_cache[1]
    ds = FolderForNet(str(cache), train=split == "train")
    index = read_index(CacheLayout(cache, split))
    ok = {k: r for k, r in index.items() if r.status == "ok"}
    assert ok and len(ds) == len(ok), "ForNet lists exactly the ok items"
    assert ds.classes == sorted({r.cls for r in ok.values()}), "ForNet's label order is ours"
    for idx in range(len(ds)):
        fg, bg, fg_ratio, bg_ratio, target = ds.item(idx)
        key = ds.foregrounds[idx].replace("WEBP", "JPEG")
        rec = ok[key]
        assert target == rec.label, f"{key}: ForNet's label differs from the index's"
        assert bg.size == rec.source_size, f"{key}: background is not the source size"
        x0, y0, x1, y1 = rec.bbox
        assert fg.size == (x1 - x0, y1 - y0), f"{key}: foreground is not cropped to the mask's box"
        alpha = np.asarray(fg)[..., 3]
        assert set(np.unique(alpha)) <= {0, 255} and alpha.any(), f"{key}: alpha is not the mask"
        area = int((alpha > 0).sum())
        assert fg_ratio == bg_ratio == pytest.approx(area / (bg.size[0] * bg.size[1]), rel=1e-9), key
        assert fg_ratio == rec.ratio
    # The item without an object is in the index, not in ForNet's lists.
    if split == "train":
        assert index[f"{CLASSES[1]}/empty.JPEG"].status == "no_object"
        assert f"{CLASSES[1]}/empty.WEBP" not in ds.foregrounds
    # background_combination="all"/"same" draw from the pruned backgrounds, whose ratios must exist.
    assert set(ds.backgrounds) == {k for k, r in ok.items() if r.ratio < 0.8}
    assert all(ds.fg_bg_ratios[b] < 0.8 for b in ds.backgrounds)
    assert set(ds.cls_to_allowed_bg) == set(ds.classes), "every class keeps a background for 'same'"


def test_nothing_but_items_in_the_folders_fornet_lists(train_cache):
    """ForNet lists class folders without an extension filter: a temporary or stray file there
    would be read as an image."""
    cache = train_cache[1]
    for kind, ext in (("foregrounds", ".WEBP"), ("backgrounds", ".JPEG")):
        top = cache / "train" / kind
        assert all(p.is_dir() for p in top.iterdir()), f"only class folders in {top}"
        assert {p.suffix for p in top.glob("*/*")} == {ext}
