"""A tiny synthetic colour cache written directly in the ForNet/forcomp layout, and helpers.

Class k (``n0000000{k+1}``): a roughly round object of colour ``OBJECT_RGB[k]`` whose source image
had a background of colour ``BACKGROUND_RGB[k]`` (see ``biased_models.py``). Files::

    CACHE/val/foregrounds/<cls>/<stem>.WEBP   RGBA tight crop, alpha = mask
    CACHE/val/backgrounds/<cls>/<stem>.JPEG   full-size background (object "inpainted" away)
    CACHE/fg_bg_ratios_val.json               {"<cls>/<stem>.JPEG": mask_area / image_area}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from biased_models import BACKGROUND_RGB, OBJECT_RGB

from forcomp.cache.layout import CacheLayout
from forcomp.cache.writer import CacheWriter, encode_background, encode_foreground

N_CLASSES = 4
PER_CLASS = 8
SOURCE_PX = 80
EVAL_SIZE = 96  # nonant cells of 32 px: ForNet's edge feathering (sigma ≤ 4 px) leaves the objects visible
COLOUR_CLASSES = tuple(f"n{k + 1:08d}" for k in range(N_CLASSES))


def make_colour_cache(
    root: Path,
    *,
    per_class: int = PER_CLASS,
    split: str = "val",
    seed: int = 0,
    classes: tuple[str, ...] = COLOUR_CLASSES,
) -> Path:
    """Write the synthetic colour cache under ``root`` and return it (``classes``: folder names, sorted,
    at most 4; class k gets colour k)."""
    rng = np.random.default_rng(seed)
    layout = CacheLayout(root, split)
    writer = CacheWriter(layout)
    ratios: dict[str, float] = {}
    yy, xx = np.mgrid[0:SOURCE_PX, 0:SOURCE_PX]
    for k, cls in enumerate(classes):
        obj = np.array(OBJECT_RGB[k]) * 255.0
        bgc = np.array(BACKGROUND_RGB[k]) * 255.0
        for i in range(per_class):
            stem = f"{cls}_{i:04d}"
            area = rng.uniform(0.18, 0.26)
            aspect = rng.uniform(0.85, 1.18)
            ry = np.sqrt(area * SOURCE_PX**2 / np.pi * aspect)
            rx = np.sqrt(area * SOURCE_PX**2 / np.pi / aspect)
            cy, cx = rng.uniform(0.42, 0.58, 2) * SOURCE_PX
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            image = np.clip(obj + rng.normal(0, 4, (SOURCE_PX, SOURCE_PX, 3)), 0, 255).astype(np.uint8)
            fg, _ = encode_foreground(image, mask)
            bg = np.clip(bgc + rng.normal(0, 4, (SOURCE_PX, SOURCE_PX, 3)), 0, 255).astype(np.uint8)
            writer.write_item(cls, stem, fg, encode_background(bg))
            ratios[CacheLayout.ratio_key(cls, stem)] = float(mask.mean())
    layout.ratios_path.write_text(json.dumps(ratios, indent=0, sort_keys=True), encoding="utf-8")
    return root
