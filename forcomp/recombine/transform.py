"""``Recombine``: the batched transform (an ``nn.Module`` and a torchvision v2 ``Transform``).

It samples per-sample geometry on the batch's device from an explicit generator
(:func:`~forcomp.recombine.params.sample_params`) and calls the pure kernel
(:func:`~forcomp.recombine.functional.composite`). ``forward(parts, params=p)`` replays ``p``
exactly; outputs are ``tv_tensors.Image`` / ``tv_tensors.Mask`` so later v2 geometric transforms
keep the masks aligned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from typing_extensions import Unpack

from forcomp.recombine.config import RecombineConfig, RecombineKwargs
from forcomp.recombine.functional import composite, pad_foregrounds
from forcomp.recombine.params import RecombineParams, SampleDraws, derive_seed, draw_batch, fg_fill, plan

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """A collated batch of recombination inputs (what ``ForComp.loader`` workers produce).

    Attributes:
        fg: ``(B, 4, Hf, Wf)`` uint8 RGBA foregrounds, zero-padded bottom/right (or a list of
            ``B`` unpadded ``(4, h, w)`` ones: ``collate_parts(pad=False)``, for a CPU paste).
        fg_hw: ``(B, 2)`` valid foreground height, width.
        bg: ``(B, 3, H, W)`` uint8 backgrounds already at the output size.
        fg_ratio, bg_ratio: ``(B,)`` object share of the foreground's / background's source image.
        labels: ``(B,)`` int64.
        orig: ``(B, 3, H, W)`` uint8 original images or None; ``use_orig`` ``(B,)`` bool.
        draws: each sample's own :class:`~forcomp.recombine.params.SampleDraws` for its geometry,
            or None (then the transform's generator draws for the whole batch).
        decode_failures: parts that failed to decode while this batch was read (and were replaced).
        params: the output geometry of each sample when the workers planned it (``ForComp`` does;
            fused crop and flip: the paste planned on the full-resolution background, composed
            with the crop).
        crop: ``(B, 5)`` each sample's crop box ``x0, y0, w, h`` in full-background pixels and flip
            bit (fused mode), for the record.
    """

    fg: torch.Tensor | list[torch.Tensor]
    fg_hw: torch.Tensor
    bg: torch.Tensor
    fg_ratio: torch.Tensor
    bg_ratio: torch.Tensor
    labels: torch.Tensor
    orig: torch.Tensor | None = None
    use_orig: torch.Tensor | None = None
    draws: SampleDraws | None = None
    decode_failures: int = 0
    params: RecombineParams | None = None
    crop: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Parts:
        def mv(t: Any) -> Any:
            if isinstance(t, (RecombineParams, SampleDraws)):
                return type(t)(*(None if x is None else x.to(device, non_blocking=non_blocking) for x in t))  # type: ignore[arg-type]
            if isinstance(t, list):
                return [x.to(device, non_blocking=non_blocking) for x in t]
            return t.to(device, non_blocking=non_blocking) if isinstance(t, torch.Tensor) else t

        return Parts(*(mv(getattr(self, f)) for f in self.__dataclass_fields__))  # type: ignore[arg-type]

    def pin_memory(self) -> Parts:
        """Every tensor in page-locked memory: DataLoader(pin_memory=True) calls this on custom batch
        types; without it a ``Parts`` batch stayed pageable and ``to(device, non_blocking=True)``
        copied synchronously (~100 MB per 256-image batch)."""

        def pin(t: Any) -> Any:
            if isinstance(t, (RecombineParams, SampleDraws)):
                return type(t)(*(None if x is None else x.pin_memory() for x in t))  # type: ignore[arg-type]
            if isinstance(t, list):
                return [x.pin_memory() for x in t]
            return t.pin_memory() if isinstance(t, torch.Tensor) else t

        return Parts(*(pin(getattr(self, f)) for f in self.__dataclass_fields__))  # type: ignore[arg-type]

    @property
    def fg_fill(self) -> torch.Tensor:
        """Share of each valid foreground crop covered by the object (mean alpha)."""
        fg = self.fg if isinstance(self.fg, torch.Tensor) else pad_foregrounds(self.fg)
        return fg_fill(fg, self.fg_hw)


class Recombine(v2.Transform):
    """Paste a batch of foregrounds onto backgrounds with ForNet's size/position rules.

    Args:
        config: a :class:`RecombineConfig` (or its fields as keyword arguments). ``Recombine`` uses
            the geometry fields (size, position, feathering); ``background``, ``pruning_ratio``,
            ``orig_img_prob`` and the crop/flip fields act in :class:`~forcomp.ForComp`'s workers,
            which read the parts, crop the backgrounds and hand the composed geometry over in
            ``Parts.params``.
        seed: base seed; the generator is derived from ``(seed, rank, epoch)``. None: random.
        method: the paste kernel (see :func:`~forcomp.recombine.functional.composite`): ``auto``
            takes per-object windows on the CPU and batched matrices on GPUs.
        compile: run the matrix kernel through ``torch.compile`` (fused kernels: fewer passes over
            memory). None (default): on CUDA batches, unless ``method="window"``; True: on every
            device (needs a working ``torch.compile`` backend); False: never. If compiling fails
            the eager kernel runs instead, with a logged warning.
        smoothing_radius: truncation of the feathering kernel (default 3 x ``mask_smoothing_sigma``).

    Example:
        >>> import torch
        >>> from forcomp.recombine import ForComp, Recombine, collate_parts
        >>> ds = ForComp(cache, split="val", size=64, seed=0)  # cache: a forcomp cache or ForNet release
        >>> parts = collate_parts([ds.load_parts(i) for i in range(4)])  # what loader workers hand over
        >>> rec = Recombine(ds.config, seed=0)
        >>> images, masks, params = rec(parts, return_params=True)
        >>> images.shape, masks.shape
        (torch.Size([4, 3, 64, 64]), torch.Size([4, 64, 64]))
        >>> bool((rec(parts, params=params)[0] == images).all())  # params replay bit for bit
        True
        >>> centred = Recombine(fg_bates_n=0, seed=0)  # other settings: draws from a generator
        >>> p = centred.make_params(parts, generator=torch.Generator().manual_seed(0))
        >>> images, masks = centred(parts, params=p)
    """

    def __init__(
        self,
        config: RecombineConfig | None = None,
        *,
        seed: int | None = None,
        method: Literal["auto", "matrix", "window"] = "auto",
        compile: bool | None = None,  # noqa: A002 - torch.compile's name, as timm's --torchcompile
        smoothing_radius: int | None = None,
        **overrides: Unpack[RecombineKwargs],
    ) -> None:
        super().__init__()
        self.config = config if config is not None else RecombineConfig(**overrides)
        if config is not None and overrides:
            raise TypeError("pass either config or keyword arguments, not both")
        self.seed = seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.epoch = 0
        self._generators: dict[str, torch.Generator] = {}
        self.smoothing_radius = (
            max(1, math.ceil(3 * self.config.mask_smoothing_sigma))
            if smoothing_radius is None
            else int(smoothing_radius)
        )
        if method not in ("auto", "matrix", "window"):
            raise ValueError(f"method must be 'auto', 'matrix' or 'window', got {method!r}")
        self.method: Literal["auto", "matrix", "window"] = method
        if compile not in (None, True, False):
            raise ValueError(f"compile must be None (compile on CUDA), True or False, got {compile!r}")
        if compile and method == "window":
            raise ValueError(
                "compile=True needs the matrix kernel (the window kernel loops over objects in Python): "
                "pass method='matrix' or 'auto', or compile=False"
            )
        self.compile = compile
        self._compiled: Callable[..., Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Generators are rebuilt from (seed, rank, epoch) where the copy runs; a torch.Generator
        # cannot cross a spawn boundary.
        # The compiled kernel is rebuilt on first use too (compiled code does not pickle).
        return self.__dict__ | {"_generators": {}, "_compiled": None}

    def uses_compile(self, device: torch.device) -> bool:
        """Whether batches on ``device`` go through the compiled matrix kernel."""
        if self.compile is not None:
            return self.compile
        return device.type == "cuda" and self.method != "window"

    def _composite(
        self,
        parts: Parts,
        params: RecombineParams,
        out_dtype: torch.dtype = torch.float32,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fg = parts.fg
        if not isinstance(fg, torch.Tensor) and self.uses_compile(parts.bg.device):
            fg = pad_foregrounds(fg)  # the compiled matrix kernel takes one padded tensor
        args = (fg, parts.fg_hw, parts.bg, params)
        kw: dict[str, Any] = {"smoothing_radius": self.smoothing_radius, "out_dtype": out_dtype}
        if self.uses_compile(parts.bg.device):
            compiled = self._run_compiled(args, kw)
            if compiled is not None:
                images, masks = compiled
                return (images, masks) if out is None else (out.copy_(images), masks)
        return composite(*args, method=self.method, out=out, **kw)

    def _run_compiled(
        self, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The compiled matrix kernel's ``(images, masks)``; None when it cannot compile."""
        if self._compiled is None:
            # dynamic=True: every batch pads its foregrounds to another size; one graph with
            # symbolic sizes serves them all. dynamic=None compiles a static graph first and
            # recompiles on the next shapes (measured on an H200: 3 graphs of several seconds
            # each per loader pass, against 1; benchmarks/RESULTS.md). fullgraph: a graph
            # break would be a bug here.
            self._compiled = torch.compile(composite, fullgraph=True, dynamic=True)
        try:
            return self._compiled(*args, method="matrix", **kw)
        except Exception as e:  # noqa: BLE001 - e.g. no Triton/C++ toolchain: eager is the same picture
            log.warning("torch.compile of the paste kernel failed (%s); running it eagerly", e)
            self.compile = False
            self._compiled = None
        return None

    def set_epoch(self, epoch: int) -> None:
        """Start the draws of ``epoch`` afresh (as DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)
        self._generators.clear()

    def _generator(self) -> torch.Generator:
        """The CPU generator of this (seed, rank, epoch): draws are made on the CPU and moved to the
        batch's device, so one seed gives the same geometry on every device, and no generator
        argument reaches compiled code (each one was a graph break)."""
        key = "cpu"
        if key not in self._generators:
            rank = (
                torch.distributed.get_rank()
                if torch.distributed.is_available() and torch.distributed.is_initialized()
                else 0
            )
            g = torch.Generator()
            g.manual_seed(derive_seed(self.seed, rank, self.epoch))
            self._generators[key] = g
        return self._generators[key]

    def make_params(self, parts: Parts, generator: torch.Generator | None = None) -> RecombineParams:  # type: ignore[override]
        """This batch's geometry on the batch's device.

        The batch's own ``params`` when it carries them (``ForComp`` plans each sample in its
        worker, so a sample's geometry does not depend on its batch); else planned from the
        batch's ``draws``, or from ``generator`` (on any device), or from the transform's own CPU
        generator, whose draws are made on the CPU and moved.
        """
        if parts.params is not None and generator is None:
            return RecombineParams(*(t.to(parts.bg.device) for t in parts.params))
        B = parts.bg.shape[0]
        if generator is not None:
            draws = draw_batch(self.config, B, generator=generator, paste_only=True)
        elif parts.draws is not None:
            draws = parts.draws
        else:
            draws = draw_batch(self.config, B, generator=self._generator()).to(
                parts.bg.device, non_blocking=True
            )
        canvas = (int(parts.bg.shape[-2]), int(parts.bg.shape[-1]))
        return plan(
            parts.fg_ratio, parts.bg_ratio, parts.fg_hw, parts.fg_fill, canvas, self.config, draws
        ).params

    def forward(  # type: ignore[override]
        self,
        parts: Parts,
        params: RecombineParams | None = None,
        *,
        return_params: bool = False,
        out_dtype: torch.dtype = torch.float32,
        out: torch.Tensor | None = None,
    ) -> Any:
        """Recombine ``parts``; returns ``(images, masks)`` (plus the params when ``return_params``).

        Images are ``(B, 3, H, W)`` float32 in [0, 1], or uint8 with ``out_dtype=torch.uint8``;
        where ``use_orig`` is set the original image is returned and its mask is empty. ``out``:
        a ``(B, 3, H, W)`` tensor of ``out_dtype`` on the batch's device that receives the images
        (a DataLoader worker passes one in shared memory: handed over without a copy).
        """
        if out_dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"out_dtype must be torch.float32 or torch.uint8, got {out_dtype}")
        if params is None:
            params = self.make_params(parts)
        images, masks = self._composite(parts, params, out_dtype, out)
        if parts.orig is not None and parts.use_orig is not None:
            sel = parts.use_orig[:, None, None, None]
            orig = parts.orig if out_dtype == torch.uint8 else parts.orig.float() / 255.0
            picked = torch.where(sel, orig, images)
            images = picked if out is None else images.copy_(picked)
            masks = torch.where(sel[:, 0], torch.zeros_like(masks), masks)
        result = (tv_tensors.Image(images), tv_tensors.Mask(masks))
        return (*result, params) if return_params else result

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.to_dict().items())


def collate_parts(samples: Sequence[dict[str, Any]], *, pad: bool = True) -> Parts:
    """Stack ``ForComp.load_parts`` samples into a :class:`Parts` batch.

    Foregrounds are zero-padded to the largest; ``pad=False`` keeps them as a list of unpadded
    tensors, which the CPU (window) paste reads as they are: a batch pasted where it is collated
    (a CPU loader's workers, ``ds[i]``) skips the padded copy.
    """
    fgs = [s["fg"] for s in samples]
    fg = pad_foregrounds(fgs) if pad else fgs
    has_orig = any(s["orig"] is not None for s in samples)
    bg = torch.stack([s["bg"] for s in samples])
    return Parts(
        fg=fg,
        fg_hw=torch.tensor([list(s["fg"].shape[1:]) for s in samples], dtype=torch.int64),
        bg=bg,
        fg_ratio=torch.tensor([s["fg_ratio"] for s in samples], dtype=torch.float32),
        bg_ratio=torch.tensor([s["bg_ratio"] for s in samples], dtype=torch.float32),
        labels=torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        orig=torch.stack([s["orig"] if s["orig"] is not None else torch.zeros_like(s["bg"]) for s in samples])
        if has_orig
        else None,
        use_orig=torch.tensor([s["use_orig"] for s in samples], dtype=torch.bool) if has_orig else None,
        draws=SampleDraws.cat([s["draws"] for s in samples]) if all("draws" in s for s in samples) else None,
        params=RecombineParams(*(torch.cat(t) for t in zip(*(s["params"] for s in samples), strict=True)))
        if all("params" in s for s in samples)
        else None,
        crop=torch.stack([s["crop"] for s in samples]) if all("crop" in s for s in samples) else None,
        decode_failures=sum(int(s.get("decode_failures", 0)) for s in samples),
    )
