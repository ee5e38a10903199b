"""``forcomp verify``: every file decodes, size and alpha invariants hold, index and files agree.

:func:`format_report` is the report ``forcomp verify`` prints: the problems, their count, and a hint
on how to repair them (delete the damaged files, rerun ``forcomp build``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from forcomp.cache.atomic import TMP_DIRNAME
from forcomp.cache.images import has_alpha_channel
from forcomp.cache.index import merge_records, recorded_sources, scan_index
from forcomp.cache.layout import BG_EXT, SPLITS, CacheLayout
from forcomp.cache.packing import check_packed
from forcomp.cache.problems import Problem
from forcomp.cache.reader import BadItemError, CacheReader
from forcomp.errors import CacheFormatError


def splits_present(cache: Path) -> list[str]:
    return [s for s in SPLITS if (cache / s).is_dir() or (cache / f"fg_bg_ratios_{s}.json").exists()]


def _alpha_problems(name: str, fg: torch.Tensor) -> list[Problem]:
    alpha = fg[3] > 0
    if not bool(alpha.any()):
        return [Problem(name, "alpha is empty")]
    if not (alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()):
        return [Problem(name, "not cropped tightly to the mask (an alpha border row/column is empty)")]
    return []


def verify_split(layout: CacheLayout, *, ratio_tol: float = 1e-6) -> list[Problem]:
    """All problems of one split (empty list = the split is sound), for a forcomp cache or a ForNet
    release in folders or zips: everything the loader would leave out, substitute or refuse, and
    every disagreement between the files, the ratios and forcomp's index."""
    try:
        reader = CacheReader(layout.root, layout.split, packed=False)
    except CacheFormatError as e:
        return [Problem(str(layout.split_dir), str(e))]
    problems: list[Problem] = list(reader.problems)
    records, index_problems = scan_index(layout)
    problems += index_problems
    index = merge_records(records)
    classes = set(reader.classes)
    for key, r in sorted(index.items()):
        if r.cls not in classes:
            problems.append(
                Problem(
                    key,
                    f"index record of class {r.cls!r}, which has no folder in the cache "
                    "(ignored: classes come from the files)",
                )  # fmt: skip
            )
    ok = {k: r for k, r in index.items() if r.status == "ok" and r.cls in classes}
    fg_keys = {reader.fg_key(i): i for i in range(len(reader.fg))}
    bg_keys = {reader.bg_key(i): i for i in range(len(reader.bg))}
    listed_problem = {p.path for p in reader.problems}
    if index:
        for key in sorted((fg_keys.keys() | set(reader.left_out_fg)) - ok.keys()):
            cls, stem = key.split("/", 1)
            problems.append(
                Problem(
                    str(layout.fg_path(cls, stem[: -len(BG_EXT)])), "foreground file has no 'ok' index record"
                )
            )
        for key in sorted(bg_keys.keys() - ok.keys()):
            problems.append(Problem(reader.bg_name(bg_keys[key]), "background file has no 'ok' index record"))
        for key, r in sorted(ok.items()):
            fg_p, bg_p = layout.fg_path(r.cls, r.stem), layout.bg_path(r.cls, r.stem)
            if key not in fg_keys and str(fg_p) not in listed_problem and not _ratio_problem(problems, key):
                problems.append(Problem(str(fg_p), "missing foreground file"))
            if key not in bg_keys and str(bg_p) not in listed_problem:
                problems.append(Problem(str(bg_p), "missing background file"))
    bg_size: dict[str, tuple[int, int]] = {}
    for key, i in bg_keys.items():
        try:
            bg = reader.decode_bg(i)
        except BadItemError as e:
            problems.append(Problem(e.path, e.reason))
            continue
        bg_size[key] = (int(bg.shape[2]), int(bg.shape[1]))
        rec = ok.get(key)
        if rec is not None and rec.source_size and bg_size[key] != tuple(rec.source_size):
            w, h = bg_size[key]
            problems.append(Problem(reader.bg_name(i), f"size {w}x{h} != source size {rec.source_size}"))
    for key, i in fg_keys.items():
        name = reader.fg_name(i)
        try:
            fg = reader.decode_fg(i)
        except BadItemError as e:
            problems.append(Problem(e.path, e.reason))
            continue
        problems += _alpha_problems(name, fg)
        rec = ok.get(key)
        share_of = bg_size.get(key) or (tuple(rec.source_size) if rec and rec.source_size else None)
        if share_of is not None:
            w, h = share_of
            share = float((fg[3] > 0).sum()) / (w * h)
            if abs(share - float(reader.fg_ratio[i])) > max(ratio_tol, 1.0 / (w * h)):
                opaque = "" if has_alpha_channel(reader.fg_bytes(i)) else " (the file has no alpha channel)"
                problems.append(
                    Problem(
                        name,
                        f"alpha covers {share:.6f} of the image, the ratios file says "
                        f"{float(reader.fg_ratio[i]):.6f}{opaque}",
                    )  # fmt: skip
                )
        if rec is None:
            continue
        if rec.bbox:
            x0, y0, x1, y1 = rec.bbox
            if (int(fg.shape[2]), int(fg.shape[1])) != (x1 - x0, y1 - y0):
                problems.append(Problem(name, f"size {fg.shape[2]}x{fg.shape[1]} != mask bbox {rec.bbox}"))
        if rec.ratio is None or not 0.0 < rec.ratio <= 1.0:
            problems.append(Problem(key, f"index ratio {rec.ratio} not in (0, 1]"))
        elif abs(float(reader.fg_ratio[i]) - rec.ratio) > 1e-9:
            problems.append(
                Problem(
                    str(layout.ratios_path), f"{key}: ratio {float(reader.fg_ratio[i])} != index {rec.ratio}"
                )
            )
    return problems + check_packed(reader)


def _ratio_problem(problems: list[Problem], key: str) -> bool:
    """Whether a foreground was already reported as left out for its ratio."""
    return any(key in p.message and "left out" in p.message for p in problems)


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
    zipped = [
        s
        for s in splits
        if not CacheLayout(cache, s).fg_dir.is_dir() and CacheLayout(cache, s).fg_zip.is_file()
    ]
    if zipped and len(zipped) == len(splits):
        return (
            "to fix: the problems are inside the release's zip files or its ratios file; download the "
            "damaged archive again, or extract the zips (foregrounds_<split>.zip holds "
            "<split>/foregrounds/<class>/<stem>.WEBP) and rebuild the listed items with forcomp build"
        )
    cmds = []
    for split in splits:
        srcs = recorded_sources(CacheLayout(cache, split))
        src = srcs[0] if srcs else None
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
