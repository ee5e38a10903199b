"""Weight-free segmenter: a border-contrast saliency prior seeds OpenCV GrabCut.

How it works, per image (at most ``work_px`` on the long side, the mask is upsampled after):
1. Saliency: how far each pixel's Lab colour is from the colours of the image border (k-means
   palette of a border strip), times a mild centre prior. The border-prior assumption: the main
   object rarely touches all four edges, the background usually does.
2. GrabCut seeded with it: the border strip is sure background, the most salient central pixels
   sure foreground, the rest probable foreground/background by saliency (Otsu threshold).
3. Clean-up: open/close, fill holes, keep the largest connected object (plus large parts near it).

Limits (honest): it finds *the most distinctive region that is not like the border*. It fails when
the object touches most of the border (close-ups), when the background is as colourful as the
object, or for several separate objects (it keeps the largest). Use SAM for real datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from forcomp.offline.masks import keep_main_object
from forcomp.offline.registry import BackendSpec
from forcomp.offline.segmenters.base import MaskCandidate

SPECS = [
    BackendSpec(
        name="classical",
        factory="forcomp.offline.segmenters.classical:ClassicalSegmenter",
        priority=0,
        description="OpenCV: border-contrast saliency seeds GrabCut; no weights (the default)",
    ),
]


def _border_strip(h: int, w: int, frac: float) -> np.ndarray:
    b = max(2, int(round(min(h, w) * frac)))
    strip = np.zeros((h, w), bool)
    strip[:b], strip[-b:], strip[:, :b], strip[:, -b:] = True, True, True, True
    return strip


def border_saliency(lab: np.ndarray, *, border_frac: float = 0.06, palette: int = 6) -> np.ndarray:
    """Per-pixel distance (float32, [0, 1]) of Lab colours to the nearest border palette colour."""
    h, w = lab.shape[:2]
    strip = _border_strip(h, w, border_frac)
    border = lab[strip].astype(np.float32)
    k = int(min(palette, len(border)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    # Fixed seed: the same image always gives the same mask (resumed builds reproduce fresh ones).
    cv2.setRNGSeed(0)
    # cv2 stub wrong: bestLabels may be None (OpenCV allocates the labels itself).
    _, _, centers = cv2.kmeans(  # type: ignore[call-overload]
        border,
        k,
        None,
        criteria,
        2,
        cv2.KMEANS_PP_CENTERS,
    )
    px = lab.reshape(-1, 3).astype(np.float32)
    d = np.full(len(px), np.inf, np.float32)
    for c in centers:
        d = np.minimum(d, np.linalg.norm(px - c, axis=1))
    sal: np.ndarray = d.reshape(h, w)
    sal = cv2.GaussianBlur(sal, (0, 0), sigmaX=max(1.0, min(h, w) / 100))
    hi = float(np.percentile(sal, 99.5))
    return np.clip(sal / max(hi, 1e-6), 0, 1).astype(np.float32)


def centre_prior(h: int, w: int, sigma_frac: float = 0.45) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (sigma_frac * h)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (sigma_frac * w)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions fully enclosed by the mask."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask.astype(np.uint8)
    flood = padded.copy()
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


class ClassicalSegmenter:
    """Saliency-seeded GrabCut (see module docstring). Deterministic, CPU only, no weights.

    Args:
        work_px: long side the image is resized to for segmentation (speed; the mask is upsampled).
        iterations: GrabCut iterations.
        border_frac: width of the border strip assumed to be background, as a share of the short side.
    """

    name = "classical"
    weights_id: str | None = None

    def __init__(
        self,
        *,
        weights_dir: Path | None = None,
        device: str | None = None,
        work_px: int = 256,
        iterations: int = 3,
        border_frac: float = 0.04,
        box_margin: float = 0.1,
        **_: Any,
    ) -> None:
        if device not in (None, "cpu"):
            # OpenCV runs on the CPU; accept the flag so one command line serves every backend.
            pass
        if work_px < 32:
            raise ValueError(f"work_px must be >= 32, got {work_px}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if not 0 < border_frac < 0.25:
            raise ValueError(f"border_frac must be in (0, 0.25), got {border_frac}")
        self.work_px = work_px
        self.iterations = iterations
        self.border_frac = border_frac
        self.box_margin = box_margin

    def segment(self, images: Sequence[np.ndarray], classes: Sequence[str]) -> list[list[MaskCandidate]]:
        return [self._segment_one(img) for img in images]

    def _segment_one(self, image: np.ndarray) -> list[MaskCandidate]:
        H, W = image.shape[:2]
        scale = min(1.0, self.work_px / max(H, W))
        h, w = max(8, round(H * scale)), max(8, round(W * scale))
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if scale < 1 else image
        small = np.ascontiguousarray(small)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
        sal = border_saliency(lab, border_frac=self.border_frac * 1.5) * centre_prior(h, w)
        sal /= max(float(sal.max()), 1e-6)

        sal_u8 = (sal * 255).astype(np.uint8)
        otsu, _ = cv2.threshold(sal_u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        thr = max(otsu / 255.0, 0.15)
        salient = keep_main_object(sal >= thr, keep_frac=0.1)
        if not salient.any():
            return []
        # The salient blobs' box, grown by ``box_margin``: outside it is background, inside it
        # GrabCut decides, so dull parts of the object (wheels, shadows) join the colourful ones.
        ys, xs = np.nonzero(salient)
        my, mx = self.box_margin * (ys.max() - ys.min() + 1), self.box_margin * (xs.max() - xs.min() + 1)
        y0, y1 = int(max(0, ys.min() - my)), int(min(h, ys.max() + 1 + my))
        x0, x1 = int(max(0, xs.min() - mx)), int(min(w, xs.max() + 1 + mx))
        gc = np.full((h, w), cv2.GC_BGD, np.uint8)
        gc[y0:y1, x0:x1] = cv2.GC_PR_BGD
        box = np.zeros((h, w), bool)
        box[y0:y1, x0:x1] = True
        gc[box & (sal >= 0.5 * thr)] = cv2.GC_PR_FGD
        gc[salient & (sal >= min(0.95, thr + 0.5 * (1 - thr)))] = cv2.GC_FGD
        gc[_border_strip(h, w, self.border_frac) & (gc != cv2.GC_FGD)] = cv2.GC_BGD
        if not np.any((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)):
            return []
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        try:
            # cv2 stub wrong: rect may be None with GC_INIT_WITH_MASK (the mask seeds the model).
            cv2.grabCut(  # type: ignore[call-overload]
                small,
                gc,
                None,
                bgd,
                fgd,
                self.iterations,
                cv2.GC_INIT_WITH_MASK,
            )
        except cv2.error:
            return []
        mask = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)

        r = max(1, round(min(h, w) / 100))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        m: np.ndarray = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel).astype(bool)
        m = keep_main_object(m)
        m = fill_holes(m)
        if not m.any():
            return []
        # Score: how much more salient the object is than the rest (0 = no contrast, 1 = perfect).
        inside = float(sal[m].mean())
        outside = float(sal[~m].mean()) if (~m).any() else 0.0
        score = float(np.clip(inside - outside, 0.0, 1.0))
        if scale < 1:
            up = cv2.resize(m.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
            m = up >= 0.5
        return [MaskCandidate(mask=m, score=score)]
