"""The online stage: sample recombination parameters, paste foregrounds onto backgrounds."""

from forcomp.recombine.functional import composite
from forcomp.recombine.params import (
    CropParams,
    RecombineConfig,
    RecombineParams,
    compose_crop,
    sample_crop,
    sample_params,
)

__all__ = [
    "CropParams",
    "RecombineConfig",
    "RecombineParams",
    "compose_crop",
    "composite",
    "sample_crop",
    "sample_params",
]
