from __future__ import annotations

import gc

import cv2
import pytest
import torch
from recombine.conftest import make_cache

from forcomp import ForComp
from forcomp.recombine.threads import init_worker, opencv_serial


@pytest.fixture
def restore_cv2_threads():
    n = cv2.getNumThreads()
    yield
    cv2.setNumThreads(n)


def test_opencv_serial_runs_on_one_thread_and_restores_the_callers_setting(restore_cv2_threads):
    cv2.setNumThreads(3)
    with opencv_serial():
        assert cv2.getNumThreads() == 1
        with opencv_serial():  # nested: still one, and the outer block's setting survives
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == 3
    with pytest.raises(RuntimeError), opencv_serial():  # restored on an error too
        raise RuntimeError
    assert cv2.getNumThreads() == 3
    cv2.setNumThreads(1)
    with opencv_serial():
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == 1


def test_the_kernel_calls_opencv_on_one_thread(restore_cv2_threads, monkeypatch):
    from forcomp.recombine import functional

    seen = []
    real_lut, real_mul = cv2.LUT, cv2.multiply
    monkeypatch.setattr(cv2, "LUT", lambda *a, **k: seen.append(cv2.getNumThreads()) or real_lut(*a, **k))
    monkeypatch.setattr(
        cv2, "multiply", lambda *a, **k: seen.append(cv2.getNumThreads()) or real_mul(*a, **k)
    )
    cv2.setNumThreads(4)
    fg = torch.randint(0, 256, (2, 4, 30, 30), dtype=torch.uint8)
    params = functional.RecombineParams(*(torch.tensor([2.0, 5.0]) for _ in range(2)),
                                        torch.tensor([20.0, 25.0]), torch.tensor([20.0, 22.0]),
                                        torch.tensor([1.0, 0.0]))  # fmt: skip
    bg = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    functional.composite(fg, torch.tensor([[30, 30]] * 2), bg, params, out_dtype=torch.float32)
    functional.premultiply_u8(fg[0])
    assert seen and set(seen) == {1} and cv2.getNumThreads() == 4


def test_init_worker_sets_one_opencv_thread_and_freezes_the_inherited_objects(restore_cv2_threads):
    cv2.setNumThreads(2)
    try:
        init_worker(0)
        assert cv2.getNumThreads() == 1 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _check_worker(fg: torch.Tensor) -> torch.Tensor:
    info = torch.utils.data.get_worker_info()
    if info is not None and (cv2.getNumThreads() != 1 or gc.get_freeze_count() == 0):
        raise AssertionError(f"worker {info.id}: {cv2.getNumThreads()} OpenCV threads, not frozen")
    return fg


def test_loader_workers_start_with_init_worker(tmp_path):
    cache = make_cache(tmp_path / "c", split="train", per_class=2, fg_px=24, bg_size=(64, 48))
    ds = ForComp(cache, "train", size=32, seed=0, fg_transform=_check_worker)
    assert sum(len(y) for _, y in ds.loader(2, num_workers=2)) == len(ds)
