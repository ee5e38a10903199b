"""The GPU check's dry run (``benchmarks/gpu.py --device cpu --quick``): the script must not rot
between GPU loans, so every section runs here on the CPU at tiny sizes and must report figures,
not errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    return json.loads((out / "gpu.json").read_text())


def test_every_section_reports_figures_not_errors(dry_run: dict) -> None:
    sections = dry_run["sections"]
    assert set(sections) == set(gpu.SECTIONS)
    for name, res in sections.items():
        assert "error" not in res, f"{name}: {res.get('error')}\n{res.get('trace', '')}"
        for key, row in res.items():
            if isinstance(row, dict):
                assert "error" not in row, f"{name} / {key}: {row['error']}"
    assert sections["tests"]["exit_code"] == 0 and sections["tests"]["collected"] > 0
    assert sections["offline"]["exit_code"] == 0, sections["offline"]["tail"]
    kernel = sections["kernel"]
    for dt in ("uint8", "float32", "float16", "bfloat16"):
        assert kernel[f"matrix, eager, {dt}"]["img_per_s"] > 0
    loader = sections["loader"]
    rows = [k for k in loader if "workers" in k]
    # per worker count: ImageFolder, forcomp from the folders, forcomp from the packed form
    assert len(rows) == 6 and all(loader[k]["img_per_s"] > 0 for k in rows)
    assert sum("packed form" in k for k in rows) == 2
    assert dry_run["environment"]["torch"] == torch.__version__


def test_refuses_cuda_without_a_gpu_and_unknown_sections(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        assert gpu.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        gpu.main(["--device", "cpu", "--quick", "--skip", "kernels", "--out", str(tmp_path)])


def test_a_broken_section_is_recorded_and_the_rest_still_runs(tmp_path: Path, monkeypatch) -> None:
    def broken(*a, **k):
        raise RuntimeError("injected")

    monkeypatch.setattr(gpu, "bench_decode", broken)
    args = ["--device", "cpu", "--quick", "--skip", "tests,loader,offline", "--out", str(tmp_path)]
    assert gpu.main(args) == 0
    rep = json.loads((tmp_path / "gpu.json").read_text())
    assert "injected" in rep["sections"]["decode"]["error"]
    assert rep["sections"]["kernel"]["matrix, eager, uint8"]["img_per_s"] > 0
