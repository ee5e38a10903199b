"""``forcomp verify``: every file decodes, size and alpha invariants hold, index and files agree.

:func:`format_report` is the report ``forcomp verify`` prints: the problems, their count, and a hint
on how to repair them (delete the damaged files, rerun ``forcomp build``).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from forcomp.cache.atomic import TMP_DIRNAME
from forcomp.cache.index import read_index
from forcomp.cache.layout import BG_EXT, FG_EXT, SPLITS, CacheLayout
from forcomp.errors import UnsafePathError


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _decode(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode != mode:
            raise ValueError(f"mode is {im.mode}, expected {mode}")
        return np.asarray(im)


def splits_present(cache: Path) -> list[str]:
    return [s for s in SPLITS if (cache / s).is_dir() or (cache / f"fg_bg_ratios_{s}.json").exists()]


def _files(d: Path, ext: str) -> set[str]:
    if not d.is_dir():
        return set()
    return {
        f"{c.name}/{f.name[: -len(ext)]}"
        for c in d.iterdir()
        if c.is_dir()
        for f in c.iterdir()
        if f.name.endswith(ext)
    }


def verify_split(layout: CacheLayout, *, ratio_tol: float = 1e-6) -> list[Problem]:
    """All problems of one split (empty list = the split is sound)."""
    problems: list[Problem] = []
    index = read_index(layout)
    fg_on_disk = _files(layout.fg_dir, FG_EXT)
    bg_on_disk = _files(layout.bg_dir, BG_EXT)
    ok = {k: r for k, r in index.items() if r.status == "ok"}
    try:
        ratios = json.loads(layout.ratios_path.read_text(encoding="utf-8"))
        if not isinstance(ratios, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        ratios = None
        problems.append(Problem(str(layout.ratios_path), "missing (rerun forcomp build to finish the split)"))
    except ValueError as e:
        ratios = None
        problems.append(Problem(str(layout.ratios_path), f"unreadable JSON ({e})"))

    for key, r in list(ok.items()):
        try:
            CacheLayout.ratio_key(r.cls, r.stem)
        except UnsafePathError as e:
            problems.append(Problem(key, f"index record rejected: {e}"))
            del ok[key]
    ids_expected = {f"{r.cls}/{r.stem}" for r in ok.values()} if index else fg_on_disk
    for ident in sorted(fg_on_disk - ids_expected):
        problems.append(
            Problem(str(layout.fg_dir / (ident + FG_EXT)), "foreground file has no 'ok' index record")
        )
    for ident in sorted(bg_on_disk - ids_expected - (fg_on_disk if not index else set())):
        problems.append(
            Problem(str(layout.bg_dir / (ident + BG_EXT)), "background file has no 'ok' index record")
        )

    for ident in sorted(ids_expected):
        cls, stem = ident.split("/", 1)
        key = CacheLayout.ratio_key(cls, stem)
        rec = ok.get(key)
        fg_p, bg_p = layout.fg_path(cls, stem), layout.bg_path(cls, stem)
        try:
            fg = _decode(fg_p, "RGBA")
        except FileNotFoundError:
            problems.append(Problem(str(fg_p), "missing foreground file"))
            fg = None
        except Exception as e:  # noqa: BLE001 - every decode failure is a finding
            problems.append(Problem(str(fg_p), f"does not decode as RGBA ({e})"))
            fg = None
        try:
            bg = _decode(bg_p, "RGB")
        except FileNotFoundError:
            problems.append(Problem(str(bg_p), "missing background file"))
            bg = None
        except Exception as e:  # noqa: BLE001
            problems.append(Problem(str(bg_p), f"does not decode as RGB ({e})"))
            bg = None
        if fg is not None:
            alpha = fg[..., 3] > 0
            if not alpha.any():
                problems.append(Problem(str(fg_p), "alpha is empty"))
            elif not (alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()):
                problems.append(
                    Problem(
                        str(fg_p), "not cropped tightly to the mask (an alpha border row/column is empty)"
                    )
                )
        if rec is not None:
            if bg is not None and rec.source_size and (bg.shape[1], bg.shape[0]) != tuple(rec.source_size):
                problems.append(
                    Problem(str(bg_p), f"size {bg.shape[1]}x{bg.shape[0]} != source size {rec.source_size}")
                )
            if fg is not None and rec.bbox:
                x0, y0, x1, y1 = rec.bbox
                if (fg.shape[1], fg.shape[0]) != (x1 - x0, y1 - y0):
                    problems.append(
                        Problem(str(fg_p), f"size {fg.shape[1]}x{fg.shape[0]} != mask bbox {rec.bbox}")
                    )
            if fg is not None and rec.source_size and rec.ratio is not None:
                w, h = rec.source_size
                share = float((fg[..., 3] > 0).sum()) / (w * h)
                if abs(share - rec.ratio) > max(ratio_tol, 1.0 / (w * h)):
                    problems.append(
                        Problem(
                            str(fg_p), f"alpha covers {share:.6f} of the image, index says {rec.ratio:.6f}"
                        )
                    )
            if rec.ratio is None or not 0.0 < rec.ratio < 1.0:
                problems.append(Problem(key, f"ratio {rec.ratio} not in (0, 1)"))
        if ratios is not None:
            if key not in ratios:
                problems.append(Problem(str(layout.ratios_path), f"no ratio for {key}"))
            elif rec is not None and rec.ratio is not None and abs(float(ratios[key]) - rec.ratio) > 1e-9:
                problems.append(
                    Problem(str(layout.ratios_path), f"{key}: ratio {ratios[key]} != index {rec.ratio}")
                )
    if ratios is not None:
        for key in sorted(set(ratios) - {CacheLayout.ratio_key(*i.split("/", 1)) for i in ids_expected}):
            problems.append(Problem(str(layout.ratios_path), f"{key} has a ratio but no item"))
    return problems


def verify_cache(cache: str | os.PathLike[str], splits: Iterable[str] | None = None) -> list[Problem]:
    """Check every split of a cache; returns the problems found (empty = sound)."""
    cache = Path(cache)
    if not cache.is_dir():
        return [Problem(str(cache), "cache directory does not exist")]
    present = list(splits) if splits is not None else splits_present(cache)
    if not present:
        return [
            Problem(str(cache), "no split found (expected train/ or val/ with foregrounds/ and backgrounds/)")
        ]
    problems: list[Problem] = []
    for split in present:
        problems += verify_split(CacheLayout(cache, split))
    tmp = cache / TMP_DIRNAME
    if tmp.is_dir():
        for p in sorted(tmp.iterdir()):
            problems.append(
                Problem(str(p), "temporary file left by an interrupted build (rerun forcomp build)")
            )
    return problems


def _recorded_source(layout: CacheLayout) -> str | None:
    """The source of the split's latest build, from its provenance files (None if unknown)."""
    latest: tuple[float, str] | None = None
    if layout.index_dir.is_dir():
        for p in layout.index_dir.glob("build-*.json"):
            try:
                prov = json.loads(p.read_text(encoding="utf-8"))
                when, src = float(prov.get("finished") or prov.get("started") or 0.0), prov.get("source")
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            if isinstance(src, str) and (latest is None or when >= latest[0]):
                latest = (when, src)
    return latest[1] if latest else None


def fix_hint(problems: Sequence[Problem], cache: str | os.PathLike[str]) -> str | None:
    """How to repair what :func:`verify_cache` found: the line(s) to print after the problems."""
    if not problems:
        return None
    cache = Path(cache)
    if not cache.is_dir():
        return None
    splits = [
        s
        for s in splits_present(cache)
        if any(
            p.path.startswith(str(cache / s) + os.sep) or p.path == str(CacheLayout(cache, s).ratios_path)
            for p in problems
        )
    ] or splits_present(cache)
    if not splits:
        return None
    cmds = []
    for split in splits:
        src = _recorded_source(CacheLayout(cache, split))
        src_arg = shlex.quote(src) if src and Path(src).is_absolute() else "SOURCE"
        cmds.append(f"  forcomp build {src_arg} {shlex.quote(str(cache))} --split {split}")
    return "\n".join(
        [
            "to fix: delete the damaged files listed above (those that do not decode, have the wrong size, "
            "or have no 'ok' index record), then rerun the build, which redoes every item whose "
            "foreground or background file is missing and rewrites the ratios file:",
            *cmds,
        ]
    )


def format_report(problems: Sequence[Problem], cache: str | os.PathLike[str]) -> str:
    """What ``forcomp verify`` prints: one line per problem, the count, and how to fix them."""
    if not problems:
        return "cache OK"
    lines = [str(p) for p in problems] + [f"{len(problems)} problem(s) found"]
    hint = fix_hint(problems, cache)
    return "\n".join(lines + ([hint] if hint else []))
