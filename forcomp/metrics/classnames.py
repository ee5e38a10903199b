"""Class names from the packaged WordNet table (``forcomp/data/wordnet_imagenet.json``): ImageNet-1k's
output order, each synset's names and parent. No timm, no download.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

_WNID = re.compile(r"n\d{8}")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("forcomp").joinpath("data/wordnet_imagenet.json").read_text(encoding="utf-8")
    return json.loads(text)


def is_wnid(name: str) -> bool:
    """Whether ``name`` looks like a WordNet noun id (``n`` + 8 digits)."""
    return bool(_WNID.fullmatch(name))


@functools.lru_cache(maxsize=1)
def imagenet1k_index() -> dict[str, int]:
    """``{wnid: output index}`` in the standard ImageNet-1k order (sorted wnids, as torchvision/timm)."""
    return {w: i for i, w in enumerate(_table()["imagenet1k"])}


def class_name(cls: str) -> str | None:
    """The first WordNet name of a wnid (``"n01440764"`` → ``"tench"``), ``None`` when unknown."""
    synset = _table()["synsets"].get(cls)
    return synset["names"][0] if synset and synset.get("names") else None


def display_name(cls: str) -> str:
    """``"n01440764 tench"`` for a known wnid, else the class folder's name unchanged."""
    name = class_name(cls)
    return f"{cls} {name}" if name else cls


def imagenet1k_below(cls: str) -> list[str]:
    """ImageNet-1k classes whose WordNet parent chain passes through ``cls`` (e.g. the dog breeds)."""
    synsets = _table()["synsets"]
    out = []
    for w in _table()["imagenet1k"]:
        seen: set[str] = set()
        p = synsets.get(w, {}).get("parent")
        while p and p not in seen:
            if p == cls:
                out.append(w)
                break
            seen.add(p)
            p = synsets.get(p, {}).get("parent")
    return out
