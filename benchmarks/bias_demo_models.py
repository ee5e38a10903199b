"""Factories for ``forcomp evaluate --model benchmarks/bias_demo_models.py:<name>``.

They rebuild the bias demo's models (``bias_demo.py``) and load the seed-0 weights it saved in
``$BIAS_DEMO_OUT/models/`` (default ``benchmarks/_work/bias_demo/models/``), e.g.::

    forcomp evaluate --cache benchmarks/_work/bias_demo/cache --size 48 --normalize none \\
        --model benchmarks/bias_demo_models.py:cnn_forcomp --out report_cnn_forcomp
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bias_demo import make_model  # noqa: E402
from shortcut_data import SHAPES  # noqa: E402

SIZE = 48


def _load(arch: str, mode: str) -> nn.Module:
    root = Path(os.environ.get("BIAS_DEMO_OUT", Path(__file__).parent / "_work" / "bias_demo"))
    path = root / "models" / f"{arch}_{mode}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/bias_demo.py` first")
    model = make_model(arch, len(SHAPES), SIZE)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def cnn_plain() -> nn.Module:
    return _load("cnn", "plain")


def cnn_forcomp() -> nn.Module:
    return _load("cnn", "forcomp")


def vit_plain() -> nn.Module:
    return _load("vit", "plain")


def vit_forcomp() -> nn.Module:
    return _load("vit", "forcomp")
