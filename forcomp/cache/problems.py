"""A finding about a cache: where (file, key, or file:line) and what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """Something in a cache that forcomp refuses or reports: where and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
