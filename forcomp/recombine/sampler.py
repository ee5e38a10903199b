"""``EpochSampler``: the fast loader's own sampler when the script gives none.

A ``RandomSampler`` whose order follows ``(seed, epoch)`` and that has ``set_epoch``, as a
``DistributedSampler`` does: a script that calls ``loader.sampler.set_epoch(epoch)`` (timm's
``train.py``) tells the loader the epoch through it, and a resumed run gets the resumed epoch's order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from forcomp.recombine.params import derive_seed


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled per epoch from ``(seed, epoch)`` (or in order).

    Args:
        n: dataset length.
        shuffle: a new permutation every epoch; False: ``0..n-1``.
        seed: the order's seed; the same on every rank and in a resumed run.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order (and, through the loader, its draws) at the next iteration."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"EpochSampler(n={self.n}, shuffle={self.shuffle}, epoch={self.epoch})"
