"""The epoch rules of timm's and torchvision's ``train.py`` on both paths, with a 2-rank
``DistributedSampler`` (no process group: ``num_replicas``/``rank`` given, or the world size
stubbed where timm's ``create_loader`` builds the sampler itself).

Each rule is the script's lines, quoted, as a small function. Under every rule: the order changes
every epoch; the same item's picture changes between epochs; two runs under the same
``torch.manual_seed`` give identical first batches (also with ``num_workers=0``). Resume: the fast
path gives epoch k's first batch; the per-sample path epoch k's order (as ``ImageFolder``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from recombine.conftest import make_cache
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2

from forcomp import ForComp

timm_data = pytest.importorskip("timm.data")


def rule_timm_v1_0_28(loader: Any, dataset: Any, epoch: int, distributed: bool = True) -> None:
    # timm v1.0.28 train.py:
    #     if hasattr(dataset_train, 'set_epoch'):
    #         dataset_train.set_epoch(epoch)
    #     elif args.distributed and hasattr(loader_train.sampler, 'set_epoch'):
    #         loader_train.sampler.set_epoch(epoch)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    elif distributed and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def rule_timm_main(loader: Any, dataset: Any, epoch: int, distributed: bool = True) -> None:
    # timm main train.py, _set_loader_epoch(loader_train, epoch):
    #     if hasattr(loader.dataset, 'set_epoch'):
    #         loader.dataset.set_epoch(epoch)
    #     if hasattr(loader.batch_sampler, 'set_epoch'):
    #         loader.batch_sampler.set_epoch(epoch)
    #     elif hasattr(loader.sampler, 'set_epoch'):
    #         loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def rule_torchvision(loader: Any, dataset: Any, epoch: int, distributed: bool = True) -> None:
    # torchvision references/classification/train.py:
    #     if args.distributed:
    #         train_sampler.set_epoch(epoch)
    if distributed:
        loader.sampler.set_epoch(epoch)


RULES = {"timm-1.0.28": rule_timm_v1_0_28, "timm-main": rule_timm_main, "torchvision": rule_torchvision}
Rule = Callable[..., None]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a small square on a large background: the paste position (a draw) is visible in the picture
    return make_cache(
        tmp_path_factory.mktemp("rules"), split="train", per_class=4, fg_px=12, bg_size=(96, 80)
    )


def per_sample_loader(cache: Path, rank: int, workers: int) -> tuple[ForComp, DataLoader]:
    """ImageFolder's place in the scripts: a deterministic transform, so a changed picture is a
    changed paste, in a plain DataLoader over a 2-rank DistributedSampler."""
    ds = ForComp(cache, "train", size=None, transform=v2.Compose([v2.PILToTensor(), v2.Resize((40, 48))]))
    sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
    return ds, DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers)


def fast_loader(cache: Path, rank: int, workers: int, seed: int | None = 0) -> tuple[ForComp, Any]:
    ds = ForComp(cache, "train", size=32, seed=seed)
    return ds, ds.loader(
        3, sampler=DistributedSampler(ds, num_replicas=2, rank=rank, seed=0), num_workers=workers
    )


def run_epochs(
    build: Callable[..., tuple[Any, Any]], rule: Rule, epochs: range, rank: int = 0, workers: int = 0
):
    """Per epoch: the indices in loading order and their pictures (``{index: picture}``)."""
    ds, loader = build(rank, workers)
    out = []
    for epoch in epochs:
        rule(loader, ds, epoch)
        order = list(loader.sampler)
        pics = torch.cat([x.float() for x, _ in loader])
        out.append((order, dict(zip(order, pics, strict=True))))
    return out


PATHS = {"per-sample": per_sample_loader, "fast": fast_loader}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("path", PATHS)
def test_order_and_pictures_change_every_epoch(cache, path, rule):
    torch.manual_seed(0)
    for rank in (0, 1):
        epochs = run_epochs(lambda r, w: PATHS[path](cache, r, w), RULES[rule], range(3), rank=rank)
        orders = [tuple(o) for o, _ in epochs]
        assert len(set(orders)) == 3, orders  # a new order every epoch (the sampler got the epoch)
        for (_, a), (_, b) in zip(epochs, epochs[1:], strict=False):
            common = set(a) & set(b)
            assert common
            assert all(not torch.equal(a[i], b[i]) for i in common)  # the same item, a new picture
    assert not hasattr(ForComp, "set_epoch")  # timm v1.0.28 would call it instead of the sampler's


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("path", PATHS)
def test_same_manual_seed_same_first_batch(cache, path, workers):
    def first(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # what timm's train.py does with --seed (torchvision's seeds nothing)
        ds, loader = (
            PATHS[path](cache, 0, workers) if path == "per-sample" else fast_loader(cache, 0, workers, None)
        )
        rule_timm_main(loader, ds, 0)
        return next(iter(loader))[0].float()

    assert torch.equal(first(3), first(3))
    assert not torch.equal(first(3), first(4))


@pytest.mark.parametrize("rule", RULES)
def test_resumed_fast_run_gives_the_resumed_epochs_first_batch(cache, rule):
    full = run_epochs(lambda r, w: fast_loader(cache, r, w), RULES[rule], range(3))
    torch.manual_seed(123)  # another process state: a seeded dataset does not depend on it
    resumed = run_epochs(lambda r, w: fast_loader(cache, r, w), RULES[rule], range(2, 3))
    assert resumed[0][0] == full[2][0]
    assert all(torch.equal(resumed[0][1][i], full[2][1][i]) for i in full[2][0])
    assert resumed[0][0] != full[0][0]  # not epoch 0's


@pytest.mark.parametrize("rule", RULES)
def test_resumed_per_sample_run_gives_the_resumed_epochs_order(cache, rule):
    full = run_epochs(lambda r, w: per_sample_loader(cache, r, w), RULES[rule], range(3))
    resumed = run_epochs(lambda r, w: per_sample_loader(cache, r, w), RULES[rule], range(2, 3))
    assert resumed[0][0] == full[2][0] != full[0][0]


@pytest.mark.parametrize("rule", ["timm-1.0.28", "timm-main"])
def test_timm_create_loader_with_two_ranks_gets_the_epoch(cache, rule, monkeypatch):
    """timm's create_loader(distributed=True) builds DistributedSampler(dataset) itself: the world
    size is stubbed (2 ranks); the prefetcher and FastCollateMixup as the script sets them up."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    torch.manual_seed(0)
    ds = ForComp(cache, "train", size=None)
    collate = timm_data.FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=len(ds.classes))
    loader = timm_data.create_loader(
        ds, input_size=(3, 32, 32), batch_size=2, is_training=True, use_prefetcher=True, collate_fn=collate,
        distributed=True, num_workers=0, device=torch.device("cpu"), persistent_workers=False,
    )  # fmt: skip
    orders = []
    for epoch in range(3):
        RULES[rule](loader, ds, epoch)
        orders.append(tuple(loader.sampler))
        x, y = next(iter(loader))
        assert x.shape == (2, 3, 32, 32) and y.shape == (2, len(ds.classes))
    assert len(set(orders)) == 3 and len(orders[0]) == len(ds) // 2
