"""LaMa inpainter: the TorchScript ``big-lama.pt`` (the model ForAug uses), batched.

The model is called as ``model(image, mask)`` with ``image`` ``(B, 3, H, W)`` float in [0, 1] and
``mask`` ``(B, 1, H, W)`` float in {0, 1} (1 = fill), H and W multiples of 8, and returns
``(B, 3, H, W)`` in [0, 1]. Images of one batch are grouped by size: each group is padded
(reflection) to its largest member, so most ImageNet images (500×375 or 375×500) run in a few
forward passes per batch. The mask is padded exactly as its image (as upstream LaMa and IOPaint
pad both): a hole touching the bottom or right edge is mirrored into the padding *as hole*, so the
mirrored object is never offered to the model as known context next to the hole.

The TorchScript graph executor re-profiles and re-optimises the graph for every new input shape
(size grouping makes many); forcomp calls the model with the profiling executor and graph
optimisation off (:func:`plain_jit_execution`, as IOPaint runs big-lama), restored afterwards.

Safety: TorchScript is code, not just tensors, and ``torch.jit.load`` cannot be sandboxed the way
``torch.load(weights_only=True)`` is. It runs TorchScript operators only (no arbitrary Python and no
pickle ``__reduce__``), but treat the file like a program: forcomp loads it only from the weights
directory the user named (``--weights`` / ``$FORCOMP_WEIGHTS`` / ``./weights``), never downloads it,
and checks its call signature on a tiny probe before any work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forcomp.errors import ForcompError
from forcomp.offline.registry import BackendSpec
from forcomp.weights import find_weight

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

LAMA_FILE = "big-lama.pt"
LAMA_SOURCE = (
    "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt "
    "(TorchScript export of LaMa big-lama, https://github.com/advimman/lama; "
    "md5 e3aa4aaa15225a33ec84f9f4bc47e500)"
)

SPECS = [
    BackendSpec(
        name="lama",
        factory="forcomp.offline.inpainters.lama:build_lama_inpainter",
        weights=((LAMA_FILE,),),
        priority=20,
        extra="lama",
        description="LaMa (TorchScript big-lama.pt), the ForAug inpainter",
    ),
]


@contextlib.contextmanager
def plain_jit_execution() -> Iterator[None]:
    """TorchScript calls inside run without the profiling executor and graph optimisation.

    Both are process-wide flags of torch's JIT; they are restored on exit (also on error), so code
    outside (another TorchScript model, ``torch.jit`` users) keeps its own settings. Not thread-safe
    with respect to other threads running TorchScript at the same time (torch offers no per-call
    switch); forcomp's build runs its models from one thread per process.
    """
    import torch

    prev_profiling = torch._C._jit_set_profiling_executor(False)  # returns the previous setting
    prev_optimize = torch._C._get_graph_executor_optimize()
    torch._C._set_graph_executor_optimize(False)
    try:
        yield
    finally:
        torch._C._set_graph_executor_optimize(prev_optimize)
        torch._C._jit_set_profiling_executor(prev_profiling)


def ceil_to(x: int, mod: int) -> int:
    return -(-x // mod) * mod


def group_by_size(sizes: Sequence[tuple[int, int]], *, max_waste: float, max_batch: int) -> list[list[int]]:
    """Indices grouped so that padding each group to its largest (H, W) wastes at most ``max_waste``."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][0] >= sizes[i][1], sizes[i]))
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < max_batch:
            g = groups[-1] + [i]
            H, W = max(sizes[j][0] for j in g), max(sizes[j][1] for j in g)
            if sum(sizes[j][0] * sizes[j][1] for j in g) >= (1 - max_waste) * H * W * len(g):
                groups[-1] = g
                continue
        groups.append([i])
    return groups


class LamaInpainter:
    """Batched LaMa (see module docstring).

    Args:
        model: the loaded TorchScript module.
        device: where it runs.
        weights_id: the file name, written to the index.
        max_batch: images per forward pass.
        max_pad_waste: share of a padded batch that may be padding before a group is split.
        work_px: if set, images whose long side exceeds it are filled at that size and the fill is
            upsampled (only the hole is replaced); None fills at full resolution, as ForAug.
        pad_mod: H and W are padded to a multiple of this.
    """

    name = "lama"

    def __init__(
        self,
        model: Any,
        device: torch.device,
        *,
        weights_id: str = LAMA_FILE,
        max_batch: int = 8,
        max_pad_waste: float = 0.25,
        work_px: int | None = None,
        pad_mod: int = 8,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not 0 <= max_pad_waste < 1:
            raise ValueError(f"max_pad_waste must be in [0, 1), got {max_pad_waste}")
        if work_px is not None and work_px < 32:
            raise ValueError(f"work_px must be None or >= 32, got {work_px}")
        self.model = model
        self.device = device
        self.weights_id: str | None = weights_id
        self.max_batch = max_batch
        self.max_pad_waste = max_pad_waste
        self.work_px = work_px
        self.pad_mod = pad_mod

    def _run(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over images padded to a common size; returns filled uint8 images."""
        import torch
        import torch.nn.functional as F

        H = ceil_to(max(im.shape[0] for im in images), self.pad_mod)
        W = ceil_to(max(im.shape[1] for im in images), self.pad_mod)
        xs, ms = [], []
        for im, m in zip(images, masks, strict=True):
            h, w = im.shape[:2]
            x = (
                torch.from_numpy(np.require(im, requirements=["C", "W"]))
                .to(self.device)
                .permute(2, 0, 1)
                .float()
                / 255
            )
            mk = torch.from_numpy(np.require(m, requirements=["C", "W"])).to(self.device)[None].float()
            # Reflection needs pad < size; replicate covers tiny images. The mask is padded the same
            # way: a zero-padded mask would present the mirrored object as known context.
            mode = "reflect" if H - h < h and W - w < w else "replicate"
            xs.append(F.pad(x[None], (0, W - w, 0, H - h), mode=mode)[0])
            ms.append(F.pad(mk[None], (0, W - w, 0, H - h), mode=mode)[0])
        with torch.inference_mode(), plain_jit_execution():
            out = self.model(torch.stack(xs), torch.stack(ms))
        if not isinstance(out, torch.Tensor) or out.shape != (len(images), 3, H, W):
            raise ForcompError(
                f"LaMa returned {getattr(out, 'shape', type(out).__name__)}; "
                f"expected ({len(images)}, 3, {H}, {W})"
            )
        out = (out.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [out[k, : im.shape[0], : im.shape[1]] for k, im in enumerate(images)]

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        import cv2

        from forcomp.offline.masks import resize_hole

        if len(images) != len(masks):
            raise ValueError(f"got {len(images)} images but {len(masks)} masks")
        work_imgs, work_masks = [], []
        for im, m in zip(images, masks, strict=True):
            h, w = im.shape[:2]
            s = 1.0 if self.work_px is None else min(1.0, self.work_px / max(h, w))
            if s < 1:
                size = (max(8, round(w * s)), max(8, round(h * s)))
                work_imgs.append(cv2.resize(im, size, interpolation=cv2.INTER_AREA))
                work_masks.append(resize_hole(m, size))  # any hole pixel in a cell makes the cell a hole
            else:
                work_imgs.append(im)
                work_masks.append(m.astype(bool))
        filled: list[np.ndarray | None] = [None] * len(images)
        sizes = [im.shape[:2] for im in work_imgs]
        for group in group_by_size(sizes, max_waste=self.max_pad_waste, max_batch=self.max_batch):
            res = self._run([work_imgs[i] for i in group], [work_masks[i] for i in group])
            for i, r in zip(group, res, strict=True):
                filled[i] = r
        out: list[np.ndarray] = []
        for im, m, f in zip(images, masks, filled, strict=True):
            assert f is not None
            if f.shape[:2] != im.shape[:2]:
                f = cv2.resize(f, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_CUBIC)
            done = im.copy()
            done[m] = f[m]
            out.append(done)
        return out


PROBE_SHAPE = (2, 24, 40)  # batch 2, non-square: a model traced at fixed shapes fails here, not mid-build


def load_lama(path: Path, device: torch.device, *, probe: bool = True) -> Any:
    """``torch.jit.load`` the file onto ``device``; with ``probe``, check the call signature.

    The probe calls the model on a batch of 2 non-square images (:data:`PROBE_SHAPE`), so a file
    exported by tracing at one fixed shape (batch 1, square) fails at load time with a message
    rather than on the first odd-sized batch hours into a build.
    """
    import torch

    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # not a TorchScript archive (a pickle, a state dict, a truncated file...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ForcompError(
            f"cannot load LaMa from {path}: it is not a TorchScript file ({type(e).__name__}: {first}). "
            f"Expected the TorchScript big-lama.pt from {LAMA_SOURCE}"
        ) from e
    model.eval()
    if probe:
        b, h, w = PROBE_SHAPE
        expect = (b, 3, h, w)
        try:
            with torch.inference_mode(), plain_jit_execution():
                mask = torch.zeros(b, 1, h, w, device=device)
                mask[:, :, h // 4 : h // 2, w // 4 : w // 2] = 1
                out = model(torch.full((b, 3, h, w), 0.5, device=device), mask)
            ok = isinstance(out, torch.Tensor) and tuple(out.shape) == expect
        except Exception as e:
            raise ForcompError(
                f"{path} does not behave like LaMa: calling it as model(image {(b, 3, h, w)}, "
                f"mask {(b, 1, h, w)}) failed (a model exported with fixed input shapes cannot run "
                f"forcomp's batches): "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
            ) from e
        if not ok:
            raise ForcompError(
                f"{path} does not behave like LaMa: model(image, mask) returned "
                f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}, expected {expect}"
            )
    return model


def build_lama_inpainter(
    *,
    weights_dir: Path,
    device: str | None = None,
    checkpoint: str = LAMA_FILE,
    probe: bool = True,
    **options: Any,
) -> LamaInpainter:
    """Load ``weights/big-lama.pt`` once; ``options`` go to :class:`LamaInpainter`."""
    if Path(checkpoint).name != checkpoint:
        raise ValueError(f"checkpoint must be a file name in the weights directory, got {checkpoint!r}")
    path = find_weight(Path(weights_dir), checkpoint, what="LaMa checkpoint", source=LAMA_SOURCE)
    from forcomp.models.devices import resolve_device  # imports torch: not at backend listing

    dev = resolve_device(device)
    model = load_lama(path, dev, probe=probe)
    log.info("lama inpainter: %s on %s", path.name, dev)
    return LamaInpainter(model, dev, weights_id=path.name, **options)
