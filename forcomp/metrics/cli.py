"""``forcomp evaluate`` and ``forcomp compare`` (registered by :func:`add_commands`; parsing only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from forcomp.metrics.options import EvaluateOptions

EXIT_OK, EXIT_UNUSABLE = 0, 2


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` and ``compare`` subcommands on ``forcomp``'s subparsers."""
    p = sub.add_parser(
        "evaluate",
        help="measure background/foreground/center/size bias of a classifier; writes report + plots",
        description="Run the controlled recombinations of the bias metrics on a cache split and write "
        "OUT/report.json, OUT/report.md and PNG plots. Each score comes with a 95% bootstrap interval and "
        "a chance check: a score whose reference accuracy is not clearly above chance is marked not "
        "meaningful. The metric definitions: docs/metrics.md in the forcomp repository.",
    )
    p.add_argument("--cache", type=Path, required=True, help="cache root (forcomp cache or ForNet release)")
    p.add_argument(
        "--split",
        choices=["train", "val"],
        default="val",
        help="cache split to evaluate on; use images the model was not trained on (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="torchvision or timm model name (weights from WEIGHTS/<name>.pth), or path/to/file.py:factory, "
        "or package.module:factory (required)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bias_report"), help="output directory (default: %(default)s)"
    )
    p.add_argument(
        "--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available, else cpu)"
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate a seeded random subset of N items (default: every item of the split)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the subset, the recombinations and the bootstrap: same seed, same report "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="input size (default: the model's own, e.g. a timm ViT's patch_embed.img_size, else 224); "
        "a fixed-size ViT accepts only its own size",
    )
    p.add_argument(
        "--weights", default=None, help="weights directory (default: $FORCOMP_WEIGHTS, else ./weights)"
    )
    p.add_argument(
        "--checkpoint-key",
        default=None,
        metavar="KEY",
        help="entry of a training checkpoint that holds the weights (default: 'model' as torchvision's "
        "reference scripts save it, else 'state_dict' as timm's; e.g. model_ema, state_dict_ema)",
    )
    p.add_argument(
        "--normalize",
        choices=["auto", "imagenet", "none"],
        default="auto",
        help="auto (default): the model's own mean/std when known, else ImageNet; none: feed [0, 1]",
    )
    p.add_argument(
        "--methods",
        default="input_x_gradient,gradcam",
        help="attribution methods, comma-separated; the first is the headline "
        "(input_x_gradient, integrated_gradients, gradcam; default: %(default)s)",
    )
    p.add_argument(
        "--class-indices",
        default=None,
        metavar="I0,I1,...|FILE.json",
        help="model output index of each cache class, in sorted class order: a comma-separated list, "
        "or a JSON file holding that list or {class_name: index}. Needed when the model's outputs are "
        "not the cache's classes (ImageNet-1k models on wnid-named caches are mapped automatically); "
        "predictions are then the argmax over the mapped outputs only (default: the model's outputs are "
        "the cache's classes, in order)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader workers reading files (default: %(default)s, read in the main process)",
    )
    p.add_argument(
        "--mask-smoothing-sigma",
        type=float,
        default=None,
        help="edge feathering sigma in output pixels (default: ForNet's 4.0, meant for 224 px; "
        "scale it for small inputs)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for each 95%% interval, at least 1 (default: %(default)s)",
    )
    p.add_argument("--no-plots", action="store_true", help="write report.json/report.md only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    c = sub.add_parser(
        "compare",
        help="print the headline bias scores of several reports side by side (--out: also a plot)",
        description="Print the headline scores of several reports side by side, with a warning for any "
        "report whose accuracy is not clearly above chance. Writes nothing unless --out is given.",
    )
    c.add_argument("reports", nargs="+", type=Path, help="report directories (the --out of forcomp evaluate)")
    c.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the comparison figure to this file (.png, .svg or .pdf; a directory gets "
        "compare.png) (default: none, nothing is written)",
    )
    c.add_argument("--names", default=None, help="comma-separated column names (default: directory names)")
    c.set_defaults(func=cmd_compare)


def parse_class_indices(value: str) -> list[int] | dict[str, int]:
    """``--class-indices``: ``"7,2,5"`` → ``[7, 2, 5]``; a JSON file → its list or ``{class: index}``.

    Raises:
        ValueError: Naming the flag and what is wrong (lengths and ranges are checked against the
            cache and the model later, by :func:`forcomp.metrics.bias.run_evaluation`).
    """
    text = value.strip()
    path = Path(text)
    if text.lower().endswith(".json") or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValueError(f"--class-indices: cannot read {path}: {e}") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"--class-indices: {path} is not valid JSON: {e}") from e
        if isinstance(data, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in data):
            return list(data)
        if isinstance(data, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in data.values()
        ):
            return {str(k): int(v) for k, v in data.items()}
        raise ValueError(
            f"--class-indices: {path} must hold a list of integers (one per cache class, in sorted "
            "class order) or an object {class_name: integer}"
        )
    parts = [p.strip() for p in text.split(",")]
    try:
        indices = [int(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"--class-indices must be comma-separated integers (one model output index per cache "
            f"class, in sorted class order) or a path to a JSON file, got {value!r}"
        ) from None
    return indices


def evaluate_options(args: argparse.Namespace) -> EvaluateOptions:
    """``forcomp evaluate``'s flags as the :class:`~forcomp.metrics.options.EvaluateOptions` they map onto.

    ``--device`` is resolved here (default: CUDA when available, else the CPU), so a device this
    machine lacks is refused before any work.
    """
    from forcomp.metrics.options import EvaluateOptions
    from forcomp.models.devices import resolve_device

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return EvaluateOptions(
        split=args.split,
        size=args.size,
        normalize=None if args.normalize == "none" else args.normalize,
        device=str(resolve_device(args.device)),
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        methods=methods,
        num_workers=args.workers,
        progress=not args.quiet,
        bootstrap=args.bootstrap,
        class_indices=None if args.class_indices is None else parse_class_indices(args.class_indices),
        weights_dir=args.weights,
        checkpoint_key=args.checkpoint_key,
        recombine=None
        if args.mask_smoothing_sigma is None
        else {"mask_smoothing_sigma": args.mask_smoothing_sigma},
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from forcomp.metrics.bias import run_evaluation
    from forcomp.metrics.output import compare, write_report

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if not args.cache.is_dir():
        print(f"forcomp evaluate: error: cache {args.cache} does not exist", file=sys.stderr)
        return EXIT_UNUSABLE
    options = evaluate_options(args)
    # The model is loaded and its input size checked before any item is read.
    result = run_evaluation(args.model, args.cache, options)
    paths = write_report(result.report, args.out, result.examples, plots=not args.no_plots)
    print(compare([paths["json"]], names=[args.model]))
    print(f"wrote {args.out}/ ({', '.join(p.name for p in paths.values())})")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from forcomp.metrics.output import compare

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    print(compare(args.reports, out=args.out, names=names))
    if args.out is not None:
        print(f"wrote {args.out / 'compare.png' if args.out.is_dir() else args.out}")
    return EXIT_OK
