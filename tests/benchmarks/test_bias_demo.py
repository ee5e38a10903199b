"""The bias demo's shortcut dataset has the shortcuts it claims, and ``--quick`` runs end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _centroid_and_area(img: np.ndarray) -> tuple[float, float, float]:
    """Object = the saturated pixels (backgrounds are muted, objects have one low and one high channel)."""
    sat = img.max(-1).astype(int) - img.min(-1).astype(int)
    m = sat > 90
    yy, xx = np.nonzero(m)
    return float(yy.mean()), float(xx.mean()), float(m.mean())


def test_train_split_has_shortcuts_test_split_breaks_them() -> None:
    sd = _load("shortcut_data")
    size = 48
    stats = {}
    for split in ("train", "val", "test"):
        rng = np.random.default_rng(0)
        rows = [_centroid_and_area(sd.make_scene(c, split, size, rng)) for c in range(4) for _ in range(40)]
        a = np.array(rows)
        stats[split] = (np.hypot(a[:, 0] - size / 2, a[:, 1] - size / 2).mean(), a[:, 2].std())
    # train and val: objects near the centre at a typical size; test: anywhere, at many sizes
    assert stats["train"][0] < 4 < stats["test"][0] and stats["val"][0] < 4
    assert stats["test"][1] > 2 * max(stats["train"][1], stats["val"][1])


def test_train_and_val_backgrounds_follow_the_class_test_backgrounds_do_not(monkeypatch) -> None:
    sd = _load("shortcut_data")
    kinds: list[str] = []
    real = sd._background
    monkeypatch.setattr(
        sd, "_background", lambda kind, size, rng: kinds.append(kind) or real(kind, size, rng)
    )
    share = {}
    for split in ("train", "val", "test"):
        kinds.clear()
        rng = np.random.default_rng(0)
        for i in range(200):
            sd.make_scene(i % 4, split, 32, rng)
        share[split] = np.mean([k == sd.BACKGROUNDS[i % 4] for i, k in enumerate(kinds)])
    assert share["train"] > 0.85 and share["val"] > 0.85  # 0.9 + 0.1 / 4 expected
    assert share["test"] < 0.4  # 1 / 4 expected


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    demo = _load("bias_demo")
    assert demo.main(["--quick", "--out", str(tmp_path), "--workers", "1"]) == 0
    res = json.loads((tmp_path / "bias_demo.json").read_text())
    assert set(res["summary"]) == {"cnn/plain", "cnn/forcomp", "vit/plain", "vit/forcomp"}
    for row in res["summary"].values():
        for name in demo.HEADLINES:
            assert math.isfinite(row[name]["mean"]), name
        assert 0.0 <= row["test_acc"]["mean"] <= 1.0
    assert len(res["runs"]) == 4 * res["settings"]["seeds"]
    assert (tmp_path / "bias_demo.png").stat().st_size > 10_000
    assert "cnn/forcomp" in capsys.readouterr().out
    # The summary is the mean over the runs of each arm (not a copy of one run, not another arm's).
    for key, row in res["summary"].items():
        arch, mode = key.split("/")
        runs = [r for r in res["runs"] if r["arch"] == arch and r["mode"] == mode]
        assert len(runs) == res["settings"]["seeds"]
        for name in demo.HEADLINES:
            vals = [r[name] for r in runs]
            assert math.isclose(row[name]["mean"], sum(vals) / len(vals), rel_tol=1e-9, abs_tol=1e-12), name
    # The reported test accuracy is the saved model's on the shortcut-free test split, and the
    # headline scores are those forcomp.evaluate gives that model on the cache (seed-0 models).
    import torch

    import forcomp

    xte, yte = demo.load_folder(tmp_path / "data" / "test")
    for arch in ("cnn", "vit"):
        for mode in ("plain", "forcomp"):
            model = demo.make_model(arch, len(demo.SHAPES), res["settings"]["size"])
            model.load_state_dict(torch.load(tmp_path / "models" / f"{arch}_{mode}.pt", weights_only=True))
            model.eval()
            run = next(r for r in res["runs"] if (r["arch"], r["mode"], r["seed"]) == (arch, mode, 0))
            assert demo.accuracy(model, xte, yte) == pytest.approx(run["test_acc"], abs=1e-9)
            rep = forcomp.evaluate(
                model, tmp_path / "cache", split="val", size=res["settings"]["size"], normalize=None,
                batch_size=128, seed=0, methods=("input_x_gradient",),
                recombine=demo.recombine_settings(res["settings"]["size"]),
            )  # fmt: skip
            assert rep["accuracy"] == pytest.approx(run["accuracy"], abs=1e-9)
            assert rep["bg_gap"]["score"] == pytest.approx(run["bg_gap"], abs=1e-9)
            assert rep["size_bias"]["score"] == pytest.approx(run["size_bias"], abs=1e-9, nan_ok=True)
