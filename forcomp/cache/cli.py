"""``forcomp info``, ``verify`` and ``pack`` (registered by :func:`add_commands`; parsing only)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from forcomp.errors import CacheFormatError

EXIT_OK, EXIT_PARTIAL, EXIT_UNUSABLE = 0, 1, 2


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the cache commands on ``forcomp``'s subparsers."""
    for add in (_add_info, _add_verify, _add_pack):
        add(sub)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="items per split and class, failures, what produced the cache")
    p.add_argument("cache", type=Path, help="cache root (forcomp cache or ForNet release)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from forcomp.cache.info import cache_info, format_info

    check_cache_dir(args.cache)
    info = cache_info(args.cache)
    print(json.dumps(info, indent=1, ensure_ascii=False) if args.json else format_info(info))
    if not info["splits"]:
        raise CacheFormatError(
            f"{args.cache} holds no cache split (expected {args.cache}/train/foregrounds or "
            f"{args.cache}/foregrounds_train.zip, ...): build one with forcomp build SOURCE {args.cache}"
        )
    return EXIT_OK


def check_cache_dir(cache: Path) -> None:
    """Refuse a cache path that is a file or does not exist (exit 2 through the CLI)."""
    if cache.exists() and not cache.is_dir():
        raise CacheFormatError(
            f"cache {cache} is a file, not a cache directory (pass the folder forcomp build wrote)"
        )
    if not cache.is_dir():
        raise CacheFormatError(f"cache {cache} does not exist")


def _cache_and_splits(p: argparse.ArgumentParser, verb: str) -> None:
    """The ``CACHE`` argument and a repeatable ``--split`` (default: every split the cache has)."""
    p.add_argument("cache", type=Path, help="cache root (forcomp cache or ForNet release)")
    p.add_argument(
        "--split",
        choices=["train", "val"],
        action="append",
        help=f"{verb} only this split (repeat for both; default: every split the cache has)",
    )


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every file and invariant; exit 1 listing each problem")
    _cache_and_splits(p, "check")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from forcomp.cache.verify import format_report, verify_cache

    wanted, present, missing = _splits(args)
    if missing:  # a build of another split's source would not add it: name the one to build
        report = [format_report(verify_cache(args.cache, [s]), args.cache) for s in wanted if s in present]
        print("\n".join([*report, *(missing_split_message(args.cache, s, present) for s in missing)]))
        return EXIT_PARTIAL
    problems = verify_cache(args.cache, wanted if args.split else None)
    print(format_report(problems, args.cache))
    return EXIT_PARTIAL if problems else EXIT_OK


def _splits(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """``(wanted, present, missing)`` splits of ``args.cache`` for ``--split`` (default: all present)."""
    from forcomp.cache.verify import splits_present

    check_cache_dir(args.cache)
    present = splits_present(args.cache)
    wanted = list(dict.fromkeys(args.split)) if args.split else present
    return wanted, present, [s for s in wanted if s not in present]


def missing_split_message(cache: Path, split: str, present: Sequence[str]) -> str:
    """What ``forcomp verify --split SPLIT`` says when the cache has no such split."""
    has = f"it has only {', '.join(present)}" if present else "it has no split yet"
    return (
        f"{cache}: no {split} split ({has})\n"
        f"to fix: build the {split} split from the {split} images, e.g.\n"
        f"  forcomp build SOURCE_{split.upper()} {cache} --split {split}"
    )


def _add_pack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="write the packed training form beside the cache (one data file and an array index per split)",
        description=(
            "Write CACHE/<split>/packed/: every foreground as lossless QOI (4x faster to decode than "
            "WEBP), every background as its JPEG bytes, and the split's arrays, so a training run needs "
            "no directory listing and no per-file open. The ForNet-format cache stays as it is; ForComp "
            "reads the packed form when it is as new as the cache, and forcomp verify checks it against "
            "the cache. Resumable: a rerun continues a killed one."
        ),
    )
    _cache_and_splits(p, "pack")
    p.set_defaults(func=_cmd_pack)


def _cmd_pack(args: argparse.Namespace) -> int:
    from forcomp.cache.packing import pack_split

    wanted, present, missing = _splits(args)
    if missing:
        print("\n".join(missing_split_message(args.cache, s, present) for s in missing), file=sys.stderr)
        return EXIT_UNUSABLE
    refused = 0
    for split in wanted:
        summary = pack_split(args.cache, split)
        print(summary.format())
        refused += len(summary.refused)
    return EXIT_PARTIAL if refused else EXIT_OK
