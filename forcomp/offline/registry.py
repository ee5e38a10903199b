"""Backend registry shared by segmenters and inpainters (SAM's ``sam_model_registry`` pattern).

Each backend module declares ``SPECS`` (a list of :class:`BackendSpec`) at import time and does its
heavy imports inside its factory, so listing backends and choosing ``auto`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forcomp.errors import ForcompError
from forcomp.weights import weight_problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    """How to build one backend and what it needs.

    Attributes:
        name: the name users pass (``--segmenter sam``).
        factory: ``"module:callable"`` called as ``factory(weights_dir=..., device=..., **options)``.
        weights: alternatives, each a tuple of paths relative to the weights directory that must all
            be usable (see :func:`forcomp.weights.weight_problems`: a ``<dir>/config.json`` or
            ``<dir>/model_index.json`` entry stands for the model directory and its weight files);
            empty means no weights are needed.
        priority: ``auto`` picks the available backend with the highest priority.
        extra: the pip extra that provides its optional dependencies (``pip install forcomp[extra]``).
        description: one line for ``--help`` and ``forcomp backends``.
    """

    name: str
    factory: str
    weights: tuple[tuple[str, ...], ...] = ()
    priority: int = 0
    extra: str | None = None
    description: str = ""

    def available_weights(self, weights_dir: Path) -> tuple[str, ...] | None:
        """The first alternative whose weights are all usable, ``()`` if none are needed, else ``None``."""
        if not self.weights:
            return ()
        for alt in self.weights:
            if not any(weight_problems(weights_dir, p) for p in alt):
                return alt
        return None

    def weights_problems(self, weights_dir: Path) -> list[str]:
        """Why no alternative is usable, for alternatives that were started (empty: none was).

        An alternative counts as started when its first entry, the one that names the model (a
        file, or a model folder), is there: a clone without git-lfs, a folder without its weights.
        Those are the problems a user wants named; a SAM file alone does not start ``grounded-sam``.
        """
        out: list[str] = []
        for alt in self.weights:
            head = Path(alt[0])
            if (weights_dir / head.parts[0]).exists():
                out += [q for p in alt for q in weight_problems(weights_dir, p) if q not in out]
        return out


class Registry:
    """Backends of one stage, discovered from a list of light modules that each define ``SPECS``."""

    def __init__(self, stage: str, modules: Sequence[str]) -> None:
        self.stage = stage
        self._modules = list(modules)
        self._specs: dict[str, BackendSpec] | None = None

    def specs(self) -> dict[str, BackendSpec]:
        if self._specs is None:
            specs: dict[str, BackendSpec] = {}
            for mod in self._modules:
                for spec in importlib.import_module(mod).SPECS:
                    specs[spec.name] = spec
            self._specs = specs
        return self._specs

    def names(self) -> list[str]:
        return ["auto", *sorted(self.specs())]

    def help(self, default: str = "auto") -> str:
        """One line for ``--help``: the names users can pass, and the default."""
        return (
            f"{' | '.join(self.names())} (default: {default}; auto picks the best whose weights are present)"
        )

    def resolve(self, name: str, weights_dir: Path) -> BackendSpec:
        """Map ``name`` (or ``auto``) to a spec whose weights are present; raise with a fix otherwise."""
        specs = self.specs()
        if name == "auto":
            ready = [s for s in specs.values() if s.available_weights(weights_dir) is not None]
            best = max(ready, key=lambda s: s.priority)
            for s in specs.values():
                if (
                    s.priority > best.priority
                    and s not in ready
                    and (problems := s.weights_problems(weights_dir))
                ):
                    log.warning(
                        "auto %s: skipped %r, its weights are not usable: %s",
                        self.stage,
                        s.name,
                        "; ".join(problems),
                    )
            log.info("auto %s: chose %r (weights dir %s)", self.stage, best.name, weights_dir)
            return best
        if name not in specs:
            raise ForcompError(f"unknown {self.stage} {name!r}; choose one of {', '.join(self.names())}")
        return specs[name]

    def build(self, name: str, *, weights_dir: Path, device: str | None = None, **options: Any) -> Any:
        """Resolve ``name`` and construct the backend (this is where models load, once)."""
        spec = self.resolve(name, weights_dir)
        mod_name, _, attr = spec.factory.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except ImportError as e:  # pragma: no cover - depends on the environment
            hint = f" Install it with: pip install 'forcomp[{spec.extra}]'" if spec.extra else ""
            raise ImportError(f"{self.stage} {spec.name!r} needs a missing package ({e}).{hint}") from e
        return factory(weights_dir=weights_dir, device=device, **options)
