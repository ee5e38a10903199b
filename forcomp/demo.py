"""The embedded default: an ImageFolder made of scikit-image's sample photos, built and previewed.

Class folders are WordNet 3.0 ids, as ImageNet names them. Each photo also appears a second time,
mirrored and cropped, so that every class has two images (the "same class" background mode then has
a choice). This is a smoke test of the whole product on a fresh machine, not a benchmark.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from forcomp.offline.pipeline import BuildSummary

log = logging.getLogger(__name__)

# wnid (WordNet 3.0 noun offset) -> (readable name, scikit-image loader name)
SAMPLE_CLASSES: dict[str, tuple[str, str]] = {
    "n02123045": ("tabby cat", "chelsea"),
    "n03063073": ("coffee cup", "coffee"),
    "n03790512": ("motorcycle", "motorcycle_left"),
    "n04099429": ("rocket", "rocket"),
    "n09818022": ("astronaut", "astronaut"),
}


def _load_sample(name: str) -> np.ndarray:
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the demo needs scikit-image: pip install 'forcomp[demo]'") from e
    if name == "motorcycle_left":
        # stereo_motorcycle() ships its left image locally; load it without the fetcher's extras.
        path = Path(skd.__file__).parent / "motorcycle_left.png"
        img = np.asarray(Image.open(path).convert("RGB"))
    else:
        img = getattr(skd, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def make_sample_imagefolder(root: str | os.PathLike[str]) -> Path:
    """Write ``root/<wnid>/<name>_{a,b}.jpg`` from the sample photos; returns ``root``."""
    root = Path(root)
    for wnid, (_, loader) in SAMPLE_CLASSES.items():
        img = _load_sample(loader)
        d = root / wnid
        d.mkdir(parents=True, exist_ok=True)
        a = d / f"{loader}_a.jpg"
        if not a.exists():
            Image.fromarray(img).save(a, quality=95)
        b = d / f"{loader}_b.jpg"
        if not b.exists():
            h, w = img.shape[:2]
            crop = img[int(0.06 * h) :, int(0.04 * w) : w - int(0.04 * w)][:, ::-1]
            Image.fromarray(np.ascontiguousarray(crop)).save(b, quality=95)
    return root


@dataclass(frozen=True)
class DemoResult:
    source: Path
    cache: Path
    preview: Path
    summary: BuildSummary


def run_demo(out: str | os.PathLike[str], *, progress: bool = True, seed: int = 0) -> DemoResult:
    """Assemble the sample ImageFolder, build its cache with the default backends, write a preview."""
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache
    from forcomp.preview import render_preview

    out = Path(out)
    source = make_sample_imagefolder(out / "source")
    cache = out / "cache"
    summary = build_cache(
        source, cache, BuildConfig(split="val", segmenter="classical", inpainter="telea"), progress=progress
    )
    log.info("%s", summary.format())
    preview = render_preview(cache, out / "preview.png", split="val", seed=seed)
    return DemoResult(source=source, cache=cache, preview=preview, summary=summary)
