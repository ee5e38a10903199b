"""Parameter sampling: validation, moments, determinism, schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forcomp.recombine.params import RecombineConfig, bates_from, sample_params


def _sample(cfg, B=4000, seed=0, canvas=(90, 120)):
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(B)
    return sample_params(0.1 * ones, 0.2 * ones, torch.tensor([[30, 40]] * B), ones, canvas, cfg, generator=g)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_bates_moments(n):
    z = bates_from(torch.rand(20000, n, generator=torch.Generator().manual_seed(0)), n)
    assert z.mean().item() == pytest.approx(0.5, abs=0.01)
    assert z.var().item() == pytest.approx(1 / (12 * n), rel=0.06)


def test_bates_zero_and_negative():
    g = torch.Generator().manual_seed(0)
    assert torch.all(bates_from(torch.rand(10, 0, generator=g), 0) == 0.5)
    z = bates_from(torch.rand(20000, 4, generator=g), -4)
    # folded: mass moves to the edges, the centre becomes rare
    assert ((z < 0.15) | (z > 0.85)).float().mean() > 0.5
    assert ((z > 0.4) & (z < 0.6)).float().mean() < 0.05


def test_size_modes_and_jitter():
    p = _sample(RecombineConfig(fg_size_mode="min", fg_scale_jitter=0.0))
    area = p.w * p.h / (90 * 120)
    assert torch.allclose(area, torch.full_like(area, 0.1), rtol=1e-4)
    p = _sample(RecombineConfig(fg_size_mode="range", fg_scale_jitter=0.3))
    area = p.w * p.h / (90 * 120)
    assert area.min() >= 0.07 - 1e-4 and area.max() <= 0.26 + 1e-4
    assert torch.allclose(p.h / p.w, torch.full_like(p.h, 30 / 40), rtol=1e-4), "aspect ratio kept"


def test_size_factor_scales_area():
    a1 = _sample(RecombineConfig(fg_scale_jitter=0.0, fg_size_mode="max"))
    a2 = _sample(RecombineConfig(fg_scale_jitter=0.0, fg_size_mode="max", size_factor=0.25))
    assert torch.allclose(a2.w * a2.h, 0.25 * a1.w * a1.h, rtol=1e-4)


def test_same_seed_same_params_other_seed_other():
    cfg = RecombineConfig()
    a, b, c = _sample(cfg, seed=1), _sample(cfg, seed=1), _sample(cfg, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.x0, c.x0)


def test_schedules():
    lin = RecombineConfig(orig_img_prob="linear", epochs=10)
    rev = RecombineConfig(orig_img_prob="revlinear", epochs=10)
    cos = RecombineConfig(orig_img_prob="cos", epochs=10)
    assert lin.orig_prob(0) == 0 and lin.orig_prob(5) == 0.5 and lin.orig_prob(10) == 1
    assert rev.orig_prob(0) == 1 and rev.orig_prob(5) == 0.5 and rev.orig_prob(10) == 0  # ForNet's sign fixed
    assert cos.orig_prob(0) == 0 and cos.orig_prob(10) == pytest.approx(1) and 0 < cos.orig_prob(5) < 0.5


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"background": "original"}, "background"),
        ({"fg_scale_jitter": -0.1}, "fg_scale_jitter"),
        ({"nonant": 9}, "nonant"),
        ({"nonant": -1}, "nonant"),
        ({"size_factor": 0}, "size_factor"),
        ({"size_factor": -2.0}, "size_factor"),
        ({"fg_size_mode": "median"}, "fg_size_mode"),
        ({"fg_bates_n": 1.5}, "fg_bates_n"),
        ({"rel_jut_out": 1.0}, "rel_jut_out"),
        ({"orig_img_prob": "linear"}, "epochs"),
        ({"orig_img_prob": 1.5}, "orig_img_prob"),
        ({"pruning_ratio": 0}, "pruning_ratio"),
    ],
)
def test_invalid_config(kw, match):
    with pytest.raises(ValueError, match=match):
        RecombineConfig(**kw)


@settings(max_examples=60, deadline=None)
@given(
    jitter=st.one_of(st.floats(-2, 2), st.just(float("nan"))),
    size_factor=st.one_of(st.floats(-5, 5), st.sampled_from([float("nan"), float("inf")])),
    nonant=st.one_of(st.none(), st.integers(-3, 12)),
    jut=st.floats(-1, 2),
)
def test_validation_property(jitter, size_factor, nonant, jut):
    """Any config is either valid (and sampling gives finite, positive sizes) or rejected by name."""
    ok = (
        0 <= jitter < 1
        and math.isfinite(size_factor)
        and size_factor > 0
        and (nonant is None or 0 <= nonant <= 8)
        and 0 <= jut < 1
    )
    kw = dict(fg_scale_jitter=jitter, size_factor=size_factor, nonant=nonant, rel_jut_out=jut)
    if not ok:
        with pytest.raises(ValueError, match="fg_scale_jitter|size_factor|nonant|rel_jut_out"):
            RecombineConfig(**kw)
        return
    p = _sample(RecombineConfig(**kw), B=64)
    assert all(torch.isfinite(t).all() for t in p) and (p.w > 0).all() and (p.h > 0).all()
