"""``forcomp preview``: a PNG grid of source / foreground / inpainted background / recombinations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from forcomp.cache.reader import CacheReader

TILE = 160


def _tile(img: Image.Image, checker: bool = False) -> Image.Image:
    img = img.copy()
    img.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (TILE, TILE), (255, 255, 255))
    if checker:
        yy, xx = np.mgrid[0:TILE, 0:TILE]
        board = np.where(((yy // 10 + xx // 10) % 2)[..., None] == 0, 200, 240).astype(np.uint8).repeat(3, -1)
        canvas = Image.fromarray(board)
    x, y = (TILE - img.width) // 2, (TILE - img.height) // 2
    if img.mode == "RGBA":
        canvas.paste(img, (x, y), img)
    else:
        canvas.paste(img.convert("RGB"), (x, y))
    return canvas


def render_preview(
    cache: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "val",
    rows: int = 5,
    recombinations: int = 4,
    seed: int = 0,
) -> Path:
    """Write the grid to ``out``: one row per item (first of each class, then more), ``ForComp`` draws."""
    import io

    from forcomp.recombine.dataset import ForComp

    reader = CacheReader(cache, split)
    # whole-background composites (no training crop/flip): the recombination itself, legible
    ds = ForComp(cache, split=split, size=TILE, background="all", seed=seed, crop_scale=None, hflip_prob=0.0)
    order: list[int] = []
    seen: set[str] = set()
    for i, p in enumerate(ds.foregrounds):
        if p.cls not in seen:
            seen.add(p.cls)
            order.append(i)
    order += [i for i in range(len(ds)) if i not in order]
    order = order[:rows]
    header = ["source", "foreground", "background"] + [f"recombined {k + 1}" for k in range(recombinations)]
    W = TILE * len(header)
    grid = Image.new("RGB", (W, 20 + TILE * len(order)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(header):
        draw.text((c * TILE + 6, 4), name, fill=(0, 0, 0))
    for r, i in enumerate(order):
        part = ds.foregrounds[i]
        y = 20 + r * TILE
        src = reader.sources.get(part.key)
        if src and Path(src).exists():
            from forcomp.decode import load_rgb

            grid.paste(_tile(Image.fromarray(load_rgb(Path(src)))), (0, y))
        grid.paste(
            _tile(Image.open(io.BytesIO(reader.fg_bytes(part))).convert("RGBA"), checker=True), (TILE, y)
        )
        bgp = next((b for b in reader.backgrounds if b.key == part.key), None)
        if bgp is not None:
            grid.paste(_tile(Image.open(io.BytesIO(reader.bg_bytes(bgp))).convert("RGB")), (2 * TILE, y))
        for k in range(recombinations):
            ds.set_epoch(k)
            img = ds[i][0]
            arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            grid.paste(Image.fromarray(arr), ((3 + k) * TILE, y))
        draw.text((4, y + 4), part.cls, fill=(255, 255, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
