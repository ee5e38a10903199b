"""Awkward but valid images decode as a viewer shows them; bad files fail naming file and reason."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forcomp.decode import is_image_file, load_rgb
from forcomp.errors import ImageDecodeError


def _rgb(w=40, h=30):
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)  # red top-left marker
    img[h // 2 :, w // 2 :] = (0, 0, 255)
    return img


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.fromarray(_rgb())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (40, 30, 3)  # width and height swapped as a viewer shows it
    # the red quadrant moved from top-left to top-right
    assert out[2, -3, 0] > 200 and out[2, 2, 0] < 60


def test_cmyk_grayscale_16bit_palette(tmp_path):
    base = Image.fromarray(_rgb())
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    base.convert("L").save(tmp_path / "gray.png")
    arr16 = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=4)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    base.save(tmp_path / "x.tif")
    base.save(tmp_path / "x.webp", lossless=True)
    base.save(tmp_path / "x.bmp")
    for name in ["cmyk.jpg", "gray.png", "g16.png", "pal.png", "x.tif", "x.webp", "x.bmp"]:
        out = load_rgb(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (30, 40, 3), name
    cmyk = load_rgb(tmp_path / "cmyk.jpg")
    assert cmyk[2, 2, 0] > 180 and cmyk[2, 2, 2] < 80  # still red
    g16 = load_rgb(tmp_path / "g16.png")
    assert g16[-1, -1, 0] == 255 and g16[0, 0, 0] == 0  # full 16-bit range mapped, not clipped


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "0 bytes"),
        (b"hello, I am text", "not a recognised image"),
    ],
)
def test_bad_bytes(tmp_path, content, match):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=match) as e:
        load_rgb(p)
    assert str(p) in str(e.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.getvalue()[:2000])
    with pytest.raises(ImageDecodeError, match="trunc.jpg"):
        load_rgb(p)


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(t: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_from_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_rgb(p)
    # the limit is the user's to raise
    small = tmp_path / "ok.png"
    Image.fromarray(_rgb(100, 100)).save(small)
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 5000"):
        load_rgb(small, max_pixels=5000)
    assert load_rgb(small, max_pixels=10_000).shape == (100, 100, 3)


def test_tiny_and_elongated_rejected_with_reason(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    Image.new("RGB", (3000, 2)).save(tmp_path / "long.png")
    with pytest.raises(ImageDecodeError, match="too small"):
        load_rgb(tmp_path / "one.png")
    with pytest.raises(ImageDecodeError, match="too small|too elongated"):
        load_rgb(tmp_path / "long.png")
    Image.new("RGB", (1000, 10)).save(tmp_path / "thin.png")
    with pytest.raises(ImageDecodeError, match="too elongated"):
        load_rgb(tmp_path / "thin.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_permissions(tmp_path):
    p = tmp_path / "secret.png"
    Image.fromarray(_rgb()).save(p)
    p.chmod(0)
    with pytest.raises(ImageDecodeError, match="secret.png"):
        load_rgb(p)


def test_permission_error_names_file(tmp_path, monkeypatch):
    """Root can read anything, so simulate the OS refusing the open (as for an unreadable file)."""
    p = tmp_path / "secret.png"
    Image.fromarray(_rgb()).save(p)
    real_open = os.open

    def deny(file, *a, **kw):
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **kw)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ImageDecodeError, match=r"secret.png: permission denied"):
        load_rgb(p)


def test_special_files_are_refused_without_blocking(tmp_path):
    """A FIFO in a source folder would block an open() forever; a device never ends."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match=r"pipe.jpg: not a regular file: a FIFO"):
        load_rgb(fifo)
    with pytest.raises(ImageDecodeError, match=r"not a regular file: a character device"):
        load_rgb(Path("/dev/zero"))


def test_is_image_file():
    assert is_image_file(Path("a.JPG")) and is_image_file(Path("b.TiFf")) and is_image_file(Path("c.webp"))
    assert (
        not is_image_file(Path(".a.jpg"))
        and not is_image_file(Path("a.txt"))
        and not is_image_file(Path("a"))
    )


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_transparent_pixels_are_composited_on_white(tmp_path, mode):
    """A transparent region reads as white, whatever colour the file stores under it (black here),
    and opaque pixels keep their colour; half-transparent ones are blended with white."""
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, 20:] = (200, 30, 30)  # opaque red half
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    alpha[:5, 20:] = 128  # a half-transparent strip over the red
    if mode == "P":
        pal = Image.fromarray(rgb).quantize(colors=2)
        black = int(np.asarray(pal)[0, 0])
        pal.save(tmp_path / "x.png", transparency=black)
    elif mode == "RGBA":
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "x.png")
    else:
        Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(tmp_path / "x.png")
    out = load_rgb(tmp_path / "x.png").astype(int)
    assert (out[:, :20] == 255).all()  # transparent black -> white
    if mode == "P":
        assert (np.abs(out[:, 20:] - [200, 30, 30]) <= 30).all()
    elif mode == "RGBA":
        assert (np.abs(out[5:, 20:] - [200, 30, 30]) <= 1).all()
        assert (np.abs(out[:5, 20:] - [227, 142, 142]) <= 2).all()  # 0.5 red + 0.5 white
    else:
        assert (np.abs(out[5:, 20:] - 200) <= 1).all() and (np.abs(out[:5, 20:] - 227) <= 2).all()
