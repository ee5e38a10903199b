"""The feathered edge of a pasted object does not depend on where the canvas ends.

Reference: the same object pasted on a canvas larger by a margin on every side, then cropped back
(ForNet pastes on the full image and crops afterwards). Near a canvas border the kernels used to
renormalise the blur over the pixels on the canvas, so an object ending just inside the border kept
a hard, unfaded edge there (alpha 0.58 instead of 0.17 one pixel in, measured), and an object
ending just outside it was faded differently again.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from forcomp.recombine.functional import composite
from forcomp.recombine.params import RecombineParams

METHODS = ["window", "matrix"]


def _objects(B: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hf, wf = 40, 52
    yy, xx = torch.meshgrid(torch.arange(hf), torch.arange(wf), indexing="ij")
    fg = torch.zeros(B, 4, hf, wf, dtype=torch.uint8)
    fg[:, :3] = torch.randint(40, 220, (B, 3, hf, wf), generator=g, dtype=torch.uint8)
    blob = ((yy - hf / 2 + 0.5) / (hf / 2)) ** 2 + ((xx - wf / 2 + 0.5) / (wf / 2)) ** 2 <= 1.0
    fg[:, 3] = blob.to(torch.uint8) * 255
    fg[::3, 3] = 255  # every third object fills its box: it ends exactly at its box edges
    hw = torch.tensor([[hf, wf]] * B)
    bg = torch.randint(0, 256, (B, 3, 64, 80), generator=g, dtype=torch.uint8)
    return fg, hw, bg


def _near_borders(B: int) -> RecombineParams:
    """Objects ending just inside, on, and just outside each border of a 64x80 canvas."""
    w, h = torch.full((B,), 30.0), torch.full((B,), 24.0)
    off = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0, 4.0] * (B // 6 + 1))[:B]
    side = torch.arange(B) % 4
    x0 = torch.where(side == 0, off, torch.where(side == 1, 80 - 30 - off, torch.full((B,), 25.0)))
    y0 = torch.where(side == 2, off, torch.where(side == 3, 64 - 24 - off, torch.full((B,), 20.0)))
    return RecombineParams(x0=x0, y0=y0, w=w, h=h, sigma=torch.full((B,), 2.5))


@pytest.mark.parametrize("method", METHODS)
def test_feathering_does_not_depend_on_where_the_canvas_ends(method: str) -> None:
    fg, hw, bg = _objects()
    p = _near_borders(fg.shape[0])
    m = 16
    big_bg = F.pad(bg, (m, m, m, m))
    big, big_mask = composite(fg, hw, big_bg, p._replace(x0=p.x0 + m, y0=p.y0 + m), method=method)
    img, mask = composite(fg, hw, bg, p, method=method)
    torch.testing.assert_close(mask, big_mask[:, m:-m, m:-m], atol=0.02, rtol=0)
    assert (img.int() - big[:, :, m:-m, m:-m].int()).abs().max() <= 3


def test_an_object_ending_at_the_border_is_faded_there_and_one_crossing_it_is_not() -> None:
    fg, hw, bg = _objects(B=2)
    fg[:, 3] = 255  # a full box: the object ends exactly at its box
    R = RecombineParams
    ends = R(*(torch.tensor([v, v]) for v in (0.0, 10.0, 30.0, 24.0, 2.5)))  # left edge on x = 0
    crosses = ends._replace(x0=torch.tensor([-15.0, -15.0]))  # continues 15 px past x = 0
    for method in METHODS:
        _, m_end = composite(fg, hw, bg, ends, method=method)
        _, m_cross = composite(fg, hw, bg, crosses, method=method)
        assert m_end[0, 20, 0] < 0.3, method  # faded: the object ends there
        assert m_cross[0, 20, 0] > 0.95, method  # not faded: the object goes on past the border
