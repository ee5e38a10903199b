"""Where model checkpoints are looked up: ``--weights DIR``, else ``$FORCOMP_WEIGHTS``, else ``./weights``."""

from __future__ import annotations

import os
from pathlib import Path

from forcomp.errors import WeightsNotFoundError

ENV_VAR = "FORCOMP_WEIGHTS"


def resolve_weights_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the weights directory: the argument, else ``$FORCOMP_WEIGHTS``, else ``./weights``."""
    if weights_dir is not None:
        return Path(weights_dir)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("weights")


def find_weight(weights_dir: Path, name: str, *, what: str, source: str) -> Path:
    """Return ``weights_dir / name`` or raise naming the expected path, what it is and where to get it."""
    path = weights_dir / name
    if not path.exists():
        raise WeightsNotFoundError(
            f"{what} not found: expected {path}. Put the file there (or pass --weights DIR / set "
            f"${ENV_VAR}). Get it from: {source}"
        )
    return path
