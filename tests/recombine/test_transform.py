"""``Recombine`` and ``Parts`` on their way to a GPU: pinning, the compiled kernel, device-free draws."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory

import forcomp.recombine.transform as tr
from forcomp import ForComp, Recombine
from forcomp.recombine.dataset import collate_parts
from forcomp.recombine.transform import Parts


def _parts(cache, n=4, size=48, draws=True) -> Parts:
    ds = ForComp(cache, "val", size=size, seed=0)
    parts = collate_parts([ds.load_parts(i) for i in range(n)])
    return parts if draws else Parts(**{**parts.__dict__, "draws": None, "params": None})


def test_parts_pin_memory_pins_every_tensor(cache, monkeypatch):
    """DataLoader(pin_memory=True) pins a custom batch through its ``pin_memory()``: every tensor of
    ``Parts`` must go through ``Tensor.pin_memory`` (checked with a spy where no accelerator exists)."""
    parts = _parts(cache)
    tensors = {f: getattr(parts, f) for f in parts.__dataclass_fields__}
    tensors = {f: t for f, t in tensors.items() if isinstance(t, torch.Tensor)}
    assert {"fg", "fg_hw", "bg", "fg_ratio", "bg_ratio", "labels"} <= set(tensors)
    draws = [t for t in parts.draws if t is not None]
    assert len(draws) == 4  # size, x, y, sigma
    nested = [*draws, *parts.params]
    if torch.cuda.is_available():
        pinned = pin_memory(parts)
        assert isinstance(pinned, Parts)
        assert all(getattr(pinned, f).is_pinned() for f in tensors)
        assert all(t.is_pinned() for t in pinned.draws if t is not None)
        assert all(t.is_pinned() for t in pinned.params)
        return
    pinned_ids = []

    def fake_pin(self, *a, **k):
        pinned_ids.append(id(self))
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    out = pin_memory(parts)
    assert isinstance(out, Parts)
    assert sorted(pinned_ids) == sorted(id(t) for t in [*tensors.values(), *nested])
    assert out.decode_failures == parts.decode_failures
    for f, t in tensors.items():
        assert torch.equal(getattr(out, f), t)
    assert all(torch.equal(a, b) for a, b in zip(out.draws, parts.draws, strict=True) if a is not None)
    assert all(torch.equal(a, b) for a, b in zip(out.params, parts.params, strict=True))


def test_generator_draws_on_the_cpu_whatever_the_device(cache, monkeypatch):
    """Without per-sample draws the transform's own generator draws: it is a CPU generator and
    its draws are moved to the batch, so no generator reaches the device (or compiled code)."""
    parts = _parts(cache, draws=False)
    seen = {}
    real = tr.plan

    def spy(*a, **k):
        seen["draws"] = a[6]
        return real(*a, **k)

    monkeypatch.setattr(tr, "plan", spy)
    rec = Recombine(seed=5)
    p1 = rec.make_params(parts)
    assert seen["draws"].size.device.type == "cpu"
    assert [g.device.type for g in rec._generators.values()] == ["cpu"]
    # meta tensors stand for an accelerator here: the draws still come from the CPU generator
    meta = Parts(**{k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in parts.__dict__.items()})
    pm = Recombine(seed=5).make_params(meta)
    assert pm.x0.device.type == "meta" and seen["draws"].size.device.type == "meta"
    assert torch.equal(Recombine(seed=5).make_params(parts).x0, p1.x0)


@pytest.mark.gpu
def test_same_seed_same_geometry_on_cpu_and_cuda(cache):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    parts = _parts(cache, draws=False)
    cpu = Recombine(seed=7).make_params(parts)
    gpu = Recombine(seed=7).make_params(parts.to("cuda"))
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-6, atol=1e-5)


def test_compile_option_defaults_to_cuda_and_is_checked():
    rec = Recombine(seed=0)
    assert rec.uses_compile(torch.device("cuda")) and not rec.uses_compile(torch.device("cpu"))
    assert not Recombine(seed=0, method="window").uses_compile(torch.device("cuda"))
    assert not Recombine(seed=0, compile=False).uses_compile(torch.device("cuda"))
    assert Recombine(seed=0, compile=True).uses_compile(torch.device("cpu"))
    with pytest.raises(ValueError, match="compile"):
        Recombine(compile="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method='matrix'"):
        Recombine(compile=True, method="window")


def test_compiled_recombine_equals_eager_matrix_and_pickles(cache):
    parts = _parts(cache)
    eager, me, params = Recombine(seed=1, method="matrix", compile=False)(parts, return_params=True)
    rec = Recombine(seed=1, compile=True)
    out, m = rec(parts, params)
    assert rec._compiled is not None and rec.compile is True  # ran compiled, did not fall back
    torch.testing.assert_close(out, eager, atol=2e-5, rtol=0)
    torch.testing.assert_close(m, me, atol=2e-5, rtol=0)
    clone = pickle.loads(pickle.dumps(rec))
    assert clone._compiled is None
    torch.testing.assert_close(clone(parts, params)[0], eager, atol=2e-5, rtol=0)


def test_compile_failure_falls_back_to_eager(cache, monkeypatch, caplog):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no backend")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    parts = _parts(cache)
    rec = Recombine(seed=1, compile=True)
    out, _, params = rec(parts, return_params=True)
    assert rec.compile is False and "running it eagerly" in caplog.text
    ref, _ = Recombine(seed=1, compile=False)(parts, params)
    assert torch.equal(out, ref)


@pytest.mark.gpu
def test_cuda_recombine_compiled_by_default_matches_cpu(cache):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    parts = _parts(cache)
    cpu, _, params = Recombine(seed=2)(parts, return_params=True)
    rec = Recombine(seed=2)
    gpu, _ = rec(parts.to("cuda"), type(params)(*(t.cuda() for t in params)))
    assert rec._compiled is not None and rec.compile is None
    assert (gpu.cpu() - cpu).abs().max() < 0.02


def test_the_docstring_example_runs(cache):
    """``Recombine``'s example is a working recipe (run as a doctest on a tiny cache)."""
    import doctest

    examples = doctest.DocTestFinder().find(Recombine, "Recombine", globs={"cache": cache})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for ex in examples:
        runner.run(ex)
    assert runner.tries >= 5 and runner.failures == 0


def _ragged_samples(n=5, seed=0):
    """Samples of other foreground sizes, each with its own geometry (as ``load_parts`` gives)."""
    from forcomp.recombine.params import RecombineParams

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        h, w = 10 + 7 * i, 31 - 4 * i
        fg = torch.randint(0, 256, (4, h, w), generator=g, dtype=torch.uint8)
        fg[3, : h // 3] = 0
        box = (-5.0 + 9 * i, 3.0 * i, 20.0 + 6 * i, 30.0 - 2 * i, 1.5)  # x0, y0, w, h, sigma
        params = RecombineParams(*(torch.tensor([v]) for v in box))
        bg = torch.randint(0, 256, (3, 40, 48), generator=g, dtype=torch.uint8)
        out.append({"fg": fg, "bg": bg, "fg_ratio": 0.2, "bg_ratio": 0.3, "label": i, "orig": None,
                    "use_orig": False, "params": params})  # fmt: skip
    return out


@pytest.mark.parametrize("method", ["window", "matrix", "auto"])
def test_unpadded_batch_pastes_as_the_padded_one(method):
    samples = _ragged_samples()
    padded, ragged = collate_parts(samples), collate_parts(samples, pad=False)
    assert isinstance(ragged.fg, list) and [t.shape for t in ragged.fg] == [s["fg"].shape for s in samples]
    assert padded.fg.shape == (5, 4, 38, 31)
    for i, s in enumerate(samples):  # zero padding around each foreground
        _, h, w = s["fg"].shape
        assert torch.equal(padded.fg[i, :, :h, :w], s["fg"])
        assert not padded.fg[i, :, h:].any() and not padded.fg[i, :, :, w:].any()
    assert torch.equal(ragged.fg_fill, padded.fg_fill)
    rec = Recombine(seed=0, method=method, compile=False)
    for out_dtype in (torch.float32, torch.uint8):
        a, b = rec(padded, out_dtype=out_dtype), rec(ragged, out_dtype=out_dtype)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    moved = ragged.to("cpu")
    assert isinstance(moved.fg, list)
    assert all(torch.equal(x, y) for x, y in zip(moved.fg, ragged.fg, strict=True))
