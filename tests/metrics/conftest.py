"""Fixtures of the metric tests: the synthetic colour cache and reports of the hand-built biased models."""

from __future__ import annotations

from pathlib import Path

import pytest
from colour_cache import EVAL_SIZE, make_colour_cache  # noqa: F401


@pytest.fixture(scope="session")
def colour_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared synthetic cache (do not modify)."""
    return make_colour_cache(tmp_path_factory.mktemp("colour") / "cache")


@pytest.fixture(scope="session")
def biased_reports(colour_cache: Path) -> dict[str, dict]:
    """One full evaluation per hand-built model (shared by the ranking tests)."""
    import biased_models
    import torch

    from forcomp.metrics.bias import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is ~3x faster on a busy 2-core machine
    try:
        return {
            name: evaluate(
                build(),
                colour_cache,
                size=EVAL_SIZE,
                normalize=None,
                batch_size=16,
                seed=0,
                methods=("input_x_gradient", "gradcam"),
                bootstrap=300,
            )
            for name, build in biased_models.MODELS.items()
        }
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: one intra-op thread is ~3x faster than two on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
