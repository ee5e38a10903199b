"""The evaluation conditions (``grids.py``) as the bias metrics define them, field by field.

Fast and pure; the names are the keys of ``report.json``, the settings what each condition hands
to ``ForComp``.
"""

from __future__ import annotations

import pytest

from forcomp.metrics.grids import (
    CENTER_CELL,
    CORNER_CELLS,
    EDGE_CELLS,
    SIZE_FACTORS,
    Condition,
    EvaluationGrid,
    background_conditions,
    nonant_conditions,
    size_conditions,
)


def test_constants() -> None:
    assert CENTER_CELL == 4 and CORNER_CELLS == (0, 2, 6, 8) and EDGE_CELLS == (1, 3, 5, 7)
    assert SIZE_FACTORS == (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)


def test_every_condition_of_the_default_grid() -> None:
    g = EvaluationGrid.default()
    want = [
        {"name": "bg=orig", "group": "background", "background": "orig", "nonant": None, "size_factor": 1.0},
        {"name": "bg=same", "group": "background", "background": "same", "nonant": None, "size_factor": 1.0},
        {"name": "bg=all", "group": "background", "background": "all", "nonant": None, "size_factor": 1.0},
        *(
            {"name": f"nonant={k}", "group": "nonant", "background": "same", "nonant": k, "size_factor": 1.0}
            for k in range(9)
        ),
        *(
            {"name": f"size={n}", "group": "size", "background": "same", "nonant": None, "size_factor": f}
            for n, f in zip(("0.1", "0.2", "0.3", "0.5", "0.7", "1", "1.5", "2"), SIZE_FACTORS, strict=True)
        ),
    ]
    assert [c.to_dict() for c in g] == want
    assert g.names() == [w["name"] for w in want] and len(g) == 20
    assert [c.to_dict() for c in g.background] == want[:3]
    assert [c.to_dict() for c in g.nonant] == want[3:12]
    assert [c.to_dict() for c in g.size] == want[12:]
    assert g.focus is g.background[2]
    for c in g:
        assert c.recombine_kwargs() == {
            "background": c.background,
            "nonant": c.nonant,
            "size_factor": c.size_factor,
        }
    assert background_conditions() == list(g.background) and nonant_conditions() == list(g.nonant)


def test_condition_defaults() -> None:
    c = Condition("x", "background", "all")
    assert c.nonant is None and c.size_factor == 1.0


def test_size_ladders() -> None:
    ladder = size_conditions((2, 1, 0.25, 1.0, 2.0))  # ints accepted, sorted, duplicates merged
    assert [(c.name, c.size_factor) for c in ladder] == [
        ("size=0.25", 0.25),
        ("size=1", 1.0),
        ("size=2", 2.0),
    ]
    assert all(type(c.size_factor) is float for c in ladder)
    assert [c.size_factor for c in size_conditions()] == list(SIZE_FACTORS)
    g = EvaluationGrid.default(size_factors=(1.0, 0.5))
    assert g.names()[-2:] == ["size=0.5", "size=1"] and len(g) == 14
    with pytest.raises(ValueError) as e:
        size_conditions((0.5, 2.0))
    assert str(e.value) == "size factors must include 1.0 (the reference), got (0.5, 2.0)"
    for bad in ((0.0, 1.0), (-0.5, 1.0)):
        with pytest.raises(ValueError) as e:
            size_conditions(bad)
        assert str(e.value) == f"size factors must be > 0, got {bad}"


def test_focus_is_the_all_backgrounds_condition_wherever_it_is() -> None:
    d = EvaluationGrid.default()
    g = EvaluationGrid(tuple(reversed(d.background)), d.nonant, d.size)
    assert g.focus.name == "bg=all" and g.focus is g.background[0]


def test_grid_is_the_metrics_md_grid() -> None:
    g = EvaluationGrid.default()
    assert [c.background for c in g.background] == ["orig", "same", "all"]
    assert [c.nonant for c in g.nonant] == list(range(9)) and {c.background for c in g.nonant} == {"same"}
    assert [c.size_factor for c in g.size] == list(SIZE_FACTORS) and {c.background for c in g.size} == {
        "same"
    }
    assert g.focus.name == "bg=all" and g.focus.nonant is None and g.focus.size_factor == 1.0
    assert len(g) == 20 and len(set(g.names())) == 20
    with pytest.raises(ValueError, match="1.0"):
        size_conditions((0.5, 2.0))
