"""The controlled conditions of the bias metrics (README, "Bias metrics"), as data.

Every condition recombines the *same* val items with the *same* seed; conditions differ only in
the recombination settings listed here, which are handed to the one recombination path
(:class:`forcomp.ForComp` → :class:`forcomp.Recombine` → ``composite``). There is no second
compositing code path for evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Background = Literal["orig", "same", "all"]

BACKGROUND_MODES: tuple[Background, ...] = ("orig", "same", "all")
NONANTS: tuple[int, ...] = tuple(range(9))
CENTER_CELL = 4
CORNER_CELLS: tuple[int, ...] = (0, 2, 6, 8)
EDGE_CELLS: tuple[int, ...] = (1, 3, 5, 7)
SIZE_FACTORS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class Condition:
    """One controlled recombination setting.

    Args:
        name: Stable key used in reports, e.g. ``"bg=all"``, ``"nonant=4"``, ``"size=0.5"``.
        group: Which metric family it belongs to: ``"background"``, ``"nonant"`` or ``"size"``.
        background: Background mode (``orig``: the item's own inpainted background; ``same``: a
            random background of the same class; ``all``: a random background of any class).
        nonant: Confine the object to cell ``k`` of a row-major 3×3 grid, or ``None``.
        size_factor: Multiplies the object's target area (1.0 = natural recombination size).
    """

    name: str
    group: Literal["background", "nonant", "size"]
    background: Background
    nonant: int | None = None
    size_factor: float = 1.0

    def recombine_kwargs(self) -> dict[str, Any]:
        """The settings this condition passes to :class:`forcomp.ForComp`."""
        return {"background": self.background, "nonant": self.nonant, "size_factor": self.size_factor}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def background_conditions() -> list[Condition]:
    """``orig``, ``same``, ``all`` at natural size and position."""
    return [Condition(f"bg={m}", "background", m) for m in BACKGROUND_MODES]


def nonant_conditions() -> list[Condition]:
    """Object confined to cell k = 0..8 (row-major), background ``same``."""
    return [Condition(f"nonant={k}", "nonant", "same", nonant=k) for k in NONANTS]


def size_conditions(factors: Sequence[float] = SIZE_FACTORS) -> list[Condition]:
    """Object area scaled by each factor of the ladder, background ``same``, position as usual.

    Raises:
        ValueError: If the ladder lacks 1.0 (the reference) or has a factor ≤ 0.
    """
    factors = tuple(float(f) for f in factors)
    if 1.0 not in factors:
        raise ValueError(f"size factors must include 1.0 (the reference), got {factors}")
    if any(f <= 0 for f in factors):
        raise ValueError(f"size factors must be > 0, got {factors}")
    return [Condition(f"size={f:g}", "size", "same", size_factor=f) for f in sorted(set(factors))]


@dataclass(frozen=True)
class EvaluationGrid:
    """All conditions of one evaluation, in the order they are run."""

    background: tuple[Condition, ...]
    nonant: tuple[Condition, ...]
    size: tuple[Condition, ...]

    @classmethod
    def default(cls, size_factors: Sequence[float] = SIZE_FACTORS) -> EvaluationGrid:
        return cls(
            tuple(background_conditions()), tuple(nonant_conditions()), tuple(size_conditions(size_factors))
        )

    def __iter__(self) -> Iterator[Condition]:
        yield from self.background
        yield from self.nonant
        yield from self.size

    def __len__(self) -> int:
        return len(self.background) + len(self.nonant) + len(self.size)

    @property
    def focus(self) -> Condition:
        """The condition attributions are computed on: ``all`` backgrounds, natural size/position."""
        return next(c for c in self.background if c.background == "all")

    def names(self) -> list[str]:
        return [c.name for c in self]
