"""Synthetic ImageFolders that the classical segmenter can segment (for the build, CLI and Ray tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("n00000001", "n00000002", "n00000003")
OBJ_COLOURS = {"n00000001": (220, 40, 40), "n00000002": (40, 200, 60), "n00000003": (50, 70, 230)}


def synthetic_scene(cls: str, i: int, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """A textured grey-brown background with one coloured ellipse (the object) near the centre."""
    w, h = size
    rng = np.random.default_rng(1000 * int(cls[1:]) + i)
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack(
        [110 + 20 * np.sin(xx / 7.0 + i), 100 + 15 * np.cos(yy / 5.0), 90 + 10 * np.sin((xx + yy) / 9.0)], -1
    )
    bg += rng.normal(0, 4, bg.shape)
    cx = w / 2 + rng.uniform(-0.1, 0.1) * w
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    ax, ay = rng.uniform(0.18, 0.3) * w, rng.uniform(0.2, 0.32) * h
    inside = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    img = bg.copy()
    img[inside] = np.array(OBJ_COLOURS.get(cls, (200, 200, 40))) + rng.normal(0, 6, (int(inside.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_imagefolder(root: Path, classes=CLASSES, per_class: int = 3, size=(96, 72)) -> Path:
    """Write ``root/<class>/img<i>.<ext>``, cycling through extensions in mixed case."""
    exts = [".jpg", ".PNG", ".jpeg", ".webp", ".JPG"]
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = exts[i % len(exts)]
            img = Image.fromarray(synthetic_scene(cls, i, size))
            kw = {"quality": 95} if ext.lower() in (".jpg", ".jpeg", ".webp") else {}
            img.save(root / cls / f"img{i}{ext}", **kw)
    return root
