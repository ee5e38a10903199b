"""``ForComp``: a torchvision-style dataset of recombined images, and its fast batched loader.

``ds[i]`` recombines foreground ``i`` (one sample, same kernel as the batch path). ``ds.loader(...)``
is the fast path: DataLoader workers only read and decode uint8 parts; each batch is recombined on
``device`` by :class:`~forcomp.recombine.transform.Recombine` in one batched operation.
"""

from __future__ import annotations

import logging
import math
import numbers
import operator
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from forcomp.cache.reader import CacheReader, Part
from forcomp.errors import CacheFormatError
from forcomp.recombine.fg_transform import apply_fg_transform
from forcomp.recombine.functional import _premultiplied, composite
from forcomp.recombine.params import (
    RecombineConfig,
    compose_crop,
    derive_seed,
    n_paste_uniforms,
    n_uniforms,
    sample_crop,
    sample_params,
)
from forcomp.recombine.transform import Recombine, collate_parts

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.recombine.loader import ForCompLoader

log = logging.getLogger(__name__)
MAX_RETRIES = 10


def _decode(data: bytes, mode: ImageReadMode) -> torch.Tensor:
    with warnings.catch_warnings():
        # torchvision 0.29 announces a move of its decoders to torchcodec; they remain the fastest here.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)


def _resize_u8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(C, h, w)`` uint8 (PIL's filter), staying in uint8.

    channels_last selects torch's SIMD uint8 kernel: several times faster than a float round trip.
    """
    out = F.interpolate(
        img[None].contiguous(memory_format=torch.channels_last),
        size=size,
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return out[0].contiguous()


def resize_cover(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(C, h, w)`` uint8 to cover ``size`` keeping the aspect ratio, then centre-crop."""
    H, W = size
    _, h, w = img.shape
    s = max(H / h, W / w)
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    if (nh, nw) != (h, w):
        img = _resize_u8(img, (nh, nw))
    y, x = (nh - H) // 2, (nw - W) // 2
    return img[:, y : y + H, x : x + W].contiguous()


def _shrink(img: torch.Tensor, max_side: int) -> torch.Tensor:
    _, h, w = img.shape
    if max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return _resize_u8(img, (max(1, round(h * s)), max(1, round(w * s))))


def _shrink_premultiplied(fg: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(4, h, w)`` uint8 RGBA with premultiplied colour (as the paste kernel resamples),
    back to straight alpha: transparent pixels' colour does not bleed into the object's edge."""
    pm = _resize_u8(_premultiplied(fg, torch.float32, True), size)
    a = pm[3].float()
    rgb = (pm[:3].float() * (255.0 / a.clamp_min(1.0))).round_().clamp_(0, 255).to(torch.uint8)
    return torch.cat([rgb, pm[3:]])


def _indices_by_class(parts: Sequence[Part], among: Sequence[int] | None = None) -> dict[str, list[int]]:
    """``{class: [index, ...]}`` of ``parts`` (only the indices in ``among`` when given), one pass."""
    out: dict[str, list[int]] = {}
    for i in range(len(parts)) if among is None else among:
        out.setdefault(parts[i].cls, []).append(i)
    return out


def _canvas_size(size: Any) -> tuple[int, int]:
    """``size`` as ``(h, w)``: an int, or a pair of ints, each >= 8."""
    pair = (size, size) if isinstance(size, numbers.Integral) else size
    if (
        isinstance(size, (str, bytes, bool))
        or not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
        or min(pair) < 8
    ):
        raise ValueError(f"size must be an int or (h, w) of ints, each >= 8, got {size!r}")
    return int(pair[0]), int(pair[1])


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
        background, fg_scale_jitter, pruning_ratio, fg_size_mode, fg_bates_n, mask_smoothing_sigma,
            rel_jut_out, nonant, size_factor, orig_img_prob, epochs: see :class:`RecombineConfig`.
        crop_scale, crop_ratio, hflip_prob: the fused RandomResizedCrop and flip (see
            :class:`RecombineConfig`). ``"auto"`` follows the split as torchvision's presets and
            timm: train → ``(0.08, 1)`` and 0.5; any other split → the whole background (resized
            to cover ``size``, centre crop), no flip, as the bias evaluation uses.
        orig_root: source ImageFolder for ``orig_img_prob`` when the cache has no forcomp index
            (ForNet releases); forcomp caches know their source files.
        fg_transform: applied to the RGBA foreground before pasting: a torchvision v2 transform
            (gets a ``(4, h, w)`` uint8 tensor) or an albumentations ``Compose`` (gets HWC RGBA).
        transform: applied to the recombined image (and mask, with ``return_masks``) in ``ds[i]``.
        target_transform: applied to the label.
        return_masks: also return the pasted object's ``(H, W)`` mask.
        seed: same seed → same outputs (``ds[i]`` depends only on seed, epoch and i); None: random.

    Example:
        >>> ds = ForComp("cache", split="train", size=224, background="all", seed=0)  # doctest: +SKIP
        >>> for images, labels in ds.loader(256, num_workers=8, device="cuda"): ...  # doctest: +SKIP
    """

    def __init__(
        self,
        cache: str | os.PathLike[str],
        split: str = "train",
        size: int | tuple[int, int] | None = 224,
        background: str = "all",
        *,
        fg_scale_jitter: float = 0.3,
        pruning_ratio: float = 0.8,
        fg_size_mode: str = "range",
        fg_bates_n: int = 1,
        mask_smoothing_sigma: float = 4.0,
        rel_jut_out: float = 0.0,
        nonant: int | None = None,
        size_factor: float = 1.0,
        orig_img_prob: float | str = 0.0,
        epochs: int | None = None,
        crop_scale: tuple[float, float] | None | str = "auto",
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip_prob: float | str = "auto",
        orig_root: str | os.PathLike[str] | None = None,
        fg_transform: Callable[..., Any] | None = None,
        transform: Callable[..., Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        return_masks: bool = False,
        seed: int | None = None,
    ) -> None:
        for name, v in (("crop_scale", crop_scale), ("hflip_prob", hflip_prob)):
            if isinstance(v, str) and v != "auto":
                raise ValueError(f"{name} must be 'auto' or a value, got {v!r}")
        asks_crop = not isinstance(crop_scale, str) and crop_scale is not None
        asks_flip = not isinstance(hflip_prob, str) and hflip_prob != 0
        if size is None and (asks_crop or asks_flip):
            raise ValueError(
                "crop_scale/hflip_prob fuse the crop and flip into the recombination's output and need "
                "size=...; with size=None the transform gets the whole composite as a PIL image and does "
                "its own RandomResizedCrop and flip"
            )
        train = split == "train" and size is not None
        if crop_scale == "auto":
            # torchvision's presets and timm: train = RandomResizedCrop(scale=(0.08, 1)) + flip 0.5,
            # val = the whole image.
            crop_scale = (0.08, 1.0) if train else None
        if hflip_prob == "auto":
            hflip_prob = 0.5 if train else 0.0
        self.config = RecombineConfig(
            background=background,  # type: ignore[arg-type]
            fg_scale_jitter=fg_scale_jitter,
            pruning_ratio=pruning_ratio,
            fg_size_mode=fg_size_mode,  # type: ignore[arg-type]
            fg_bates_n=fg_bates_n,
            mask_smoothing_sigma=mask_smoothing_sigma,
            rel_jut_out=rel_jut_out,
            nonant=nonant,
            size_factor=size_factor,
            orig_img_prob=orig_img_prob,
            epochs=epochs,
            crop_scale=crop_scale,  # type: ignore[arg-type]
            crop_ratio=crop_ratio,
            hflip_prob=hflip_prob,  # type: ignore[arg-type]
        )
        self.size: tuple[int, int] | None = None if size is None else _canvas_size(size)
        # fused: the paste is drawn on the full-resolution background, then cropped/flipped (train)
        self.fused = self.size is not None and (
            self.config.crop_scale is not None or self.config.hflip_prob > 0
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        seed = int(seed) if seed is not None else None
        self.reader = CacheReader(cache, split)
        self.split = split
        self.classes = self.reader.classes
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.foregrounds: list[Part] = self.reader.foregrounds
        self.keys = [p.key for p in self.foregrounds]
        self.targets = [self.class_to_idx[p.cls] for p in self.foregrounds]
        self.fg_transform, self.transform, self.target_transform = fg_transform, transform, target_transform
        self.return_masks = return_masks
        self.seed = seed
        self.epoch = 0
        self.decode_failures = 0
        self.orig_root = Path(orig_root) if orig_root is not None else None
        if self.config.orig_prob(0) > 0 or isinstance(orig_img_prob, str):
            if not self.reader.sources and self.orig_root is None:
                raise ValueError(
                    "orig_img_prob > 0 needs the source images: pass orig_root=SOURCE "
                    "(a ForNet release has no index)"
                )
        self._build_pools()
        # The fused crop magnifies the feathered edge (sigma in background pixels, as ForNet's):
        # the kernel's truncation radius covers up to 8x magnification.
        radius = max(1, math.ceil(3 * self.config.mask_smoothing_sigma * (8 if self.fused else 1)))
        self._recombine = Recombine(
            self.config, seed=seed if seed is not None else 0, smoothing_radius=radius
        )
        self._rng: torch.Generator | None = None
        self._rng_pid = -1
        self._fg_by_class: dict[str, list[int]] | None = None

    # ---- background pools (ForNet's pruning, with a fallback per class) ----
    def _build_pools(self) -> None:
        bgs = self.reader.backgrounds
        ratios = self.reader.ratios
        self.bg_index = {p.key: i for i, p in enumerate(bgs)}
        keep = [i for i, p in enumerate(bgs) if ratios.get(p.key, 1.0) < self.config.pruning_ratio]
        if self.config.background == "orig":
            missing = [k for k in self.keys if k not in self.bg_index]
            if missing:
                raise CacheFormatError(
                    f"background='orig' but {len(missing)} foreground(s) have no background, "
                    f"e.g. {missing[0]}"
                )
        if not bgs and self.config.background != "orig":
            raise CacheFormatError(f"the {self.split} split has no backgrounds")
        self.pool_all = keep or list(range(len(bgs)))
        if not keep and bgs:
            log.warning(
                "pruning_ratio=%s removes every background; using all of them", self.config.pruning_ratio
            )
        # One pass over the backgrounds (a per-class scan would cost classes x backgrounds: ~10^9
        # steps for ImageNet).
        all_by_class = _indices_by_class(bgs)
        kept_by_class = _indices_by_class(bgs, keep)
        self.pool_class: dict[str, list[int]] = {}
        fg_classes = {p.cls for p in self.foregrounds}
        for c in self.classes:
            kept = kept_by_class.get(c, [])
            if c not in fg_classes:  # a class without objects: its backgrounds only serve "all"
                self.pool_class[c] = kept or all_by_class.get(c, [])
                continue
            if not kept:
                kept = all_by_class.get(c, [])
                if self.config.background == "same":
                    if not kept:
                        raise CacheFormatError(
                            f"background='same' but class {c!r} has no background in the {self.split} split"
                        )
                    log.warning(
                        "class %s: every background pruned (pruning_ratio=%s); using its unpruned ones",
                        c,
                        self.config.pruning_ratio,
                    )
            self.pool_class[c] = kept

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (draws and the ``orig_img_prob`` schedule depend on it), as DistributedSampler."""
        self.epoch = int(epoch)
        self._recombine.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.foregrounds)

    def __getstate__(self) -> dict[str, Any]:
        # The per-process generator stays behind: a worker makes its own (see _item_generator), and
        # a torch.Generator cannot cross a spawn boundary (DataLoader workers on macOS/Windows).
        return self.__dict__ | {"_rng": None, "_rng_pid": -1}

    # ---- worker side: read + decode ----
    def _item_generator(self, index: int) -> torch.Generator:
        g = torch.Generator()
        if self.seed is not None:
            g.manual_seed(derive_seed(self.seed, self.epoch, index))
            return g
        if self._rng is None or self._rng_pid != os.getpid():
            # One generator per process, made in that process: a forked DataLoader worker must not
            # reuse a generator the parent made (e.g. by a ds[0] before training), or workers
            # repeat each other's draws. Each worker's torch initial seed differs (DataLoader).
            self._rng = torch.Generator().manual_seed(derive_seed(torch.initial_seed(), os.getpid()))
            self._rng_pid = os.getpid()
        g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self._rng)))
        return g

    def _pick(self, pool: Sequence[int], g: torch.Generator) -> int:
        return pool[int(torch.randint(len(pool), (1,), generator=g))]

    def _load_fg(self, index: int, g: torch.Generator) -> tuple[torch.Tensor, Part]:
        part = self.foregrounds[index]
        for _ in range(MAX_RETRIES):
            try:
                fg = _decode(self.reader.fg_bytes(part), ImageReadMode.RGB_ALPHA)
                if self.size is not None and not self.fused:  # fused: shrunk to its pasted size later
                    fg = _shrink(fg, max(self.size))
                return fg, part
            except Exception as e:  # noqa: BLE001 - any decode failure is replaced, counted, logged
                self.decode_failures += 1
                log.warning(
                    "cannot decode %s (%s); using another item of class %s",
                    self.reader.fg_name(part),
                    e,
                    part.cls,
                )
                part = self.foregrounds[self._pick(self._fg_of_class(part.cls), g)]
        raise CacheFormatError(f"{MAX_RETRIES} foregrounds of class {part.cls!r} failed to decode in a row")

    def _fg_of_class(self, cls: str) -> list[int]:
        """Indices of the foregrounds of ``cls`` (built on the first decode failure, then kept)."""
        if self._fg_by_class is None:
            self._fg_by_class = _indices_by_class(self.foregrounds)
        return self._fg_by_class[cls]

    def _choose_bg(self, part: Part, g: torch.Generator) -> int:
        mode = self.config.background
        if mode == "orig":
            return self.bg_index[part.key]
        return self._pick(self.pool_class[part.cls] if mode == "same" else self.pool_all, g)

    def _load_bg(self, part: Part, g: torch.Generator) -> tuple[torch.Tensor, float]:
        fallback = False  # background="orig" whose own background fails: a same-class one instead
        for _ in range(MAX_RETRIES):
            if fallback:
                bi = self._pick(self.pool_class[part.cls] or self.pool_all, g)
            else:
                bi = self._choose_bg(part, g)
            bpart = self.reader.backgrounds[bi]
            try:
                bg = _decode(self.reader.bg_bytes(bpart), ImageReadMode.RGB)
                return bg, self.reader.ratios.get(bpart.key, 0.0)
            except Exception as e:  # noqa: BLE001
                self.decode_failures += 1
                log.warning("cannot decode background %s (%s); drawing another of its class", bpart.key, e)
                fallback = fallback or self.config.background == "orig"
        raise CacheFormatError(f"{MAX_RETRIES} backgrounds for {part.key} failed to decode in a row")

    def _source_path(self, part: Part) -> Path | None:
        src = self.reader.sources.get(part.key)
        if src:
            return Path(src)
        if self.orig_root is not None:
            hits = sorted((self.orig_root / part.cls).glob(part.stem + ".*"))
            return hits[0] if hits else None
        return None

    def load_parts(self, index: int, *, fg_at_paste_size: bool = False) -> dict[str, Any]:
        """Read and decode the parts for foreground ``index`` (what a DataLoader worker does).

        Whole-background mode: the background resized to cover ``size``, the foreground shrunk to
        fit it, the paste drawn later per batch from the item's ``uniforms``. Fused mode (crop or
        flip): the paste is drawn here on the full-resolution background, the crop box and flip
        too; the background crop is resized once to ``size`` (and flipped), the foreground is
        mirrored, and ``params`` holds the output geometry. ``fg_at_paste_size`` (what the loader
        asks for when a GPU pastes): the foreground is also shrunk to its pasted size here, so the
        batch copied to the device and the matrix kernel's work are small; on a CPU the window
        kernel resamples it in one step instead (5 % less work per image, measured).
        """
        index = self._check_index(index)
        failures = self.decode_failures
        g = self._item_generator(index)
        fg, part = self._load_fg(index, g)
        if self.fg_transform is not None:
            fg = apply_fg_transform(
                self.fg_transform,
                fg,
                seed=None if self.seed is None else derive_seed(self.seed, self.epoch, index, 0xF6),
                name=self.reader.fg_name(part),
            )
        bg, bg_ratio = self._load_bg(part, g)
        p = self.config.orig_prob(self.epoch)
        use_orig = bool(p > 0 and float(torch.rand((), generator=g)) < p)
        orig = None
        if use_orig:
            path = self._source_path(part)
            if path is None or not path.exists():
                log.warning("source image of %s not found; recombining instead", part.key)
                use_orig = False
            else:
                from forcomp.decode import load_rgb

                orig = torch.from_numpy(load_rgb(path).copy()).permute(2, 0, 1)
        uniforms = torch.rand(n_uniforms(self.config), generator=g)
        fg_ratio = self.reader.ratios[part.key]
        out: dict[str, Any] = {
            "fg_ratio": fg_ratio,
            "bg_ratio": bg_ratio,
            "label": self.class_to_idx[part.cls],
            "use_orig": use_orig,
            "uniforms": uniforms,
        }
        if self.size is None:  # the per-sample path composites at the background's resolution
            out |= {"fg": fg, "bg": bg, "orig": orig}
        elif not self.fused:
            out |= {
                "fg": fg,
                "bg": resize_cover(bg, self.size),
                "orig": None if orig is None else resize_cover(orig, self.size),
            }
        else:
            out |= self._fused_parts(fg, bg, orig, fg_ratio, bg_ratio, uniforms, fg_at_paste_size)
        out["decode_failures"] = self.decode_failures - failures
        return out

    def _fused_parts(
        self,
        fg: torch.Tensor,
        bg: torch.Tensor,
        orig: torch.Tensor | None,
        fg_ratio: float,
        bg_ratio: float,
        uniforms: torch.Tensor,
        fg_at_paste_size: bool,
    ) -> dict[str, Any]:
        """ForNet's paste on the full background composed with the crop and flip (one sample)."""
        size = self.size
        if size is None:  # guarded by the caller
            raise RuntimeError("internal error: fused parts need a size")
        hb, wb = int(bg.shape[1]), int(bg.shape[2])
        fh, fw = int(fg.shape[1]), int(fg.shape[2])
        bg_hw = torch.tensor([[hb, wb]])
        fill = fg[3].float().mean().reshape(1) / 255.0
        paste = sample_params(
            torch.tensor([fg_ratio]),
            torch.tensor([bg_ratio]),
            torch.tensor([[fh, fw]]),
            fill,
            bg_hw,
            self.config,
            uniforms=uniforms[None, : n_paste_uniforms(self.config)],
        )
        crop = sample_crop(bg_hw, self.config, uniforms[None, n_paste_uniforms(self.config) :], size)
        params = compose_crop(paste, crop, size)
        x, y, w, h = (int(v) for v in torch.stack(crop[:4]).flatten().tolist())
        flip = bool(crop.flip[0])
        out_bg = _resize_u8(bg[:, y : y + h, x : x + w], size)
        if orig is not None:
            if tuple(orig.shape[1:]) == (hb, wb):
                orig = _resize_u8(orig[:, y : y + h, x : x + w], size)
            else:  # a source image of another size than its background: whole image
                orig = resize_cover(orig, size)
        # The foreground is resampled once: to its pasted size here when asked and smaller (the
        # kernel then copies it 1:1), else by the kernel. Sizes rounded as the kernel does.
        ph, pw = int(params.h.clamp_min(1).round()), int(params.w.clamp_min(1).round())
        if fg_at_paste_size and ph < fh and pw < fw:
            fg = _shrink_premultiplied(fg, (ph, pw))
        if flip:
            out_bg, fg = out_bg.flip(-1), fg.flip(-1)
            orig = None if orig is None else orig.flip(-1)
        return {
            "fg": fg,
            "bg": out_bg,
            "orig": orig,
            "params": params,
            "crop": torch.cat([torch.stack(crop[:4], 1), crop.flip[:, None].float()], 1)[0],
        }

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
            parts = collate_parts([sample])
            images, masks = self._recombine(parts)  # the item's own draws: ds[i] equals item i of a batch
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
        hb, wb = int(bg.shape[1]), int(bg.shape[2])
        if sample["use_orig"] and sample["orig"] is not None:
            img = sample["orig"]
            mask = torch.zeros(img.shape[1:], dtype=torch.float32)
        else:
            fh, fw = int(fg.shape[1]), int(fg.shape[2])
            params = sample_params(
                torch.tensor([sample["fg_ratio"]], dtype=torch.float32),
                torch.tensor([sample["bg_ratio"]], dtype=torch.float32),
                torch.tensor([[fh, fw]]),
                fg[3].float().mean().reshape(1) / 255.0,
                torch.tensor([[hb, wb]]),
                self.config,
                uniforms=sample["uniforms"][None],
            )
            imgs, masks = composite(
                fg[None], torch.tensor([[fh, fw]]), bg[None], params,
                smoothing_radius=self._recombine.smoothing_radius,
                method="window",
                fg_filter="bicubic",  # as ForNet's PIL resize
            )  # fmt: skip
            img, mask = imgs[0], masks[0]
        pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), "RGB")
        return pil, tv_tensors.Mask(mask)

    # ---- the fast path ----
    def loader(
        self,
        batch_size: int,
        *,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        shuffle: bool | None = None,
        sampler: Iterable[int] | None = None,
        drop_last: bool = False,
        augment: Callable[..., Any] | None = None,
        batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int | None = None,
    ) -> ForCompLoader:
        """The fast batched loader: ``(images, labels)`` (+ ``masks`` with ``return_masks``).

        Args:
            batch_size: samples per batch.
            num_workers: DataLoader workers. On a CPU ``device`` they also paste (per batch); on
                CUDA they read, decode and crop, and the device pastes.
            device: where batches come out (default CPU).
            shuffle: default True for the train split, unless ``sampler`` is given.
            sampler: any sampler or sequence of indices (``DistributedSampler`` for DDP).
            drop_last: as DataLoader's.
            augment: per-sample augmentation after the paste that moves masks with images:
                kornia ``AugmentationSequential(..., data_keys=["input", "mask"])`` gets the batch;
                a torchvision v2 transform is applied sample by sample (given a batch it would draw
                one crop/flip for all of it). Images are float [0, 1] here.
            batch_transform: deterministic batch step on the float images, e.g. ``Normalize``.
            mix: batch-level mixing ``(images, labels) -> (images, targets)``: timm ``Mixup``,
                torchvision v2 ``MixUp``/``CutMix`` (masks are those of the unmixed images).
            pin_memory: default: on for CUDA.
            prefetch_factor: batches each worker prepares ahead (DataLoader's).

        Returns:
            a :class:`~forcomp.recombine.loader.ForCompLoader` (``len``, re-iterable, ``sampler``,
            ``dataset``, ``batch_size``, ``set_epoch``).
        """
        from forcomp.recombine.loader import ForCompLoader

        return ForCompLoader(
            self,
            batch_size,
            num_workers=num_workers,
            device=device,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=drop_last,
            augment=augment,
            batch_transform=batch_transform,
            mix=mix,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
        )
