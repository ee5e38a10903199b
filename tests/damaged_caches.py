"""Damaged and hostile copies of a small cache, one function per kind of damage.

Each ``damage_*(cache, tmp)`` changes the val split of a copy of a built cache in place and returns
``(where, why)``: a substring of the path (or key) a report must name, and a substring of the
reason. Used by the reader/verify tests and by the training-loop tests alike.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT = "val"
CLS, STEM = "n00000001", "img0"  # the item every damage hits
KEY = f"{CLS}/{STEM}.JPEG"


def _fg(cache: Path) -> Path:
    return cache / SPLIT / "foregrounds" / CLS / f"{STEM}.WEBP"


def _bg(cache: Path) -> Path:
    return cache / SPLIT / "backgrounds" / CLS / f"{STEM}.JPEG"


def _ratios(cache: Path) -> Path:
    return cache / f"fg_bg_ratios_{SPLIT}.json"


def _set_ratio(cache: Path, value: object, key: str = KEY) -> None:
    raw = json.loads(_ratios(cache).read_text())
    raw[key] = value
    _ratios(cache).write_text(json.dumps(raw))  # NaN/inf written as JSON's NaN/Infinity literals


def jpeg_with_size(width: int, height: int) -> bytes:
    """A tiny valid JPEG whose SOF header is patched to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def webp_lossless_with_size(width: int, height: int) -> bytes:
    """A tiny lossless RGBA WEBP whose VP8L header is patched to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGBA", (16, 16), (0, 200, 0, 255)).save(buf, "WEBP", lossless=True)
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"VP8L"
    (bits,) = struct.unpack("<I", data[21:25])
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[21:25] = struct.pack("<I", bits)
    return bytes(data)


def damage_jpeg_bomb(cache: Path, tmp: Path) -> tuple[str, str]:
    _bg(cache).write_bytes(jpeg_with_size(65500, 65500))
    return f"{CLS}/{STEM}.JPEG", "65500x65500"


def damage_webp_bomb(cache: Path, tmp: Path) -> tuple[str, str]:
    _fg(cache).write_bytes(webp_lossless_with_size(16383, 16383))
    return f"{CLS}/{STEM}.WEBP", "16383x16383"


def damage_fifo(cache: Path, tmp: Path) -> tuple[str, str]:
    _fg(cache).unlink()
    os.mkfifo(_fg(cache))
    return f"{CLS}/{STEM}.WEBP", "FIFO"


def damage_dev_zero(cache: Path, tmp: Path) -> tuple[str, str]:
    _bg(cache).unlink()
    _bg(cache).symlink_to("/dev/zero")
    return f"{CLS}/{STEM}.JPEG", "outside"


def damage_class_link_out(cache: Path, tmp: Path) -> tuple[str, str]:
    d = cache / SPLIT / "foregrounds" / CLS
    outside = tmp / "elsewhere" / CLS
    outside.parent.mkdir(parents=True)
    d.rename(outside)
    d.symlink_to(outside, target_is_directory=True)
    return f"foregrounds/{CLS}", "outside the cache"


def _ratio_damage(value: object, why: str) -> Callable[[Path, Path], tuple[str, str]]:
    def damage(cache: Path, tmp: Path) -> tuple[str, str]:
        _set_ratio(cache, value)
        return KEY, why

    damage.__name__ = f"damage_ratio_{value}"
    return damage


damage_ratio_nan = _ratio_damage(math.nan, "ratio nan")
damage_ratio_inf = _ratio_damage(math.inf, "ratio inf")
damage_ratio_negative = _ratio_damage(-0.25, "ratio -0.25")
damage_ratio_zero = _ratio_damage(0.0, "ratio 0.0 for an item with a foreground")
damage_ratio_fifty = _ratio_damage(50, "ratio 50")
damage_ratio_null = _ratio_damage(None, "ratio None")
damage_ratio_string = _ratio_damage("0.3", "ratio '0.3'")


def damage_traversal_key(cache: Path, tmp: Path) -> tuple[str, str]:
    _set_ratio(cache, 0.9, key=f"/abs/evil/{KEY}")
    return f"/abs/evil/{KEY}", "expected <class>/<stem>.JPEG"


def _append_index(cache: Path, lines: list[str]) -> Path:
    path = cache / SPLIT / "index" / "zz-foreign.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _record(**fields: object) -> str:
    base: dict[str, object] = {
        "key": "a_fake/x.JPEG", "cls": "a_fake", "stem": "x", "label": 0, "source": "/nowhere/x.jpg",
        "status": "ok", "ratio": 0.5, "time": 1e12,
    }  # fmt: skip
    base.update(fields)
    return json.dumps(base)


def damage_fake_class_record(cache: Path, tmp: Path) -> tuple[str, str]:
    _append_index(cache, [_record()])
    return "a_fake/x.JPEG", "has no folder"


def damage_dotdot_class_record(cache: Path, tmp: Path) -> tuple[str, str]:
    path = _append_index(cache, [_record(cls="..", key="../x.JPEG")])
    return f"{path.name}:1", "unsafe class name"


def damage_abs_class_record(cache: Path, tmp: Path) -> tuple[str, str]:
    path = _append_index(cache, [_record(cls="/etc", key="/etc/x.JPEG")])
    return f"{path.name}:1", "unsafe class name"


def damage_int_class_record(cache: Path, tmp: Path) -> tuple[str, str]:
    path = _append_index(cache, [_record(cls=7, key="7/x.JPEG")])
    return f"{path.name}:1", "'cls' must be a string"


def damage_list_key_record(cache: Path, tmp: Path) -> tuple[str, str]:
    path = _append_index(cache, [_record(key=["a", "b"])])
    return f"{path.name}:1", "'key' must be a string"


def damage_malformed_index_line(cache: Path, tmp: Path) -> tuple[str, str]:
    path = _append_index(
        cache, ['{"key": "a/b.JPEG", "cls": ', _record(cls=CLS, key=f"{CLS}/zz.JPEG", stem="zz")]
    )
    return f"{path.name}:1", "index line refused"


def damage_corrupt_jpeg(cache: Path, tmp: Path) -> tuple[str, str]:
    data = bytearray(_bg(cache).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 200] = bytes(200)
    _bg(cache).write_bytes(bytes(data))
    return f"{CLS}/{STEM}.JPEG", "Corrupt JPEG data"


def damage_rgb_foreground(cache: Path, tmp: Path) -> tuple[str, str]:
    im = Image.open(_fg(cache)).convert("RGB")
    im.save(_fg(cache), "WEBP", lossless=True)
    return f"{CLS}/{STEM}.WEBP", "(the file has no alpha channel)"


def damage_truncated_webp(cache: Path, tmp: Path) -> tuple[str, str]:
    data = _fg(cache).read_bytes()
    _fg(cache).write_bytes(data[: len(data) // 2])
    return f"{CLS}/{STEM}.WEBP", "does not decode"


# Damages after which the item is still listed and is refused when read or decoded (substituted in
# training); special files are refused by type when opened (non-blocking), never read.
DECODE_TIME = [
    damage_jpeg_bomb, damage_webp_bomb, damage_corrupt_jpeg, damage_truncated_webp,
    damage_fifo, damage_dev_zero,
]  # fmt: skip
# Damages refused when the split is listed (the item is left out; classes and labels stay).
LOAD_TIME = [
    damage_class_link_out, damage_ratio_nan, damage_ratio_inf, damage_ratio_negative, damage_ratio_zero,
    damage_ratio_fifty, damage_ratio_null, damage_ratio_string,
]  # fmt: skip
# Damages that only verify reports: the loader never reads them as classes, items or ratios (an RGB
# foreground decodes as an opaque rectangle, as an object filling its box does: verify names it by its
# alpha share disagreeing with its ratio, the loader warns once per file).
REPORT_ONLY = [
    damage_rgb_foreground, damage_traversal_key, damage_fake_class_record, damage_dotdot_class_record,
    damage_abs_class_record, damage_int_class_record, damage_list_key_record, damage_malformed_index_line,
]  # fmt: skip
ALL = DECODE_TIME + LOAD_TIME + REPORT_ONLY


def labels_by_key(reader: object) -> dict[str, int]:
    """``{key: label}`` of a reader's foregrounds."""
    fg = reader.fg  # type: ignore[attr-defined]
    return {reader.fg_key(i): int(fg.labels[i]) for i in range(len(fg))}  # type: ignore[attr-defined]


def pixels_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())
