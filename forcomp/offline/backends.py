"""Which backends a build runs: ``auto`` and names resolved once, against the stages' registries."""

from __future__ import annotations

from forcomp.errors import WeightsNotFoundError
from forcomp.offline.config import BuildConfig
from forcomp.offline.inpainters import INPAINTERS
from forcomp.offline.segmenters import SEGMENTERS


def resolve_backends(config: BuildConfig) -> dict[str, str]:
    """The segmenter and inpainter a build runs, ``auto`` resolved, their weights checked.

    Called once per build; the engines and workers get the result, never ``auto``.

    Returns:
        ``{"segmenter": name, "inpainter": name}``.

    Raises:
        ForcompError: an unknown name.
        WeightsNotFoundError: a backend's weights are missing or unusable (before any work).
    """
    wdir = config.weights_path()
    names = {}
    for reg, name in ((SEGMENTERS, config.segmenter), (INPAINTERS, config.inpainter)):
        spec = reg.resolve(name, wdir)
        if spec.available_weights(wdir) is None:
            want = " or ".join("+".join(str(wdir / p) for p in alt) for alt in spec.weights)
            problems = spec.weights_problems(wdir)
            found = f" Found but not usable: {'; '.join(problems)}." if problems else ""
            raise WeightsNotFoundError(
                f"{reg.stage} {spec.name!r} needs weights that are not in {wdir}: expected {want}.{found} "
                "See weights/README.md for where to get them, or pass --weights DIR."
            )
        names[reg.stage] = spec.name
    return names
