"""The online stage: read and decode parts, plan their geometry from named draws, paste them.

``dataset`` (:class:`ForComp`: read, decode) → ``params`` (draws → geometry) → ``functional``
(pixels); ``transform`` (:class:`Recombine`, the batched module) and ``loader`` (batches on the
device) are the glue; ``config`` holds the settings, ``pools`` the backgrounds each class draws.
"""

from forcomp.recombine.config import RecombineConfig, RecombineKwargs, RecombineOptions
from forcomp.recombine.dataset import ForComp
from forcomp.recombine.functional import (
    composite,
    crop_parts,
    resize_cover,
    resize_u8,
    shrink,
    shrink_premultiplied,
)
from forcomp.recombine.loader import ForCompLoader, LoaderOptions, PartsView
from forcomp.recombine.params import (
    CropParams,
    Plan,
    RecombineParams,
    SampleDraws,
    compose_crop,
    draw_batch,
    draw_sample,
    plan,
    sample_crop,
    sample_params,
)
from forcomp.recombine.transform import Parts, Recombine, collate_parts

__all__ = [
    "CropParams",
    "ForComp",
    "ForCompLoader",
    "LoaderOptions",
    "Parts",
    "PartsView",
    "Plan",
    "Recombine",
    "RecombineConfig",
    "RecombineKwargs",
    "RecombineOptions",
    "RecombineParams",
    "SampleDraws",
    "collate_parts",
    "compose_crop",
    "composite",
    "crop_parts",
    "draw_batch",
    "draw_sample",
    "plan",
    "resize_cover",
    "resize_u8",
    "sample_crop",
    "sample_params",
    "shrink",
    "shrink_premultiplied",
]
