"""The online stage: sample recombination parameters, paste foregrounds onto backgrounds."""

from forcomp.recombine.functional import composite
from forcomp.recombine.params import RecombineConfig, RecombineParams, sample_params

__all__ = ["RecombineConfig", "RecombineParams", "composite", "sample_params"]
