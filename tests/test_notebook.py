"""The quick-start notebook runs top to bottom (tiny setting) and is stored without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_notebook_outputs_stripped():
    nb = json.loads(NB.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FORCOMP_NB_QUICK", "1")
    monkeypatch.setenv("FORCOMP_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert (tmp_path / "out" / "cache" / "fg_bg_ratios_val.json").exists()
    assert any((tmp_path / "out" / "report").glob("*.png"))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "| quick" in printed, "the kernel ran the notebook in its quick setting (FORCOMP_NB_QUICK=1)"
