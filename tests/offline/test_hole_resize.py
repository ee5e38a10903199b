"""Every hole pixel stays a hole when a backend fills at a reduced size.

A lone object pixel lost in the downscaled mask is offered to the inpainter as known context next
to its own hole, so the object's colour is copied into the "object-free" background. The OpenCV
default, LaMa, the diffusion pipeline and the scorer's cheap fill all downscale the mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from forcomp.offline.inpainters.opencv import OpenCVInpainter
from forcomp.offline.masks import resize_hole

POSITIONS = [(0, 0), (1, 0), (0, 1), (3, 5), (37, 22), (63, 47), (62, 46), (17, 40)]


@pytest.mark.parametrize("size", [(16, 12), (20, 15), (7, 5), (33, 25), (128, 96)])
def test_every_hole_pixel_lands_in_a_hole_cell(size: tuple[int, int]) -> None:
    H, W = 48, 64
    w, h = size
    assert not resize_hole(np.zeros((H, W), bool), size).any()
    for x, y in POSITIONS:
        m = np.zeros((H, W), bool)
        m[y, x] = True
        small = resize_hole(m, size)
        assert small.shape == (h, w)
        # the cell(s) covering the pixel's area: [x, x+1) maps to [x*w/W, (x+1)*w/W)
        cx, cy = int(x * w / W), int(y * h / H)
        assert small[cy, cx], (x, y, size)
        # and the hole does not spread beyond the cells that touch the pixel
        assert small.sum() <= 4 * max(1, round(w / W + 1)) * max(1, round(h / H + 1))


@pytest.mark.parametrize("flag", ["telea", "ns"])
def test_opencv_fill_at_work_size_does_not_copy_a_thin_object(flag: str) -> None:
    """A 1 px wide object (a stick, an antenna) covers a quarter of each 4x4 cell at work size: the
    old uint8 area resize rounded that to "known", and the fill kept a quarter of the object's red."""
    grey = np.full((48, 64, 3), 120, np.uint8)
    inp = OpenCVInpainter(method=flag, work_px=16)
    for x in (0, 1, 2, 3, 17, 30, 62, 63):
        img = grey.copy()
        img[:, x] = (255, 0, 0)
        mask = np.zeros((48, 64), bool)
        mask[:, x] = True
        out = inp.inpaint([img], [mask])[0]
        assert np.abs(out[:, x, 0].astype(int) - 120).max() <= 12, (x, out[:, x, 0].max())
