"""A synthetic cache written directly in the ForNet layout: known shapes, colours and ratios."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASS_BG = {"n00000001": (200, 30, 30), "n00000002": (30, 200, 30), "n00000003": (30, 30, 200)}
FG_COLOUR = (250, 250, 0)


def make_cache(
    root: Path, split: str = "val", per_class: int = 3, fg_px: int = 40, bg_size=(120, 90), ratios=None
) -> Path:
    """Solid yellow square foregrounds (fg_px²), solid class-coloured backgrounds."""
    ratios_out = {}
    w, h = bg_size
    for cls, colour in CLASS_BG.items():
        for i in range(per_class):
            stem = f"img{i}"
            fgd, bgd = root / split / "foregrounds" / cls, root / split / "backgrounds" / cls
            fgd.mkdir(parents=True, exist_ok=True)
            bgd.mkdir(parents=True, exist_ok=True)
            rgba = np.zeros((fg_px, fg_px, 4), np.uint8)
            rgba[..., :3] = FG_COLOUR
            rgba[..., 3] = 255
            Image.fromarray(rgba, "RGBA").save(fgd / f"{stem}.WEBP", lossless=True)
            Image.new("RGB", (w, h), colour).save(bgd / f"{stem}.JPEG", quality=98)
            key = f"{cls}/{stem}.JPEG"
            ratios_out[key] = (ratios or {}).get(key, fg_px * fg_px / (w * h))
    (root / f"fg_bg_ratios_{split}.json").write_text(json.dumps(ratios_out))
    return root


def zip_cache(src: Path, dst: Path, split: str = "val") -> Path:
    """The published ForNet form: foregrounds_<split>.zip / backgrounds_<split>.zip + ratios JSON."""
    dst.mkdir(parents=True, exist_ok=True)
    for kind in ("foregrounds", "backgrounds"):
        with zipfile.ZipFile(dst / f"{kind}_{split}.zip", "w", zipfile.ZIP_STORED) as z:
            for p in sorted((src / split / kind).rglob("*.*")):
                z.write(p, f"{split}/{kind}/{p.parent.name}/{p.name}")
    (dst / f"fg_bg_ratios_{split}.json").write_text((src / f"fg_bg_ratios_{split}.json").read_text())
    return dst


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return make_cache(tmp_path / "cache")
