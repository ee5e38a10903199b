"""The quick-start notebook runs top to bottom (tiny setting), shows its plots, uses the public API
only, and is stored without outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_notebook_outputs_stripped():
    nb = json.loads(NB.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


# What a user may import: the package root, the metrics' public names, and the demo's sample photos.
PUBLIC_MODULES = {"forcomp", "forcomp.metrics", "forcomp.demo"}


def test_notebook_uses_the_public_api_only():
    nb = json.loads(NB.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imported = set(re.findall(r"^\s*(?:from|import)\s+(forcomp[\w.]*)", code, flags=re.M))
    assert imported and imported <= PUBLIC_MODULES, imported - PUBLIC_MODULES
    used = set(re.findall(r"\bforcomp\.(\w+)", code))
    import forcomp

    assert used <= set(forcomp.__all__) | {"demo", "metrics"}, used


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FORCOMP_NB_QUICK", "1")
    monkeypatch.setenv("FORCOMP_NB_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend, as for a user
    nb = nbformat.read(NB, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert (tmp_path / "out" / "cache" / "fg_bg_ratios_val.json").exists()
    assert any((tmp_path / "out" / "report").glob("*.png"))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "| quick" in printed, "the kernel ran the notebook in its quick setting (FORCOMP_NB_QUICK=1)"
    assert "cache OK" in printed
    assert "chance level" in printed and "95% CI" in printed  # scores shown with their chance check
    plotting = [c for c in nb.cells if c.cell_type == "code" and "plt.show()" in c.source]
    assert len(plotting) == 3
    for cell in plotting:  # every figure reaches the notebook, the one after the report's plots too
        shown = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert shown, f"no figure shown by:\n{cell.source}"
