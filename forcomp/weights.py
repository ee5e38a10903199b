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


def find_model_dir(
    weights_dir: Path, choice: str, known: dict[str, str], *, marker: str, what: str, option: str
) -> Path:
    """Find a model directory (a ``save_pretrained`` folder) under ``weights_dir``.

    Args:
        weights_dir: Where to look.
        choice: ``"auto"`` (the first of ``known`` that is present) or a directory name.
        known: Directory names in order of preference, each with where users get it.
        marker: A file every such directory holds (e.g. ``config.json``).
        what: Human name of the model kind, for messages.
        option: The backend option that names the directory, for messages.

    Raises:
        WeightsNotFoundError: Naming every expected path and where each comes from.
        ValueError: ``choice`` is not a plain directory name.
    """
    if choice == "auto":
        for name in known:
            if (weights_dir / name / marker).is_file():
                return weights_dir / name
        want = ", ".join(str(weights_dir / n) for n in known)
        raise WeightsNotFoundError(
            f"no {what} found: expected a directory {want} (with {marker}). Put one there "
            f"(or pass --weights DIR / set ${ENV_VAR}). Get it from: "
            + "; ".join(f"{n}: {u}" for n, u in known.items())
        )
    if Path(choice).name != choice:
        raise ValueError(f"{option} must be 'auto' or a directory name in weights/, got {choice!r}")
    path = weights_dir / choice
    if not (path / marker).is_file():
        raise WeightsNotFoundError(
            f"{what} {choice!r} not found: expected {path / marker} (a save_pretrained directory). "
            f"Get it from: {known.get(choice, f'the model page of a {what}')}"
        )
    return path
