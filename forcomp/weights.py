"""Where model checkpoints are looked up (``--weights DIR``, else ``$FORCOMP_WEIGHTS``, else ``./weights``)
and whether what is there is really usable: the weight files a backend loads, not only a
``config.json`` / ``model_index.json``, and no git-lfs pointer files (what ``git clone`` of a model
page gives without git-lfs: a ~130-byte text file in place of each large file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from forcomp.errors import WeightsNotFoundError

ENV_VAR = "FORCOMP_WEIGHTS"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
LFS_FIX = (
    "it is a git-lfs pointer, not the file (the folder was cloned without git-lfs): run "
    "`git lfs install && git lfs pull` inside the clone, or download the file itself"
)
# transformers weights in the order from_pretrained looks for them (forcomp's loaders refuse pickles
# they cannot read with weights_only=True, but a present .bin is still a weight file).
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_lfs_pointer(path: Path) -> bool:
    """True when ``path`` is a git-lfs pointer file (small text starting with the LFS spec line)."""
    try:
        if path.stat().st_size > 1024:
            return False
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    except OSError:
        return False


def file_problem(path: Path) -> str | None:
    """Why the weight file ``path`` cannot be used (missing, empty, an LFS pointer), or None."""
    if not path.is_file():
        return f"{path} is missing"
    if is_lfs_pointer(path):
        return f"{path}: {LFS_FIX}"
    if path.stat().st_size == 0:
        return f"{path} is empty (an interrupted download?)"
    return None


def _index_problems(index: Path) -> list[str]:
    """Problems of a sharded checkpoint: the index itself and every shard it names."""
    if problem := file_problem(index):
        return [problem]
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"{index} is not a readable shard index ({type(e).__name__}: {e})"]
    return [p for s in shards if (p := file_problem(index.parent / s))]


def hf_model_dir_problems(path: Path) -> list[str]:
    """Why the transformers ``save_pretrained`` directory ``path`` cannot be loaded (empty: usable)."""
    if problem := file_problem(path / "config.json"):
        return [problem]
    present = [path / f for f in HF_WEIGHT_FILES if (path / f).exists()]
    if not present:
        return [f"{path} has no weights: expected one of {', '.join(HF_WEIGHT_FILES)}"]
    weights = present[0]
    return (
        _index_problems(weights)
        if weights.name.endswith(".index.json")
        else ([p] if (p := file_problem(weights)) else [])
    )


def diffusers_dir_problems(path: Path) -> list[str]:
    """Why the diffusers pipeline directory ``path`` cannot be loaded with safetensors (empty: usable).

    Every component folder of ``model_index.json`` must exist; those holding a model (a
    ``config.json``) need their ``.safetensors`` weights (one file, or an index and its shards).
    """
    index = path / "model_index.json"
    if problem := file_problem(index):
        return [problem]
    try:
        components = json.loads(index.read_text(encoding="utf-8"))
    except ValueError as e:
        return [f"{index} is not valid JSON: {e}"]
    problems: list[str] = []
    for name, value in sorted(components.items()):
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        folder = path / name
        if not folder.is_dir():
            problems.append(f"{folder} is missing (component {name!r} of {index})")
            continue
        if not (folder / "config.json").is_file():
            continue  # scheduler, tokenizer, feature extractor: configuration only
        files = sorted(folder.glob("*.safetensors"))
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        if indexes:
            problems += _index_problems(indexes[0])
        elif files:
            problems += [p for f in files if (p := file_problem(f))]
        else:
            problems.append(f"{folder} has no .safetensors weights (forcomp loads safetensors only)")
    return problems


def weight_problems(weights_dir: Path, rel: str) -> list[str]:
    """Why ``weights_dir / rel`` is not usable; a ``*/config.json`` or ``*/model_index.json`` entry
    checks the whole model directory (its weight files), anything else the one file."""
    p = weights_dir / rel
    if p.name == "config.json" and p.parent != weights_dir:
        return hf_model_dir_problems(p.parent)
    if p.name == "model_index.json" and p.parent != weights_dir:
        return diffusers_dir_problems(p.parent)
    return [problem] if (problem := file_problem(p)) else []


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
    if problem := file_problem(path):
        raise WeightsNotFoundError(f"{what} not usable: {problem}. Get it from: {source}")
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
    check = hf_model_dir_problems if marker == "config.json" else diffusers_dir_problems
    if choice == "auto":
        found: list[str] = []
        for name in known:
            if (weights_dir / name / marker).is_file():
                if not (problems := check(weights_dir / name)):
                    return weights_dir / name
                found += problems
        if found:
            raise WeightsNotFoundError(f"no usable {what} in {weights_dir}: " + "; ".join(found))
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
    if problems := check(path):
        raise WeightsNotFoundError(f"{what} {choice!r} is not usable: " + "; ".join(problems))
    return path
