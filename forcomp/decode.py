"""Decode one source image to RGB the way a viewer shows it, refusing what should not be decoded.

Handles grayscale, CMYK, 16-bit, palette-with-transparency, WEBP, TIFF and EXIF-rotated files.
A decompression bomb is refused from its header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from forcomp.errors import ImageDecodeError
from forcomp.safe_files import (
    DEFAULT_MAX_IMAGE_PIXELS,
    UnsafeFileError,
    describe_os_error,
    max_file_bytes,
    read_regular_file,
)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
MIN_SIDE_PX = 8
MAX_ASPECT = 50.0


def is_image_file(path: Path) -> bool:
    """True for non-hidden files with a supported image extension (any case)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the full range to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = (arr - lo) / max(hi - lo, 1e-12)
        return Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).convert("RGB")
    if img.mode == "P" or img.mode in ("LA", "PA", "RGBA", "La"):
        # Transparency: composite on white so transparent regions do not turn into arbitrary colours.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: Path, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Return the image at ``path`` as ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.

    Raises:
        ImageDecodeError: naming the file and why (empty, unreadable, not an image, truncated,
            larger than ``max_pixels``, too small or too elongated to segment).
    """
    path = Path(path)
    try:
        data = read_regular_file(path, max_bytes=max_file_bytes(max_pixels))
    except UnsafeFileError as e:
        raise ImageDecodeError(str(e)) from e
    except OSError as e:
        raise ImageDecodeError(f"{path}: {describe_os_error(e)}") from e
    if not data:
        raise ImageDecodeError(f"{path}: empty file (0 bytes)")
    # Our own limit replaces Pillow's global one for this call (it may be raised or lowered by the
    # user); the size is checked from the header, before any pixel is decoded.
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(
                    f"{path}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                    "(decompression-bomb guard; raise it with --max-image-pixels if the file is trusted)"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                oriented = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb(oriented)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as e:
        raise ImageDecodeError(f"{path}: not a recognised image file") from e
    except PermissionError as e:
        raise ImageDecodeError(f"{path}: permission denied") from e
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise ImageDecodeError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    arr = np.asarray(rgb, dtype=np.uint8)
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        raise ImageDecodeError(
            f"{path}: {w}x{h} is too small to segment (need both sides >= {MIN_SIDE_PX} px)"
        )
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise ImageDecodeError(f"{path}: {w}x{h} is too elongated to segment (aspect ratio > {MAX_ASPECT:g})")
    return np.ascontiguousarray(arr)
