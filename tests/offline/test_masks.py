"""Mask operations shared by the backends: candidate clean-up, the hole to fill, the blend back.

The hole is the object grown by a disc of radius ``dilate_px`` scaled to the image's long side
(500 px reference); the blend weight is the object grown by half that radius, blurred by a Gaussian
of ``feather_px`` (scaled, at most a quarter of the radius), and never below 1 on the object. Both
are checked against independent references: the reference Gaussian here is written out in numpy
(cv2's kernel size rule for float images, reflect-101 borders), not taken from cv2.

Every hole pixel stays a hole when a backend fills at a reduced size: a lone object pixel lost in
the downscaled mask is offered to the inpainter as known context next to its own hole, so the
object's colour is copied into the "object-free" background. The OpenCV default, LaMa, the
diffusion pipeline and the scorer's cheap fill all downscale the mask.
"""

from __future__ import annotations

import numpy as np
import pytest

from forcomp.offline.inpainters.opencv import OpenCVInpainter
from forcomp.offline.masks import (
    REFERENCE_SIDE_PX,
    clean_mask,
    dedupe,
    feathered_blend,
    hole_mask,
    keep_main_object,
    mask_iou,
    resize_hole,
    scaled_px,
)
from forcomp.offline.segmenters.base import MaskCandidate

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


def _dot(h: int, w: int, y: int, x: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y, x] = True
    return m


def _disc_extent(m: np.ndarray) -> tuple[int, int, int]:
    ys, xs = np.nonzero(m)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1), int(m.sum())


def test_scaled_to_the_long_side():
    assert REFERENCE_SIDE_PX == 500
    assert scaled_px(8, (500, 375)) == 8 and scaled_px(8, (375, 500, 3)) == 8
    assert scaled_px(8, (1000, 10)) == 16 and scaled_px(8, (10, 250)) == 4
    assert scaled_px(3, (250, 100)) == 2  # 1.5 rounds to even
    assert scaled_px(3, (50, 50)) == 0 and scaled_px(-4, (500, 500)) == 0


@pytest.mark.parametrize(
    "shape, px, r", [((500, 500), 3, 3), ((1000, 600), 3, 6), ((60, 40), 3, 1), ((250, 90), 8, 4)]
)
def test_hole_is_a_disc_of_the_scaled_radius(shape, px, r):
    h, w = shape
    m = _dot(h, w, h // 2, w // 2)
    hole = hole_mask(m, px)
    assert hole.dtype == bool and hole.shape == m.shape
    assert _disc_extent(hole)[:2] == (2 * r + 1, 2 * r + 1), "reaches r pixels each way, no further"
    yy, xx = np.mgrid[:h, :w]
    d2 = (yy - h // 2) ** 2 + (xx - w // 2) ** 2
    assert hole[d2 <= (r - 0.5) ** 2].all() and not hole[d2 > (r + 0.5) ** 2].any(), "a disc, not a square"
    assert hole[m].all()
    blob = np.zeros((h, w), bool)
    blob[h // 3 : h // 2, w // 4 : w // 2] = True
    blob[h // 2, w // 2 : w // 2 + 3] = True
    assert np.array_equal(hole_mask(blob, px), _disc(blob, r))


def test_one_pixel_dilation_is_kept_on_small_images():
    """dilate_px = 1 grows the hole by one pixel (a cross), even where it scales below a pixel."""
    for shape in ((500, 500), (60, 40)):
        m = _dot(*shape, 20, 20)
        assert _disc_extent(hole_mask(m, 1)) == (3, 3, 5)


def test_no_dilation_is_a_copy():
    m = _dot(40, 40, 5, 5)
    for px in (0, -3):
        hole = hole_mask(m, px)
        assert np.array_equal(hole, m) and hole is not m and hole.dtype == bool
        hole[0, 0] = True
        assert not m[0, 0], "the caller's mask is not changed through the result"


def _gauss_ref(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (cv2's float kernel size: round(8 sigma + 1) made odd; reflect-101 border)."""
    ksize = int(np.floor(sigma * 8 + 1 + 0.5)) | 1
    half = ksize // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    p = np.pad(img.astype(np.float64), half, mode="reflect")
    rows = sum(k[i] * p[i : i + img.shape[0], :] for i in range(ksize))
    return sum(k[i] * rows[:, i : i + img.shape[1]] for i in range(ksize))


def _disc(m: np.ndarray, r: int) -> np.ndarray:
    """Dilation by OpenCV's elliptic disc, spelled out: row dy reaches round(r sqrt(1 - dy²/r²)) each way."""
    if r <= 0:
        return m.copy()
    h, w = m.shape
    p = np.pad(m, r)
    out = np.zeros(m.shape, bool)
    for dy in range(-r, r + 1):
        half = 0 if abs(dy) == r else int(np.floor(r * np.sqrt(1 - dy * dy / (r * r)) + 0.5))
        for dx in range(-half, half + 1):
            out |= p[r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def _scene(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    orig = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    filled = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    m = np.zeros((h, w), bool)
    m[h // 3 : h // 2, w // 4 : w // 2] = True
    m[h // 2 : h // 2 + 5, w // 2 - 3 : w // 2 + 9] = True  # not a rectangle
    return orig, filled, m


@pytest.mark.parametrize(
    "shape, dilate_px, feather_px, r, sigma",
    [
        ((100, 125), 40, 40, 10, 2.5),  # sigma capped at r / 4
        ((100, 125), 40, 8, 10, 2.0),  # sigma = feather scaled
        ((500, 300), 8, 20, 8, 2.0),
        ((100, 100), 20, 40, 4, 1.0),
    ],
)
def test_feathered_blend_matches_reference(shape, dilate_px, feather_px, r, sigma):
    orig, filled, m = _scene(*shape)
    out = feathered_blend(orig, filled, m, dilate_px=dilate_px, feather_px=feather_px)
    assert out.dtype == np.uint8 and out.shape == orig.shape
    core = _disc(m, r // 2)
    alpha = np.maximum(_gauss_ref(core.astype(np.float64), sigma), m)[..., None]
    ref = alpha * filled + (1 - alpha) * orig
    diff = out.astype(np.float64) - ref
    assert np.abs(diff).max() <= 0.51 + 1e-3, "within rounding of the reference"
    assert abs(diff.mean()) < 0.05, "rounded to nearest, not truncated"
    assert np.array_equal(out[m], filled[m]), "no object pixel survives"
    far = ~_disc(m, r)
    assert np.array_equal(out[far], orig[far]) or sigma * 4 > r // 2, "untouched outside the hole"


@pytest.mark.parametrize(
    "shape, dilate_px, feather_px", [((100, 100), 20, 0), ((100, 100), 4, 40), ((50, 50), 3, 50)]
)
def test_hard_edge_when_sigma_is_tiny(shape, dilate_px, feather_px):
    """sigma <= 0.3 (no feather, or r < 2): the weight is the grown core itself, 0 or 1."""
    orig, filled, m = _scene(*shape, seed=1)
    out = feathered_blend(orig, filled, m, dilate_px=dilate_px, feather_px=feather_px)
    r = max(1, scaled_px(dilate_px, shape))
    core = _disc(m, r // 2)
    assert np.array_equal(out[core], filled[core]) and np.array_equal(out[~core], orig[~core])


def test_sigma_half_blurs():
    """r = 2, a big feather: sigma = 0.5 > 0.3, the edge is soft (between the two images)."""
    orig = np.zeros((500, 500, 3), np.uint8)
    filled = np.full((500, 500, 3), 200, np.uint8)
    m = np.zeros((500, 500), bool)
    m[200:300, 200:300] = True
    out = feathered_blend(orig, filled, m, dilate_px=2, feather_px=50)
    ring = out[150:350, 150:350, 0]
    assert ((ring > 0) & (ring < 200)).any()
    ref = np.maximum(_gauss_ref(_disc(m, 1).astype(np.float64), 0.5), m) * 200
    assert np.abs(out[..., 0] - ref).max() <= 0.51


def test_no_dilation_replaces_the_object_only():
    orig, filled, m = _scene(60, 80, seed=2)
    out = feathered_blend(orig, filled, m, dilate_px=0, feather_px=10)
    assert np.array_equal(out[m], filled[m]) and np.array_equal(out[~m], orig[~m])


# ----------------------------------------------------------------------------- candidate clean-up


def _blocks(*boxes: tuple[int, int, int, int], shape=(40, 40)) -> np.ndarray:
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_keep_main_object_keeps_parts_of_at_least_keep_frac_of_the_largest():
    big, part = (0, 10, 0, 10), (20, 25, 20, 25)  # 100 and 25 pixels, not touching
    m = _blocks(big, part)
    assert np.array_equal(keep_main_object(m, keep_frac=0.25), m), "25 >= 0.25 * 100 is kept"
    assert np.array_equal(keep_main_object(m, keep_frac=0.26), _blocks(big))
    assert np.array_equal(keep_main_object(_blocks(big, (30, 31, 30, 31))), _blocks(big)), "default 0.25"
    diagonal = _blocks((0, 5, 0, 5), (5, 6, 5, 6))  # touching at a corner: one object (8-connected)
    assert np.array_equal(keep_main_object(diagonal, keep_frac=1.0), diagonal)
    empty = np.zeros((8, 8), np.uint8)
    out = keep_main_object(empty)
    assert out.dtype == bool and not out.any()


def test_clean_mask_fills_small_holes_and_drops_specks():
    pytest.importorskip("segment_anything")
    m = _blocks((5, 30, 5, 30))
    m[10, 10] = False  # a 1-pixel hole
    m[36, 36] = True  # a 1-pixel speck
    out = clean_mask(m, min_region_ratio=0.001)  # 1.6 px: both go
    assert out.dtype == bool and np.array_equal(out, _blocks((5, 30, 5, 30)))
    kept = clean_mask(m, min_region_ratio=0.0)  # below one pixel: no region removal, main object kept
    assert not kept[10, 10] and not kept[36, 36]
    assert not clean_mask(np.zeros((20, 20), bool)).any()


def test_mask_iou_and_dedupe():
    a, b = _blocks((0, 10, 0, 10)), _blocks((0, 10, 5, 15))
    assert mask_iou(a, b) == pytest.approx(50 / 150) and mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 0.0
    low, high, other = (
        MaskCandidate(a, 0.2),
        MaskCandidate(b, 0.9),
        MaskCandidate(_blocks((20, 30, 20, 30)), 0.5),
    )
    assert dedupe([low, other, high], iou=0.3) == [high, other], "best first; a overlaps b by 1/3 > 0.3"
    assert dedupe([low, other, high], iou=50 / 150) == [high, other, low], "an overlap equal to iou is kept"
