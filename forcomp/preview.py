"""``forcomp preview``: a PNG grid of source / foreground / inpainted background / recombinations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
    """Black text on a white box: readable on any tile, light or dark."""
    box = draw.textbbox(xy, text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(255, 255, 255))
    draw.text(xy, text, fill=(0, 0, 0))


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
    from forcomp.recombine.dataset import ForComp

    # whole-background composites (no training crop/flip): the recombination itself, legible
    ds = ForComp(cache, split=split, size=TILE, background="all", seed=seed, crop_scale=None, hflip_prob=0.0)
    reader = ds.reader
    order: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(ds.labels.tolist()):
        if label not in seen:
            seen.add(label)
            order.append(i)
    order += [i for i in range(len(ds)) if i not in set(order)][: max(0, rows - len(order))]
    order = order[:rows]
    header = ["source", "foreground", "background"] + [f"recombined {k + 1}" for k in range(recombinations)]
    W = TILE * len(header)
    grid = Image.new("RGB", (W, 20 + TILE * len(order)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(header):
        draw.text((c * TILE + 6, 4), name, fill=(0, 0, 0))
    for r, i in enumerate(order):
        y = 20 + r * TILE
        src = reader.source_path(i) if reader.has_sources else None
        if src is not None and src.exists():
            from forcomp.decode import load_rgb

            grid.paste(_tile(Image.fromarray(load_rgb(src))), (0, y))
        fg = reader.decode_fg(i).permute(1, 2, 0).numpy()
        grid.paste(_tile(Image.fromarray(np.ascontiguousarray(fg), "RGBA"), checker=True), (TILE, y))
        own_bg = int(reader.fg_bg[i])
        if own_bg >= 0:
            bg = reader.decode_bg(own_bg).permute(1, 2, 0).numpy()
            grid.paste(_tile(Image.fromarray(np.ascontiguousarray(bg), "RGB")), (2 * TILE, y))
        for k in range(recombinations):
            ds.epoch = k
            img = ds[i][0]
            arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            grid.paste(Image.fromarray(arr), ((3 + k) * TILE, y))
        _label(draw, (4, y + 4), ds.classes[int(ds.labels[i])])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
