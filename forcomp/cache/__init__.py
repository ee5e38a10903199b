"""The cache format: ForNet-compatible files plus forcomp's own index (see README, "Cache format")."""

from forcomp.cache.layout import SPLITS, CacheLayout, safe_component

__all__ = ["SPLITS", "CacheLayout", "safe_component"]
