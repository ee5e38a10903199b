"""Made-up per-image results of a whole evaluation grid, for the score, summary and report tests."""

from __future__ import annotations

import torch

from forcomp.metrics.grids import EvaluationGrid


def random_hits(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    """``n`` per-image hits, each right with probability ``p``."""
    return torch.rand(n, generator=g) < p


def fake_results(n: int = 200) -> dict[str, torch.Tensor]:
    """Every condition ~0.8 right, ``bg=all`` ~0.5, the corner nonants ~0.4 (seeded)."""
    g = torch.Generator().manual_seed(1)
    correct = {c.name: random_hits(n, 0.8, g) for c in EvaluationGrid.default()}
    correct["bg=all"] = random_hits(n, 0.5, g)
    for k in (0, 2, 6, 8):
        correct[f"nonant={k}"] = random_hits(n, 0.4, g)
    return correct
