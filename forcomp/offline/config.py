"""Settings of one offline build: a frozen dataclass the CLI maps its flags onto 1:1."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from forcomp.cache.layout import check_split

Engine = Literal["local", "ray"]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (0 <= I < N) into ``(I, N)``."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return i, n


@dataclass(frozen=True)
class BuildConfig:
    """What ``forcomp build`` does; written into the cache for provenance.

    Attributes:
        split: which split of the cache to write (``train`` or ``val``).
        segmenter, inpainter: backend names (``auto`` picks the best whose weights are present).
        weights_dir: where checkpoints are looked up (None: ``$FORCOMP_WEIGHTS``, else ``./weights``).
        device: ``cpu``/``cuda``/``cuda:1``; None picks CUDA when available for model backends.
        batch_size: images per backend call.
        workers: CPU processes for the local engine (1 = in this process).
        shard: ``(I, N)``: process only items whose stable hash falls in slice I of N.
        resume: skip items already finished in the cache (ok or no object).
        max_image_pixels: refuse larger images before decoding (decompression-bomb guard).
        dilate_px: grow the object mask by this many pixels (at 500 px image size; scaled with the
            image) before inpainting, so the object's fringe is removed too.
        feather_px: width of the soft seam when the inpainted hole is blended back.
        min_area_ratio / max_area_ratio: masks outside this share of the image count as "no object".
        jpeg_quality, webp_quality: encoding of backgrounds / foregrounds (WEBP alpha is lossless).
        segmenter_options, inpainter_options: extra keyword arguments for the backends.
        scorer: when set, a candidate scorer (``forcomp.offline.scoring``) picks among several
            candidate masks per image; otherwise the segmenter's best-scored candidate is kept.
        engine: ``local`` (this machine) or ``ray`` (a Ray cluster; needs ``forcomp[ray]``).
        ray_address, ray_num_gpus_per_worker, ray_concurrency: Ray settings.
    """

    split: str = "train"
    segmenter: str = "auto"
    inpainter: str = "auto"
    weights_dir: str | None = None
    device: str | None = None
    batch_size: int = 8
    workers: int = 1
    shard: tuple[int, int] = (0, 1)
    resume: bool = True
    max_image_pixels: int = 89_478_485  # Pillow's own default limit (~ 0.25 GiB of RGBA)
    dilate_px: int = 7
    feather_px: int = 5
    min_area_ratio: float = 0.005
    max_area_ratio: float = 0.95
    jpeg_quality: int = 95
    webp_quality: int = 95
    segmenter_options: dict[str, Any] = field(default_factory=dict)
    inpainter_options: dict[str, Any] = field(default_factory=dict)
    scorer: str | None = None
    scorer_options: dict[str, Any] = field(default_factory=dict)
    engine: Engine = "local"
    ray_address: str | None = None
    ray_num_gpus_per_worker: float = 0.0
    ray_concurrency: int = 2

    def __post_init__(self) -> None:
        check_split(self.split)
        if isinstance(self.shard, str):
            object.__setattr__(self, "shard", parse_shard(self.shard))
        i, n = self.shard
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard=(I, N) needs N >= 1 and 0 <= I < N, got {self.shard}")
        for name in ("batch_size", "workers", "ray_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        for name in ("dilate_px", "feather_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_area_ratio < self.max_area_ratio <= 1.0:
            raise ValueError(
                "need 0 <= min_area_ratio < max_area_ratio <= 1, got "
                f"min_area_ratio={self.min_area_ratio}, max_area_ratio={self.max_area_ratio}"
            )
        for name in ("jpeg_quality", "webp_quality"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in 1..100, got {getattr(self, name)}")
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.ray_num_gpus_per_worker < 0:
            raise ValueError(f"ray_num_gpus_per_worker must be >= 0, got {self.ray_num_gpus_per_worker}")

    def weights_path(self) -> Path:
        from forcomp.weights import resolve_weights_dir

        return resolve_weights_dir(self.weights_dir)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        return d

    @property
    def shard_tag(self) -> str:
        i, n = self.shard
        return f"shard{i}of{n}"


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))
