"""``ForComp``: a torchvision-style dataset of recombined images, and its fast batched loader.

``ds[i]`` recombines foreground ``i`` (one sample, same kernel as the batch path). ``ds.loader(...)``
is the fast path: DataLoader workers only read and decode uint8 parts; each batch is recombined on
``device`` by :class:`~forcomp.recombine.transform.Recombine` in one batched operation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from typing_extensions import Unpack

from forcomp.cache.reader import CacheReader
from forcomp.recombine.config import Background, RecombineConfig, RecombineOptions, canvas_size
from forcomp.recombine.fg_transform import apply_fg_transform
from forcomp.recombine.functional import composite, crop_parts, resize_cover, shrink
from forcomp.recombine.items import ItemFiles
from forcomp.recombine.params import Plan, SampleDraws, derive_seed, draw_sample, fg_fill, plan
from forcomp.recombine.pools import background_pools
from forcomp.recombine.transform import Recombine, collate_parts

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.recombine.loader import ForCompLoader, LoaderKwargs, LoaderOptions

log = logging.getLogger(__name__)


class ForComp(Dataset):
    """Recombined foregrounds and backgrounds from a forcomp cache or a ForNet release.

    Usable where torchvision's ``ImageFolder`` is: ``classes``, ``class_to_idx``, ``targets``;
    labels are indices into the sorted class names. ``ds[i]`` returns ``(image, label)`` or
    ``(image, label, mask)`` with ``return_masks=True``.

    Two paths to ForNet's training distribution (the object pasted on the *full-resolution*
    background, then RandomResizedCrop + flip):

    - ``size=None`` (per sample): ``image`` is a PIL RGB image of the composite at the background's
      own resolution, what ``ImageFolder`` hands a transform, so any PIL/v1/v2 pipeline (timm's
      ``create_transform``, torchvision's presets) runs unchanged; the mask is a
      ``tv_tensors.Mask`` beside it.
    - ``size=224`` (fast): ``image`` is a float32 ``tv_tensors.Image`` in [0, 1] ``(3, H, W)``; on
      the train split the crop and flip are fused into the recombination (``crop_scale``), so each
      pixel is resampled once from the full-resolution parts. ``ds.loader(...)`` batches it.

    Args:
        cache: cache root (``CACHE/<split>/foregrounds`` ... or the ForNet zips).
        split: ``train`` or ``val``.
        size: output size, an int or ``(h, w)``; None: the per-sample path (PIL composites).
        background: ``orig``, ``same`` or ``all`` (see :class:`RecombineConfig`).
        config: the recombination settings as one :class:`RecombineConfig`; its ``"auto"`` crop and
            flip are resolved for ``split`` and ``size`` (:meth:`RecombineConfig.resolved`).
        orig_root: source ImageFolder for ``orig_img_prob`` when the cache has no forcomp index
            (ForNet releases); forcomp caches know their source files.
        fg_transform: applied to the RGBA foreground before pasting: a torchvision v2 transform
            (gets a ``(4, h, w)`` uint8 tensor) or an albumentations ``Compose`` (gets HWC RGBA).
        transform: applied to the recombined image (and mask, with ``return_masks``) in ``ds[i]``.
        target_transform: applied to the label.
        return_masks: also return the pasted object's ``(H, W)`` mask.
        seed: same seed → same outputs (``ds[i]`` depends only on seed, epoch and i); None: random.
        **overrides: :class:`RecombineConfig` fields by name (ForNet's: ``fg_scale_jitter``,
            ``pruning_ratio``, ``fg_size_mode``, ``fg_bates_n``, ``mask_smoothing_sigma``,
            ``rel_jut_out``, ``nonant``, ``size_factor``, ``orig_img_prob``, ``epochs``, and the
            fused RandomResizedCrop and flip ``crop_scale``, ``crop_ratio``, ``hflip_prob``), over
            ``config``. ``crop_scale`` and ``hflip_prob`` default to ``"auto"``: train →
            ``(0.08, 1)`` and 0.5 as torchvision's presets and timm; any other split → the whole
            background (resized to cover ``size``, centre crop), no flip, as the bias evaluation uses.

    Example:
        >>> ds = ForComp("cache", split="train", size=224, background="all", seed=0)  # doctest: +SKIP
        >>> for images, labels in ds.loader(256, num_workers=8, device="cuda"): ...  # doctest: +SKIP
    """

    def __init__(
        self,
        cache: str | os.PathLike[str],
        split: str = "train",
        size: int | tuple[int, int] | None = 224,
        background: Background | None = None,
        *,
        config: RecombineConfig | None = None,
        orig_root: str | os.PathLike[str] | None = None,
        fg_transform: Callable[..., Any] | None = None,
        transform: Callable[..., Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        return_masks: bool = False,
        seed: int | None = None,
        **overrides: Unpack[RecombineOptions],
    ) -> None:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(RecombineConfig)}
        if unknown:
            raise TypeError(f"ForComp got unexpected keyword argument(s) {sorted(unknown)}")
        base = config if config is not None else RecombineConfig(crop_scale="auto", hflip_prob="auto")
        if background is not None:
            base = dataclasses.replace(base, background=background)
        self.size: tuple[int, int] | None = None if size is None else canvas_size(size)
        self.config = dataclasses.replace(base, **overrides).resolved(split, self.size)
        # fused: the paste is drawn on the full-resolution background, then cropped/flipped (train)
        self.fused = self.size is not None and self.config.fused
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        seed = int(seed) if seed is not None else None
        self.reader = CacheReader(cache, split)
        self.split = split
        self.classes = self.reader.classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.labels: np.ndarray = self.reader.fg.labels  # (N,) int32, one array (no per-item objects)
        self.fg_transform, self.transform, self.target_transform = fg_transform, transform, target_transform
        self.return_masks = return_masks
        self.seed = seed
        self._epoch = 0
        self.problems = list(self.reader.problems)
        if self.problems:
            log.warning(
                "%s: %d file(s) of the %s split are left out (%s%s); `forcomp verify %s` lists them",
                self.reader.layout.root, len(self.problems), split, self.problems[0],
                ", ..." if len(self.problems) > 1 else "", self.reader.layout.root,
            )  # fmt: skip
        self.orig_root = Path(orig_root) if orig_root is not None else None
        if self.config.orig_prob(0) > 0 or isinstance(self.config.orig_img_prob, str):
            if not self.reader.has_sources and self.orig_root is None:
                raise ValueError(
                    "orig_img_prob > 0 needs the source images: pass orig_root=SOURCE "
                    "(a ForNet release has no index)"
                )
        self.pools = background_pools(self.reader, self.config, split)
        self.files = ItemFiles(self.reader, self.config, self.pools, self.orig_root)
        # The fused crop magnifies the feathered edge (sigma in background pixels, as ForNet's):
        # the kernel's truncation radius covers up to 8x magnification.
        radius = max(1, math.ceil(3 * self.config.mask_smoothing_sigma * (8 if self.fused else 1)))
        self.recombine = Recombine(self.config, seed=seed if seed is not None else 0, smoothing_radius=radius)

    @property
    def epoch(self) -> int:
        """The epoch the draws (and the ``orig_img_prob`` schedule) of a seeded dataset follow.

        The fast loader sets it from its own ``set_epoch`` or the sampler's. There is deliberately
        no ``ForComp.set_epoch``: timm's ``train.py`` calls a dataset's ``set_epoch`` *instead of*
        the ``DistributedSampler``'s, which would freeze the sample order under DDP.
        """
        return self._epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        self.recombine.set_epoch(self._epoch)

    @property
    def decode_failures(self) -> int:
        """Files refused and replaced so far (the loader adds those met in its worker processes)."""
        return self.files.failures

    @decode_failures.setter
    def decode_failures(self, n: int) -> None:
        self.files.failures = int(n)

    @property
    def targets(self) -> list[int]:
        """Label of each item, as ``ImageFolder.targets`` (built on access from the label array)."""
        return self.labels.tolist()

    def key(self, index: int) -> str:
        """Item ``index``'s key ``<class>/<stem>.JPEG`` (as in the ratios file)."""
        return self.reader.fg_key(index)

    def __len__(self) -> int:
        return len(self.labels)

    # ---- worker side: read + decode ----
    def _item_generator(self, index: int) -> torch.Generator:
        """The sample's own generator. Seeded: from ``(seed, epoch, index)``. Unseeded: from one
        draw of torch's default generator, as torchvision's random transforms draw, so a script's
        ``torch.manual_seed`` makes the run reproducible and the DataLoader's per-worker, per-epoch
        seeding makes every epoch and every worker draw anew (no ``set_epoch`` needed)."""
        g = torch.Generator()
        if self.seed is not None:
            return g.manual_seed(derive_seed(self.seed, self.epoch, index))
        return g.manual_seed(int(torch.randint(0, 2**62, ())))

    def load_parts(self, index: int, *, fg_at_paste_size: bool = False) -> dict[str, Any]:
        """Read and decode the parts for foreground ``index`` (what a DataLoader worker does).

        The sample's random numbers are drawn here (:func:`~forcomp.recombine.params.draw_sample`,
        kept as ``draws``) and its geometry planned from them (``params``), so it does not depend
        on its batch. Whole-background mode: the background resized to cover ``size``, the
        foreground shrunk to fit it. Fused mode (crop or flip): the paste is planned on the
        full-resolution background and composed with the crop box and flip bit (``crop``); the
        background's box is resized once to ``size`` (and flipped), the foreground mirrored.
        ``fg_at_paste_size`` (what the loader asks for when a GPU pastes): the foreground is also
        shrunk to its pasted size here, so the batch copied to the device and the matrix kernel's
        work are small; on a CPU the window kernel resamples it in one step instead (5 % less
        work per image, measured).

        Returns:
            a dict that :func:`~forcomp.recombine.transform.collate_parts` batches: ``fg``
            ``(4, h, w)`` uint8, ``bg``, ``orig`` (or None) ``(3, H, W)`` uint8, ``fg_ratio``,
            ``bg_ratio``, ``label``, ``use_orig``, ``draws``, ``decode_failures``; with ``size``:
            ``params`` (the output geometry), fused mode also ``crop``.
        """
        index = self._check_index(index)
        failures = self.decode_failures
        g = self._item_generator(index)
        fg, item = self.files.foreground(index, g)
        if self.size is not None and not self.fused:  # fused: shrunk to its pasted size later
            fg = shrink(fg, max(self.size))
        if self.fg_transform is not None:
            fg = apply_fg_transform(
                self.fg_transform,
                fg,
                seed=None if self.seed is None else derive_seed(self.seed, self.epoch, index, 0xF6),
                name=self.reader.fg_name(item),
            )
        bg, bg_ratio = self.files.background(item, g)
        draws = draw_sample(self.config, self.epoch, generator=g)
        orig = self.files.original(item) if draws.use_orig is not None and bool(draws.use_orig[0]) else None
        fg_ratio = float(self.reader.fg_ratio[item])
        out: dict[str, Any] = {
            "fg_ratio": fg_ratio,
            "bg_ratio": bg_ratio,
            "label": int(self.labels[item]),
            "use_orig": orig is not None,
            "draws": draws,
        }
        if self.size is None:  # the per-sample path composites at the background's resolution
            out |= {"fg": fg, "bg": bg, "orig": orig}
        elif not self.fused:
            fg_hw = torch.tensor([list(fg.shape[1:])])
            p = plan(
                torch.tensor([fg_ratio], dtype=torch.float32),
                torch.tensor([bg_ratio], dtype=torch.float32),
                fg_hw,
                fg_fill(fg[None], fg_hw),
                self.size,
                self.config,
                draws,
            )
            out |= {
                "fg": fg,
                "bg": resize_cover(bg, self.size),
                "orig": None if orig is None else resize_cover(orig, self.size),
                "params": p.params,
            }
        else:
            p = self.plan(fg, bg, fg_ratio, bg_ratio, draws, out_hw=self.size)
            if p.crop is None:  # guarded by self.fused
                raise RuntimeError("internal error: a fused plan without a crop")
            x, y, w, h = (int(v) for v in torch.stack(p.crop[:4]).flatten().tolist())
            # The foreground is resampled once: to its pasted size here when asked and smaller (the
            # kernel then copies it 1:1), else by the kernel. Sizes rounded as the kernel does.
            ph, pw = int(p.params.h.clamp_min(1).round()), int(p.params.w.clamp_min(1).round())
            fg, out_bg, orig = crop_parts(
                fg, bg, orig, (x, y, w, h), bool(p.crop.flip[0]), self.size,
                fg_size=(ph, pw) if fg_at_paste_size else None,
            )  # fmt: skip
            crop = torch.cat([torch.stack(p.crop[:4], 1), p.crop.flip[:, None].float()], 1)[0]
            out |= {"fg": fg, "bg": out_bg, "orig": orig, "params": p.params, "crop": crop}
        out["decode_failures"] = self.decode_failures - failures
        return out

    def plan(
        self,
        fg: torch.Tensor,
        bg: torch.Tensor,
        fg_ratio: float,
        bg_ratio: float,
        draws: SampleDraws,
        out_hw: tuple[int, int] | None = None,
    ) -> Plan:
        """One sample's geometry on its full-resolution background (:func:`~forcomp.recombine.params.plan`
        with ``B = 1``): the paste, composed with the fused crop and flip into ``out_hw`` if given."""
        fh, fw = int(fg.shape[1]), int(fg.shape[2])
        return plan(
            torch.tensor([fg_ratio], dtype=torch.float32),
            torch.tensor([bg_ratio], dtype=torch.float32),
            torch.tensor([[fh, fw]]),
            fg[3].float().mean().reshape(1) / 255.0,
            torch.tensor([[int(bg.shape[1]), int(bg.shape[2])]]),
            self.config,
            draws,
            out_hw=out_hw,
        )

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = operator.index(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {n} foregrounds")
        return i + n if i < 0 else i

    # ---- one sample: same kernel, B = 1 ----
    def __getitem__(self, index: int) -> tuple[Any, ...]:
        """``(image, label)`` or ``(image, label, mask)``.

        ``size`` set: ``image`` is a float32 ``tv_tensors.Image`` in [0, 1] (crop and flip fused on
        the train split), the same picture as item ``index`` of a loader batch. ``size=None``: the
        composite at the background's own resolution as a PIL RGB image, as ``ImageFolder`` hands
        it to ``transform`` (the mask is a ``tv_tensors.Mask`` next to it, so v2 geometry moves it).
        """
        sample = self.load_parts(index)
        if self.size is None:
            image, mask = self._composite_full(sample)
        else:
            parts = collate_parts([sample], pad=False)  # one foreground: nothing to pad
            images, masks = self.recombine(parts)  # the item's own draws: ds[i] equals item i of a batch
            image, mask = tv_tensors.Image(images[0]), tv_tensors.Mask(masks[0])
        label: Any = sample["label"]
        if self.target_transform is not None:
            label = self.target_transform(label)
        if self.transform is not None:
            if self.return_masks:
                image, mask = self.transform(image, mask)
            else:
                image = self.transform(image)
        return (image, label, mask) if self.return_masks else (image, label)

    def _composite_full(self, sample: dict[str, Any]) -> tuple[Any, tv_tensors.Mask]:
        """ForNet's paste on the full-resolution background (one sample) → PIL RGB image, mask."""
        from PIL import Image

        fg, bg = sample["fg"], sample["bg"]
        if sample["use_orig"] and sample["orig"] is not None:
            img = sample["orig"]
            mask = torch.zeros(img.shape[1:], dtype=torch.float32)
        else:
            p = self.plan(fg, bg, sample["fg_ratio"], sample["bg_ratio"], sample["draws"])
            imgs, masks = composite(
                fg[None], torch.tensor([list(fg.shape[1:])]), bg[None], p.params,
                smoothing_radius=self.recombine.smoothing_radius,
                method="window",
                fg_filter="bicubic",  # as ForNet's PIL resize
            )  # fmt: skip
            img, mask = imgs[0], masks[0]
        pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), "RGB")
        return pil, tv_tensors.Mask(mask)

    # ---- the fast path ----
    def loader(
        self, batch_size: int, options: LoaderOptions | None = None, **overrides: Unpack[LoaderKwargs]
    ) -> ForCompLoader:
        """The fast batched loader: ``(images, labels)`` (+ ``masks`` with ``return_masks``).

        Args:
            batch_size: samples per batch.
            options: a :class:`~forcomp.recombine.loader.LoaderOptions`.
            **overrides: its fields by name, over ``options``: ``num_workers``, ``device``,
                ``shuffle``, ``sampler``, ``drop_last``, ``augment``, ``batch_transform``, ``mix``,
                ``pin_memory``, ``prefetch_factor``.

        Returns:
            a :class:`~forcomp.recombine.loader.ForCompLoader` (``len``, re-iterable, ``sampler``,
            ``dataset``, ``batch_size``, ``set_epoch``).
        """
        from forcomp.recombine.loader import ForCompLoader, LoaderOptions

        return ForCompLoader(self, batch_size, LoaderOptions.of(options, **overrides))
