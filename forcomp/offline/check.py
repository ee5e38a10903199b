"""``forcomp backends --check``: try every backend whose weights are present before a long build.

For each segmenter and inpainter that can run here (the weight-free ones always, the model ones
when their weights are usable), it:

1. loads the backend (timed; a load failure is reported, not raised);
2. runs it on a few of scikit-image's sample photos (timed per image) and draws a preview grid:
   source / mask per segmenter / background per inpainter;
3. runs it on a small generated set with known truth (:func:`known_truth_scenes`: objects pasted
   onto backgrounds, so the true mask and the true object-free background are known) and reports
   the mask IoU of each segmenter and the PSNR of each inpainter's filled hole against the true
   background.

Inpainters fill the *true* masks of the known-truth scenes (so their score does not depend on a
segmenter), grown and blended back exactly as the build does (:func:`forcomp.offline.masks.hole_mask`,
:func:`~forcomp.offline.masks.feathered_blend`); on the sample photos they fill the mask of the
segmenter ``auto`` would choose. Backends are loaded one at a time and released after use, so the
check needs no more device memory than a build.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from forcomp.offline.masks import feathered_blend, hole_mask

log = logging.getLogger(__name__)

SAMPLE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
"""scikit-image sample photos used for the preview (bundled with scikit-image, no download)."""

DILATE_PX, FEATHER_PX = 7, 5  # BuildConfig's defaults: the check fills holes as a build does


@dataclass(frozen=True)
class KnownScene:
    """A generated image with known truth: ``image`` = ``background`` with an object where ``mask``."""

    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray


def known_truth_scenes(n: int = 12, size: int = 128, *, seed: int = 0) -> list[KnownScene]:
    """``n`` scenes of ``size``×``size`` px: a smooth textured background with one pasted object.

    Backgrounds are sums of random low-frequency waves plus mild noise (what inpainters can
    plausibly continue); objects are an ellipse, a rectangle or a star-shaped polygon of 6–30 % of
    the image near its centre, in a colour far from the background's, with slight shading.
    Deterministic for a given ``seed``.
    """
    import cv2

    if n < 1 or size < 32:
        raise ValueError(f"known-truth set needs n >= 1 and size >= 32, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    scenes = []
    for i in range(n):
        base = rng.uniform(60, 190, 3)
        bg = np.zeros((size, size, 3), np.float32) + base
        for _ in range(3):
            fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)
            amp = rng.uniform(8, 25, 3)
            bg += amp * np.sin(2 * math.pi * (fx * xx + fy * yy) + ph)[..., None]
        bg += rng.normal(0, 2.0, bg.shape)
        background = np.clip(bg + 0.5, 0, 255).astype(np.uint8)

        mask = np.zeros((size, size), np.uint8)
        cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.4, 0.6)
        r = size * rng.uniform(0.16, 0.3)
        kind = i % 3
        if kind == 0:
            axes = (round(r), round(r * rng.uniform(0.6, 1.0)))
            cv2.ellipse(mask, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        elif kind == 1:
            w, h = r * rng.uniform(0.8, 1.2), r * rng.uniform(0.6, 1.0)
            cv2.rectangle(mask, (round(cx - w), round(cy - h)), (round(cx + w), round(cy + h)), 1, -1)
        else:
            k = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = r * rng.uniform(0.6, 1.1, k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], -1).round().astype(np.int32)
            cv2.fillPoly(mask, [pts], 1)
        m = mask.astype(bool)
        # far from the background's mean colour in every channel (>= 90 levels)
        colour = np.where(base < 128, base + 110, base - 110) + rng.uniform(-20, 20, 3)
        shade = 1.0 + 0.15 * (yy - cy / size)[..., None]
        obj = np.clip(colour * shade + rng.normal(0, 4.0, bg.shape), 0, 255)
        image = background.copy()
        image[m] = (obj[m] + 0.5).astype(np.uint8)
        scenes.append(KnownScene(image=image, mask=m, background=background))
    return scenes


def sample_photos(count: int, long_side_px: int) -> list[np.ndarray]:
    """The first ``count`` of :data:`SAMPLE_PHOTOS`, resized to ``long_side_px`` on the long side."""
    import cv2

    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("forcomp backends --check needs scikit-image: pip install 'forcomp[demo]'") from e
    out = []
    for name in SAMPLE_PHOTOS[:count]:
        img = np.asarray(getattr(skd, name)())
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        h, w = img.shape[:2]
        s = long_side_px / max(h, w)
        size = (max(8, round(w * s)), max(8, round(h * s)))
        out.append(np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA)))
    return out


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.count_nonzero(pred | truth)
    return float(np.count_nonzero(pred & truth)) / union if union else 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 pixel sets (``inf`` when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class BackendCheck:
    """What one backend did: load and per-image times, its score on the known-truth set, or its error."""

    stage: str
    name: str
    weights: str | None = None
    load_s: float | None = None
    sample_s_per_image: float | None = None
    truth_s_per_image: float | None = None
    metric: str = ""
    median: float | None = None
    p10: float | None = None
    share_ok: float | None = None
    per_scene: list[float] = field(default_factory=list)
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"  {self.name:14s} FAILED: {self.error}"
        t = (
            f"load {self.load_s:.2f}s, {self.sample_s_per_image:.3f}s/photo, "
            f"{self.truth_s_per_image:.3f}s/scene"
        )
        if self.metric == "mask_iou":
            q = f"mask IoU median {self.median:.3f}, p10 {self.p10:.3f}, {self.share_ok:.0%} of scenes >= 0.9"
        else:
            q = f"hole PSNR median {self.median:.1f} dB, p10 {self.p10:.1f} dB"
        return f"  {self.name:14s} {q}; {t}  [{self.weights or 'no weights'}]"


@dataclass
class CheckReport:
    """The result of :func:`check_backends` (``to_dict`` is what ``backends_check.json`` holds)."""

    weights_dir: str
    device: str | None
    scenes: int
    scene_px: int
    photos: int
    photo_px: int
    auto: dict[str, str]
    skipped: dict[str, str]
    results: list[BackendCheck]
    preview: str
    json_path: str = ""

    @property
    def failed(self) -> list[BackendCheck]:
        return [r for r in self.results if r.error]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for r in d["results"]:  # JSON has no inf: a perfect fill is reported as null with a note
            r["per_scene"] = [None if math.isinf(v) else round(v, 4) for v in r["per_scene"]]
            for k in ("median", "p10"):
                if r[k] is not None and math.isinf(r[k]):
                    r[k] = None
        return d

    def format(self) -> str:
        lines = [
            f"weights directory: {self.weights_dir}; device: {self.device or 'auto'}",
            f"known-truth set: {self.scenes} generated scenes of {self.scene_px} px; preview: "
            f"{self.photos} sample photos at {self.photo_px} px",
        ]
        for stage in ("segmenter", "inpainter"):
            lines.append(f"{stage}s (auto -> {self.auto[stage]}):")
            lines += [r.line() for r in self.results if r.stage == stage]
            for key, why in self.skipped.items():
                if key.startswith(stage + ":"):
                    lines.append(f"  {key.split(':', 1)[1]:14s} skipped: {why}")
        lines.append(f"preview: {self.preview}")
        if self.json_path:
            lines.append(f"numbers: {self.json_path}")
        return "\n".join(lines)


def _release(device: str | None) -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _timed(fn: Callable[[], Any], device: str | None) -> tuple[Any, float]:
    import torch

    sync = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def _best_mask(cands: Sequence[Any], shape: tuple[int, int]) -> np.ndarray | None:
    if not cands:
        return None
    best = max(cands, key=lambda c: c.score)
    return best.mask if best.mask.shape == shape else None


def _summary(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(np.median(v)), float(np.percentile(v, 10))


def _error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def check_backends(
    weights_dir: str | Path | None = None,
    out_dir: str | Path = "backends_check",
    *,
    device: str | None = None,
    photos: int = 3,
    photo_px: int = 256,
    scenes: int = 12,
    scene_px: int = 128,
    seed: int = 0,
    backend_options: dict[str, dict[str, Any]] | None = None,
) -> CheckReport:
    """Load and run every usable backend; write ``backends_check.png`` and ``.json`` to ``out_dir``.

    Args:
        weights_dir: the weights directory (None: ``$FORCOMP_WEIGHTS``, else ``./weights``).
        out_dir: where the preview grid and the JSON report go (created).
        device: ``cpu``/``cuda``/``cuda:N`` for the model backends; None lets each pick.
        photos, photo_px: sample photos in the preview and their long side.
        scenes, scene_px, seed: the known-truth set (see :func:`known_truth_scenes`).
        backend_options: extra keyword arguments per backend name (e.g. ``{"sam": {"model": "vit_b"}}``).

    Returns:
        The report; backends that failed to load or run are in it with their error.
    """
    from forcomp.models.devices import resolve_device
    from forcomp.offline.inpainters import INPAINTERS
    from forcomp.offline.segmenters import SEGMENTERS
    from forcomp.weights import resolve_weights_dir

    if device is not None:  # an absent or misspelt device fails here, in one line, not per backend
        device = str(resolve_device(device))
    if photos < 1 or photos > len(SAMPLE_PHOTOS):
        raise ValueError(f"photos must be in [1, {len(SAMPLE_PHOTOS)}], got {photos}")
    if photo_px < 32:
        raise ValueError(f"photo_px must be >= 32, got {photo_px}")
    wdir = resolve_weights_dir(weights_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = backend_options or {}
    truth = known_truth_scenes(scenes, scene_px, seed=seed)
    pics = sample_photos(photos, photo_px)
    results: list[BackendCheck] = []
    skipped: dict[str, str] = {}
    auto = {
        "segmenter": SEGMENTERS.resolve("auto", wdir).name,
        "inpainter": INPAINTERS.resolve("auto", wdir).name,
    }
    seg_masks: dict[str, list[np.ndarray | None]] = {}
    fills: dict[str, list[np.ndarray]] = {}

    def usable(reg: Any, stage: str) -> list[Any]:
        specs = []
        for name, spec in sorted(reg.specs().items(), key=lambda kv: (-kv[1].priority, kv[0])):
            if spec.available_weights(wdir) is not None:
                specs.append(spec)
            else:
                problems = spec.weights_problems(wdir)
                skipped[f"{stage}:{name}"] = "; ".join(problems) if problems else "no weights"
        return specs

    for spec in usable(SEGMENTERS, "segmenter"):
        res = BackendCheck("segmenter", spec.name, metric="mask_iou")
        results.append(res)
        try:
            build = partial(SEGMENTERS.build, spec.name, weights_dir=wdir, device=device)
            seg, res.load_s = _timed(partial(build, **opts.get(spec.name, {})), device)
            res.weights = getattr(seg, "weights_id", None)
            cands, dt = _timed(partial(seg.segment, pics, ["object"] * len(pics)), device)
            res.sample_s_per_image = dt / len(pics)
            seg_masks[spec.name] = [_best_mask(c, p.shape[:2]) for c, p in zip(cands, pics, strict=True)]
            cands, dt = _timed(
                partial(seg.segment, [s.image for s in truth], ["object"] * len(truth)), device
            )
            res.truth_s_per_image = dt / len(truth)
            for c, s in zip(cands, truth, strict=True):
                m = _best_mask(c, s.mask.shape)
                res.per_scene.append(0.0 if m is None else mask_iou(m, s.mask))
            res.median, res.p10 = _summary(res.per_scene)
            res.share_ok = float(np.mean(np.asarray(res.per_scene) >= 0.9))
        except Exception as e:  # the check reports every failure and goes on with the next backend
            log.debug("segmenter %s failed", spec.name, exc_info=True)
            res.error = _error_text(e)
        seg = None
        _release(device)

    # The photos' holes: the mask of the segmenter auto would choose, else of any that found one.
    order = [auto["segmenter"], *seg_masks]
    photo_holes: list[np.ndarray] = []
    for i, p in enumerate(pics):
        m = next((seg_masks[n][i] for n in order if n in seg_masks and seg_masks[n][i] is not None), None)
        if m is None:  # nothing found: a central ellipse, so the inpainters still show a fill
            h, w = p.shape[:2]
            yy, xx = np.mgrid[0:h, 0:w]
            m = ((yy - h / 2) / (0.3 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
        photo_holes.append(m)

    for spec in usable(INPAINTERS, "inpainter"):
        res = BackendCheck("inpainter", spec.name, metric="hole_psnr_db")
        results.append(res)
        try:
            build = partial(INPAINTERS.build, spec.name, weights_dir=wdir, device=device)
            inp, res.load_s = _timed(partial(build, **opts.get(spec.name, {})), device)
            res.weights = getattr(inp, "weights_id", None)
            holes = [hole_mask(m, DILATE_PX) for m in photo_holes]
            filled, dt = _timed(partial(inp.inpaint, pics, holes), device)
            res.sample_s_per_image = dt / len(pics)
            fills[spec.name] = [
                feathered_blend(p, f, m, dilate_px=DILATE_PX, feather_px=FEATHER_PX)
                for p, f, m in zip(pics, filled, photo_holes, strict=True)
            ]
            holes = [hole_mask(s.mask, DILATE_PX) for s in truth]
            filled, dt = _timed(partial(inp.inpaint, [s.image for s in truth], holes), device)
            res.truth_s_per_image = dt / len(truth)
            for s, f, hole in zip(truth, filled, holes, strict=True):
                bg = feathered_blend(s.image, f, s.mask, dilate_px=DILATE_PX, feather_px=FEATHER_PX)
                res.per_scene.append(psnr(bg[hole], s.background[hole]))
            res.median, res.p10 = _summary(res.per_scene)
        except Exception as e:
            log.debug("inpainter %s failed", spec.name, exc_info=True)
            res.error = _error_text(e)
        inp = None
        _release(device)

    preview = render_check_grid(
        out / "backends_check.png",
        pics,
        {f"mask: {n}": v for n, v in seg_masks.items()},
        {f"background: {n}": v for n, v in fills.items()},
    )
    report = CheckReport(
        weights_dir=str(wdir),
        device=device,
        scenes=scenes,
        scene_px=scene_px,
        photos=photos,
        photo_px=photo_px,
        auto=auto,
        skipped=skipped,
        results=results,
        preview=str(preview),
    )
    json_path = out / "backends_check.json"
    report.json_path = str(json_path)
    json_path.write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    return report


def render_check_grid(
    path: Path,
    photos: Sequence[np.ndarray],
    masks: dict[str, list[np.ndarray | None]],
    backgrounds: dict[str, list[np.ndarray]],
    *,
    tile_px: int = 160,
) -> Path:
    """A PNG grid: one row per photo; columns source, each segmenter's mask, each inpainter's background."""
    from PIL import Image, ImageDraw

    columns: list[tuple[str, list[np.ndarray]]] = [("source", list(photos))]
    for title, ms in masks.items():
        tiles = []
        for p, m in zip(photos, ms, strict=True):
            shown = (p.astype(np.float32) * 0.3).astype(np.uint8)  # outside the mask: dimmed
            if m is not None:
                shown[m] = (0.7 * p[m] + 0.3 * np.array([40, 220, 60])).astype(np.uint8)
            tiles.append(shown)
        columns.append((title, tiles))
    columns += list(backgrounds.items())
    label_h = 18
    grid = Image.new("RGB", (tile_px * len(columns), label_h + tile_px * len(photos)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, (title, tiles) in enumerate(columns):
        draw.text((c * tile_px + 4, 3), title[: tile_px // 6], fill=(0, 0, 0))
        for r, t in enumerate(tiles):
            im = Image.fromarray(t)
            im.thumbnail((tile_px, tile_px))
            x = c * tile_px + (tile_px - im.width) // 2
            y = label_h + r * tile_px + (tile_px - im.height) // 2
            grid.paste(im, (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
