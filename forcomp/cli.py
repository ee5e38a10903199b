"""The ``forcomp`` command: build, info, verify, preview, demo, backends, evaluate, compare.

Parsing only: each subcommand calls one library function. Exit codes: 0 success; 1 finished but
some inputs failed or the build stopped early, rerun to finish (build), or problems were found
(verify); 2 could not run at all (bad arguments, unreadable source, missing weights, unusable
cache, unavailable device).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from forcomp.version import __version__

EXIT_OK, EXIT_PARTIAL, EXIT_UNUSABLE = 0, 1, 2


_FROM_REGISTRY = "(listed from the backend registry)"

DESCRIPTION = (
    "Recombine foregrounds and backgrounds to train and audit image classifiers (ForAug/ForNet). "
    "Typical flow: 'forcomp build' segments every image of an ImageFolder and inpaints its background "
    "into a cache; 'forcomp verify' and 'forcomp preview' check it; training reads it with "
    "forcomp.ForComp; 'forcomp evaluate' measures a classifier's background, foreground, center and "
    "size biases on it."
)
EPILOG = (
    "Exit codes: 0 success; 1 finished, but some inputs failed or the build stopped early (build; rerun "
    "to finish), problems were found (verify) or items were refused (pack); "
    "2 could not run at all (bad arguments, unreadable source, missing weights, unusable cache, "
    "unavailable device). 'forcomp COMMAND --help' describes each command."
)


class _BackendHelpFormatter(argparse.HelpFormatter):
    """Fills the backend options' help from the registries, only when help is printed.

    Listing backends imports their modules (OpenCV, torch); ``forcomp --version`` and every other
    command must not pay for that.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help != _FROM_REGISTRY:
            return action.help
        if action.dest == "scorer":
            from forcomp.offline.scoring import SCORER_HELP

            return SCORER_HELP
        from forcomp.offline.inpainters import INPAINTERS
        from forcomp.offline.segmenters import SEGMENTERS

        reg = SEGMENTERS if action.dest == "segmenter" else INPAINTERS
        return reg.help(str(action.default)).replace("%", "%%")


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="segment + inpaint an ImageFolder into a cache (resumable)",
        formatter_class=_BackendHelpFormatter,
    )
    p.add_argument("source", type=Path, help="ImageFolder root: SOURCE/<class>/<image>")
    p.add_argument("cache", type=Path, help="cache root (created if missing)")
    p.add_argument(
        "--split",
        choices=["train", "val"],
        default="train",
        help="the cache split to write; build each split from its own images, e.g. SOURCE=imagenet/train "
        "with --split train and SOURCE=imagenet/val with --split val (default: %(default)s)",
    )
    p.add_argument("--segmenter", default="auto", help=_FROM_REGISTRY)
    p.add_argument("--inpainter", default="auto", help=_FROM_REGISTRY)
    p.add_argument("--scorer", default=None, help=_FROM_REGISTRY)
    p.add_argument(
        "--weights", default=None, help="weights directory (default: $FORCOMP_WEIGHTS, else ./weights)"
    )
    p.add_argument(
        "--device", default=None, help="cpu | cuda | cuda:N (default: CUDA if available for models)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per segmentation/inpainting batch; lower it if a model runs out of memory "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="CPU worker processes (local engine; default: %(default)s)"
    )
    p.add_argument(
        "--shard",
        default="0/1",
        help="process slice I of N (0-based), e.g. 3/8 for one task of a job array (default: %(default)s, "
        "everything)",
    )
    p.add_argument("--no-resume", action="store_true", help="redo items already in the cache")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=89_478_485,
        help="refuse larger source images (decompression-bomb guard; default: %(default)s)",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: worker processes on this machine; ray: a Ray cluster (forcomp[ray]) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster address (engine ray; default: start a local Ray)"
    )
    p.add_argument(
        "--num-gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per Ray actor (engine ray; default: %(default)s)",
    )
    p.add_argument("--concurrency", type=int, default=2, help="Ray actors (engine ray; default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build)


def _cmd_build(args: argparse.Namespace) -> int:
    from forcomp.offline.backends import resolve_backends
    from forcomp.offline.config import BuildConfig, parse_shard
    from forcomp.offline.entry import build_cache, check_device

    config = BuildConfig(
        split=args.split,
        segmenter=args.segmenter,
        inpainter=args.inpainter,
        scorer=args.scorer,
        weights_dir=args.weights,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        shard=parse_shard(args.shard),
        resume=not args.no_resume,
        max_image_pixels=args.max_image_pixels,
        engine=args.engine,
        ray_address=args.address,
        ray_num_gpus_per_worker=args.num_gpus_per_worker,
        ray_concurrency=args.concurrency,
    )
    check_device(config)
    wdir = config.weights_path()
    chosen = resolve_backends(config)
    seg, inp = chosen["segmenter"], chosen["inpainter"]
    print(
        f"forcomp build: segmenter={seg}{' (auto)' if config.segmenter == 'auto' else ''} "
        f"inpainter={inp}{' (auto)' if config.inpainter == 'auto' else ''} weights={wdir}",
        file=sys.stderr,
    )
    summary = build_cache(args.source, args.cache, config, progress=not args.quiet, backends=chosen)
    print(summary.format())
    return summary.exit_code


def _add_preview(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="PNG grid: source / foreground / background / recombinations")
    p.add_argument("cache", type=Path, help="cache root (forcomp cache or ForNet release)")
    p.add_argument(
        "--out", type=Path, default=Path("preview.png"), help="PNG file to write (default: %(default)s)"
    )
    p.add_argument(
        "--split",
        choices=["train", "val"],
        default=None,
        help="split to show (default: val if the cache has it, else train)",
    )
    p.add_argument(
        "--rows", type=int, default=5, help="foregrounds shown, one per row (default: %(default)s)"
    )
    p.add_argument(
        "--recombinations",
        type=int,
        default=4,
        help="recombined images per row, drawn as ForComp draws them (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="which rows and recombinations are drawn (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_preview)


def _cmd_preview(args: argparse.Namespace) -> int:
    from forcomp.cache.layout import CacheLayout
    from forcomp.preview import render_preview

    split = args.split
    if split is None:  # the split that exists: a fresh `forcomp build` writes train by default
        layouts = [CacheLayout(args.cache, s) for s in ("val", "train")]
        have = [lay.split for lay in layouts if lay.fg_dir.is_dir() or lay.fg_zip.is_file()]
        split = have[0] if have else "val"
    path = render_preview(
        args.cache,
        args.out,
        split=split,
        rows=args.rows,
        recombinations=args.recombinations,
        seed=args.seed,
    )
    print(f"wrote {path}")
    return EXIT_OK


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a cache from scikit-image's sample photos and write a preview")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("demo_out"),
        help="output folder: source/, cache/ and preview.png (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from forcomp.demo import run_demo

    res = run_demo(args.out, progress=not args.quiet)
    print(res.summary.format())
    print(f"cache:   {res.cache}\npreview: {res.preview}")
    return EXIT_OK


def _add_backends(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backends",
        help="list segmenters/inpainters and whether their weights are usable; --check runs them",
    )
    p.add_argument(
        "--weights", default=None, help="weights directory (default: $FORCOMP_WEIGHTS, else ./weights)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="load every usable backend, run it on sample photos and on generated scenes with known "
        "truth; write a preview grid and report timings, mask IoU and hole PSNR",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu | cuda | cuda:N for the model backends (--check; default: CUDA if available)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("backends_check"),
        help="output folder (--check; default: %(default)s)",
    )
    p.add_argument(
        "--photos",
        type=int,
        default=3,
        help="sample photos in the preview (--check, 1-4; default: %(default)s)",
    )
    p.add_argument(
        "--scenes", type=int, default=12, help="generated known-truth scenes (--check; default: %(default)s)"
    )
    p.set_defaults(func=_cmd_backends)


def _cmd_backends(args: argparse.Namespace) -> int:
    from forcomp.offline.inpainters import INPAINTERS
    from forcomp.offline.segmenters import SEGMENTERS
    from forcomp.weights import resolve_weights_dir

    wdir = resolve_weights_dir(args.weights)
    if args.check:
        from forcomp.offline.check import check_backends

        report = check_backends(wdir, args.out, device=args.device, photos=args.photos, scenes=args.scenes)
        print(report.format())
        return EXIT_PARTIAL if report.failed else EXIT_OK
    print(f"weights directory: {wdir}")
    for reg in (SEGMENTERS, INPAINTERS):
        auto = reg.resolve("auto", wdir).name
        print(f"{reg.stage}s (auto -> {auto}):")
        for name, spec in sorted(reg.specs().items()):
            ready = spec.available_weights(wdir) is not None
            state = "ready     " if ready else ("not usable" if spec.weights_problems(wdir) else "no weights")
            print(f"  {name:14s} {state}  {spec.description}")
            if not ready:
                for problem in spec.weights_problems(wdir):
                    print(f"      {problem}")
    return EXIT_OK


def _add_cache_commands(sub: argparse._SubParsersAction) -> None:
    from forcomp.cache.cli import add_commands

    add_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forcomp", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"forcomp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders: list[Callable[[argparse._SubParsersAction], None]] = [
        _add_build,
        _add_cache_commands,
        _add_preview,
        _add_demo,
        _add_backends,
    ]
    try:
        from forcomp.metrics.cli import add_commands as _add_metrics
    except ImportError:  # metrics not installed in this build
        pass
    else:
        adders.append(_add_metrics)
    for add in adders:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help/--version exit 0, bad arguments exit 2
        return int(e.code or 0)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    from forcomp.errors import ForcompError

    try:
        return int(args.func(args))
    except (ForcompError, ValueError, ImportError, FileNotFoundError, PermissionError) as e:
        print(f"forcomp {args.command}: error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `forcomp info CACHE | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second BrokenPipeError when Python flushes at exit
        return EXIT_OK
