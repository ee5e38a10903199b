"""Shared fixtures: tiny synthetic ImageFolders that the classical segmenter can segment."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from scenes import CLASSES, make_imagefolder, synthetic_scene  # noqa: F401  (re-exported)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "source")


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source, cache) with a val split built by the default backends; shared, do not modify."""
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    root = tmp_path_factory.mktemp("built")
    source = make_imagefolder(root / "source")
    cache = root / "cache"
    summary = build_cache(source, cache, BuildConfig(split="val", segmenter="classical", inpainter="telea"))
    assert summary.exit_code == 0, summary.format()
    return source, cache


@pytest.fixture
def cache_copy(built_cache: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of ``built_cache``'s cache, free to damage."""
    import shutil

    dst = tmp_path / "cache"
    shutil.copytree(built_cache[1], dst)
    return dst
