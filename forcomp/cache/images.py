"""Decode a cache's foregrounds and backgrounds strictly: header checked first, warnings are failures.

What the loader and ``forcomp verify`` both use, so ``verify`` reports exactly what training would
refuse. A file is refused (:class:`CacheImageError`, naming it and why) when

- its header does not parse, or declares more pixels than ``max_pixels`` (checked before decoding);
- the decoder fails *or warns*: libjpeg's "Corrupt JPEG data" on a JPEG with damaged bytes mid-stream
  still produces a (smeared) picture, so the JPEG decoder runs with warnings as errors (libjpeg-turbo
  through ``simplejpeg``, bit-identical to torchvision's decoder on the same file);

A foreground without an alpha channel is decoded (fully opaque): :func:`has_alpha_channel` tells,
and the reader warns once per such file (an RGB file, or an object that fills its box).
"""

from __future__ import annotations

import struct
import warnings

import torch

from forcomp.errors import ImageDecodeError
from forcomp.safe_files import DEFAULT_MAX_IMAGE_PIXELS


class CacheImageError(ImageDecodeError):
    """A cache image that is refused; the message names the file and the reason."""


def webp_header(data: bytes) -> tuple[int, int, bool]:
    """``(width, height, has_alpha)`` from a WEBP file's first chunk header (no decoding).

    Raises:
        ValueError: not a WEBP file, or a header too short to hold its size.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WEBP file")
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: flags byte (bit 4 = alpha), 24-bit width-1 and height-1
        flags = data[20]
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h, bool(flags & 0x10)
    if chunk == b"VP8L":  # lossless: signature 0x2f, then 14-bit width-1, 14-bit height-1, alpha hint
        if data[20] != 0x2F:
            raise ValueError("bad VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), bool((bits >> 28) & 1)
    if chunk == b"VP8 ":  # lossy without alpha: frame tag, start code, 14-bit width and height
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("bad VP8 start code")
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF, False
    raise ValueError(f"unknown WEBP chunk {chunk!r}")


def _jpeg_header(data: bytes) -> tuple[int, int, str]:
    import simplejpeg

    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    return int(w), int(h), str(colorspace)


def _check_pixels(name: str, w: int, h: int, max_pixels: int) -> None:
    if w < 1 or h < 1:
        raise CacheImageError(f"{name}: header declares an empty image ({w}x{h})")
    if w * h > max_pixels:
        raise CacheImageError(
            f"{name}: header declares {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
            "(decompression-bomb guard; not decoded)"
        )


def _torchvision_decode(data: bytes, mode: str, name: str) -> torch.Tensor:
    """``data`` decoded by torchvision as RGB or RGBA; a failure is a :class:`CacheImageError`."""
    from torchvision.io import ImageReadMode, decode_image

    read_mode = ImageReadMode.RGB_ALPHA if mode == "RGBA" else ImageReadMode.RGB
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 announces a move of its decoders to torchcodec; they remain the fastest here.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=read_mode)
    except RuntimeError as e:
        raise CacheImageError(f"{name}: does not decode ({str(e).strip().splitlines()[-1]})") from None


def decode_background(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> torch.Tensor:
    """A background's bytes as ``(3, H, W)`` uint8 RGB (a channels-last view: HWC in memory).

    Raises:
        CacheImageError: see the module docstring.
    """
    if data[:3] == b"\xff\xd8\xff":
        try:
            w, h, colorspace = _jpeg_header(data)
        except ValueError as e:
            raise CacheImageError(f"{name}: JPEG header does not parse ({e})") from None
        _check_pixels(name, w, h, max_pixels)
        if colorspace not in ("CMYK", "YCCK"):
            import simplejpeg

            try:
                arr = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
            except ValueError as e:
                raise CacheImageError(f"{name}: damaged JPEG ({str(e).strip()})") from None
            return torch.from_numpy(arr).permute(2, 0, 1)
    else:
        w, h = _other_header(data, name)
        _check_pixels(name, w, h, max_pixels)
    return _torchvision_decode(data, "RGB", name)


def decode_foreground(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> torch.Tensor:
    """A foreground's bytes as ``(4, h, w)`` uint8 RGBA (straight alpha).

    Raises:
        CacheImageError: see the module docstring.
    """
    if data[:4] == b"RIFF":
        try:
            w, h, _ = webp_header(data)
        except ValueError as e:
            raise CacheImageError(f"{name}: WEBP header does not parse ({e})") from None
    else:
        w, h = _other_header(data, name)
    _check_pixels(name, w, h, max_pixels)
    out = _torchvision_decode(data, "RGBA", name)
    if out.shape[1:] != (h, w):
        raise CacheImageError(f"{name}: decoded size {out.shape[2]}x{out.shape[1]} != header {w}x{h}")
    return out


def _other_header(data: bytes, name: str) -> tuple[int, int]:
    """Width and height of a non-JPEG, non-WEBP image from its header (Pillow, no decoding)."""
    import io

    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, after this header read
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - any header failure refuses the file
        raise CacheImageError(f"{name}: not a recognised image ({type(e).__name__}: {e})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def has_alpha_channel(data: bytes) -> bool:
    """Whether an image file declares an alpha channel (WEBP: from its header, no decoding).

    A foreground without one decodes as fully opaque: either an RGB file where an RGBA one belongs,
    or an object whose mask fills its whole box (libwebp then drops the alpha channel).
    """
    if data[:4] == b"RIFF":
        try:
            return webp_header(data)[2]
        except ValueError:
            return False
    return _pil_has_alpha(data)


def _pil_has_alpha(data: bytes) -> bool:
    import io

    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """``(width, height)`` declared by an image's header, without decoding it."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            w, h, _ = _jpeg_header(data)
        except ValueError as e:
            raise CacheImageError(f"{name}: JPEG header does not parse ({e})") from None
        return w, h
    if data[:4] == b"RIFF":
        try:
            w, h, _ = webp_header(data)
        except ValueError as e:
            raise CacheImageError(f"{name}: WEBP header does not parse ({e})") from None
        return w, h
    return _other_header(data, name)
