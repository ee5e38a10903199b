"""Synthetic pictures and ImageFolders shared by the tests: classical-segmentable scenes, noise with holes."""

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


def noise_images(sizes=((48, 64), (64, 40), (37, 53)), *, seed: int = 0) -> list[np.ndarray]:
    """Uniform-noise RGB uint8 images of the given ``(h, w)`` sizes, from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def noise_with_holes(
    sizes, *, rows=((1, 4), (1, 2)), cols=((1, 3), (2, 3)), seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`noise_images` plus a rectangular hole in each: rows ``h*a//b`` to ``h*c//d`` (fractions)."""
    imgs = noise_images(sizes, seed=seed)
    masks = []
    for h, w in sizes:
        m = np.zeros((h, w), bool)
        (r0, r0d), (r1, r1d) = rows
        (c0, c0d), (c1, c1d) = cols
        m[h * r0 // r0d : h * r1 // r1d, w * c0 // c0d : w * c1 // c1d] = True
        masks.append(m)
    return imgs, masks


def blob_folder(root: Path, classes=("n01440764", "n02085620"), per_class: int = 2, size=(64, 48)) -> Path:
    """A tiny ImageFolder: wnid-named classes, JPEGs with one coloured ellipse on a textured ground."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng(100 * ci + i)
            img = np.stack([90 + 20 * np.sin(xx / 5 + i), 110 + 15 * np.cos(yy / 4), 100 + 0 * xx], -1)
            img = img + rng.normal(0, 3, img.shape)
            inside = ((xx - w / 2) / (0.25 * w)) ** 2 + ((yy - h / 2) / (0.3 * h)) ** 2 <= 1
            img[inside] = [(220, 40, 40), (40, 60, 220)][ci % 2]
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                root / cls / f"img{i}.JPEG", quality=95
            )
    return root
