"""A synthetic classification dataset with known shortcuts, for the bias demo.

K object classes are drawn as distinct shapes in random bright colours (colour carries no class
information). Backgrounds come in K kinds (stripes, checks, blobs, gradient) in muted colours.
- train split: class k appears on background kind k with probability ``p_bg_shortcut`` (else a
  random kind), near the centre, at a typical size;
- val split: drawn like train (shortcuts present, new images). The bias metrics run on it: like
  ImageNet's val set, its backgrounds correlate with the class, which is what background
  robustness needs to see a model's reliance on them;
- test split: random background kind, position anywhere, size from a wide range — the shortcuts
  are broken, so only a model that recognises the shape does well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("disk", "square", "triangle", "cross")
BACKGROUNDS = ("hstripes", "checks", "blobs", "vgradient")
SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}  # one random stream per split


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c1 = rng.uniform(40, 120, 3)
    c2 = rng.uniform(40, 120, 3)
    if kind == "hstripes":
        period = rng.uniform(4, 8)
        t = (np.sin(2 * np.pi * yy / period + rng.uniform(0, 6.3)) > 0).astype(np.float32)
    elif kind == "checks":
        cell = rng.integers(4, 8)
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    elif kind == "blobs":
        t = np.zeros_like(xx)
        for _ in range(6):
            cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(3, 8)]
            t = np.maximum(t, np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
    else:
        t = yy / (size - 1)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    img += rng.normal(0, 3, img.shape)
    return img


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "disk":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        s = r * 0.886  # same area as the disk
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":
        h = r * 1.35
        return (dy <= h / 2) & (dy >= -h / 2) & (np.abs(dx) <= (dy + h / 2) * 0.8)
    w = r * 0.42
    L = r * 1.15
    return ((np.abs(dx) <= w) & (np.abs(dy) <= L)) | ((np.abs(dy) <= w) & (np.abs(dx) <= L))


def make_scene(
    cls: int, split: str, size: int, rng: np.random.Generator, p_bg_shortcut: float = 0.9
) -> np.ndarray:
    k = len(SHAPES)
    if split in ("train", "val"):
        kind = cls if rng.random() < p_bg_shortcut else int(rng.integers(k))
        cx, cy = size / 2 + rng.normal(0, size * 0.04, 2)
        r = size * rng.uniform(0.17, 0.21)
    else:
        kind = int(rng.integers(k))
        r = size * rng.uniform(0.08, 0.3)
        cx, cy = rng.uniform(r, size - r, 2)
    img = _background(BACKGROUNDS[kind], size, rng)
    m = _shape_mask(SHAPES[cls], size, cx, cy, r)
    colour = rng.uniform(150, 255, 3)
    colour[rng.integers(3)] = rng.uniform(0, 60)  # saturated: one channel low
    img[m] = colour + rng.normal(0, 4, (int(m.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_split(root: Path, split: str, per_class: int, size: int = 48, seed: int = 0) -> Path:
    """Write ``root/<split>/n0000000k/<i>.png``; returns the split folder."""
    rng = np.random.default_rng([seed, SPLIT_STREAM[split]])
    out = root / split
    for cls in range(len(SHAPES)):
        d = out / f"n{cls + 1:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(make_scene(cls, split, size, rng)).save(d / f"{i:05d}.png")
    return out
