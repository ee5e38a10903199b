"""Hole mask and feathered blend against independent references (issue 17: not our two kernels compared).

The hole is the object grown by a disc of radius ``dilate_px`` scaled to the image's long side
(500 px reference); the blend weight is the object grown by half that radius, blurred by a Gaussian
of ``feather_px`` (scaled, at most a quarter of the radius), and never below 1 on the object. The
reference Gaussian here is written out in numpy (cv2's kernel size rule for float images, reflect-101
borders), not taken from cv2.
"""

from __future__ import annotations

import numpy as np
import pytest

from forcomp.offline.masks import REFERENCE_SIDE_PX, _scaled, feathered_blend, hole_mask


def _dot(h: int, w: int, y: int, x: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y, x] = True
    return m


def _disc_extent(m: np.ndarray) -> tuple[int, int, int]:
    ys, xs = np.nonzero(m)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1), int(m.sum())


def test_scaled_to_the_long_side():
    assert REFERENCE_SIDE_PX == 500
    assert _scaled(8, (500, 375)) == 8 and _scaled(8, (375, 500, 3)) == 8
    assert _scaled(8, (1000, 10)) == 16 and _scaled(8, (10, 250)) == 4
    assert _scaled(3, (250, 100)) == 2  # 1.5 rounds to even
    assert _scaled(3, (50, 50)) == 0 and _scaled(-4, (500, 500)) == 0


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
    r = max(1, _scaled(dilate_px, shape))
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
