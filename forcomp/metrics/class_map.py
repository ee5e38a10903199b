"""Which model output counts as which cache class, and how predictions are made, in words."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from forcomp.errors import ForcompError
from forcomp.metrics.classnames import class_name, imagenet1k_below, imagenet1k_index, is_wnid
from forcomp.metrics.options import ClassIndices

log = logging.getLogger(__name__)

CLASS_INDICES_HOW = (
    "class_indices=[...] in Python, or on the command line --class-indices I0,I1,... "
    "or --class-indices FILE.json"
)


def _is_index(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def imagenet_class_indices(classes: list[str]) -> list[int] | None:
    """Positions of WordNet ids in the standard ImageNet-1k output order, else ``None`` (some class is
    not an ImageNet-1k wnid). Uses the packaged WordNet table."""
    if not classes or not all(is_wnid(c) for c in classes):
        return None
    order = imagenet1k_index()
    if not all(c in order for c in classes):
        return None
    return [order[c] for c in classes]


def map_class_indices(n_outputs: int, classes: list[str], given: ClassIndices | None) -> list[int] | None:
    """Model output index per cache class (sorted class order), or ``None`` for the identity mapping.

    Raises:
        ValueError: ``given`` lacks classes, has the wrong length, out-of-range or repeated indices.
        ForcompError: No mapping given and none can be derived (the message says how to give one).
    """
    if given is not None:
        if isinstance(given, Mapping):
            missing = [c for c in classes if c not in given]
            if missing:
                raise ValueError(
                    f"class_indices maps class names to outputs but lacks {len(missing)} of the cache's "
                    f"{len(classes)} classes: {missing[:10]}{' …' if len(missing) > 10 else ''}"
                )
            given = [given[c] for c in classes]
        values = list(given)
        if len(values) != len(classes):
            raise ValueError(
                f"class_indices must give one model output index per cache class in sorted class order "
                f"({len(classes)} classes), got {len(values)} ({CLASS_INDICES_HOW})"
            )
        bad = [v for v in values if not _is_index(v) or not 0 <= v < n_outputs]
        if bad:
            raise ValueError(
                f"class_indices must be integers in [0, {n_outputs}) (the model has {n_outputs} outputs), "
                f"got {bad[:10]}"
            )
        if len(set(values)) != len(values):
            dup = sorted({v for v in values if values.count(v) > 1})
            raise ValueError(f"class_indices maps several cache classes to the same output(s) {dup}")
        return [int(v) for v in values]
    if n_outputs == len(classes):
        return None
    mapped = imagenet_class_indices(classes) if n_outputs == 1000 else None
    if mapped is not None:
        log.info("mapping %d cache classes onto the ImageNet-1k outputs by WordNet id", len(classes))
        return mapped
    if n_outputs == 1000 and classes and all(is_wnid(c) for c in classes):
        raise ForcompError(not_imagenet_message(classes))
    raise ForcompError(
        f"the model has {n_outputs} outputs but the cache has {len(classes)} classes; give the model "
        f"output index of each cache class (in sorted class order): {CLASS_INDICES_HOW}; or evaluate "
        "a model trained on these classes"
    )


def not_imagenet_message(classes: list[str]) -> str:
    """Why wnid classes do not map onto a 1000-way model: which are not ImageNet-1k classes, and the
    ``--class-indices`` line with the others filled in (``?`` for the user to choose)."""
    order = imagenet1k_index()
    missing = [c for c in classes if c not in order]
    described = []
    for c in missing[:10]:
        name = class_name(c)
        below = imagenet1k_below(c)
        text = f"{c} ({name})" if name else f"{c} (not in the packaged WordNet table)"
        if below:
            shown = ", ".join(f"{w} {class_name(w)} = {order[w]}" for w in below[:3])
            text += f" — ImageNet-1k classes under it: {shown}{' …' if len(below) > 3 else ''}"
        described.append(text)
    more = f"; and {len(missing) - 10} more" if len(missing) > 10 else ""
    line = ",".join(str(order[c]) if c in order else "?" for c in classes)
    return (
        f"the model has 1000 outputs (ImageNet-1k) and the cache's classes are WordNet ids, but "
        f"{len(missing)} of its {len(classes)} classes are not ImageNet-1k classes: "
        f"{'; '.join(described)}{more}. The other {len(classes) - len(missing)} map by WordNet id; "
        f"replace each ? by the output to count as correct for that class (sorted class order):\n"
        f"  --class-indices {line}\n"
        "(class_indices=[...] in Python, or a JSON file {class_name: index}); or evaluate a cache "
        "without those classes"
    )


def prediction_rule(n_outputs: int, out_index: list[int] | None) -> str:
    """How predictions are made, in words, for the report."""
    if out_index is None:
        return f"argmax over all {n_outputs} model outputs (one per cache class)"
    if len(out_index) == n_outputs:
        return f"argmax over all {n_outputs} model outputs, mapped to the cache's classes by class_indices"
    return (
        f"argmax over the {len(out_index)} outputs mapped to the cache's classes "
        f"(the model has {n_outputs} outputs; the other {n_outputs - len(out_index)} are ignored)"
    )
