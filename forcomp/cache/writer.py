"""Encode and atomically write one item's foreground (RGBA WEBP) and background (JPEG)."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from forcomp.cache.atomic import TMP_DIRNAME, atomic_write_bytes
from forcomp.cache.layout import CacheLayout


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of a non-empty ``(H, W)`` bool mask, XYXY with exclusive end."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def encode_foreground(
    image: np.ndarray, mask: np.ndarray, *, quality: int = 95
) -> tuple[bytes, tuple[int, int, int, int]]:
    """RGBA WEBP of the object cropped tightly to its mask; alpha = mask (255 in, 0 out).

    The alpha plane is stored losslessly (``alpha_quality=100``), so ``alpha > 0`` reproduces the
    mask exactly; colour outside the object is zeroed (it is invisible and compresses to nothing).
    """
    x0, y0, x1, y1 = mask_bbox(mask)
    crop = image[y0:y1, x0:x1]
    m = mask[y0:y1, x0:x1]
    rgba = np.zeros((*crop.shape[:2], 4), np.uint8)
    rgba[..., :3] = np.where(m[..., None], crop, 0)
    rgba[..., 3] = np.where(m, 255, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="WEBP", quality=quality, alpha_quality=100, method=4)
    return buf.getvalue(), (x0, y0, x1, y1)


def encode_background(image: np.ndarray, *, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality, subsampling=0, optimize=True)
    return buf.getvalue()


@dataclass
class CacheWriter:
    """Writes item files of one split atomically (temporary files in ``CACHE/.tmp``)."""

    layout: CacheLayout

    @property
    def tmp_dir(self) -> Path:
        return self.layout.root / TMP_DIRNAME

    def write_item(self, cls: str, stem: str, fg_webp: bytes, bg_jpeg: bytes) -> None:
        # Background first: an item is usable once its foreground exists, so that goes last.
        atomic_write_bytes(self.layout.bg_path(cls, stem), bg_jpeg, tmp_dir=self.tmp_dir)
        atomic_write_bytes(self.layout.fg_path(cls, stem), fg_webp, tmp_dir=self.tmp_dir)

    def remove_item(self, cls: str, stem: str) -> bool:
        """Delete an item's files (no error if absent); True if any was there.

        Called before the item's new, not-ok record is appended to the index. The foreground goes
        first (the reverse of :meth:`write_item`): a process killed in between leaves at worst an
        ``ok`` record whose files are missing, which readers skip and a resumed build redoes.
        """
        removed = False
        for path in (self.layout.fg_path(cls, stem), self.layout.bg_path(cls, stem)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        return removed


def item_files_state(layout: CacheLayout, cls: str, stem: str) -> tuple[bool, bool]:
    """``(complete, any_present)`` of an item's two files, from one ``stat`` each (no decoding).

    ``complete``: foreground and background both exist and are non-empty.
    """
    sizes = []
    for path in (layout.fg_path(cls, stem), layout.bg_path(cls, stem)):
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:  # missing, or a path component that is not a folder: not there
            sizes.append(-1)
    return all(n > 0 for n in sizes), any(n >= 0 for n in sizes)
