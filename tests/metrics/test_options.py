"""The evaluation's settings (``options.py``): validation messages, keyword overrides, the report's copy."""

from __future__ import annotations

import json

import pytest

from forcomp.metrics.options import DEFAULT_METHODS, EvaluateOptions

ALL_METHODS = "('input_x_gradient', 'integrated_gradients', 'gradcam')"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, None, ("gradcam",), None), "batch_size must be an int >= 1, got 0"),
        ((True, None, ("gradcam",), None), "batch_size must be an int >= 1, got True"),
        ((2.0, None, ("gradcam",), None), "batch_size must be an int >= 1, got 2.0"),
        ((1, 0, ("gradcam",), None), "limit must be None or an int >= 1, got 0"),
        ((1, True, ("gradcam",), None), "limit must be None or an int >= 1, got True"),
        ((1, 2.0, ("gradcam",), None), "limit must be None or an int >= 1, got 2.0"),
        (
            (1, None, (), None),
            f"methods must be a non-empty subset of {ALL_METHODS}, got ()",
        ),
        (
            (1, None, ("gradcam", "saliency"), None),
            f"methods must be a non-empty subset of {ALL_METHODS}, got ('gradcam', 'saliency')",
        ),
        ((1, None, ("gradcam",), 7), "size must be an int >= 8 or (h, w), got 7"),
        ((1, None, ("gradcam",), (8, 7)), "size must be an int >= 8 or (h, w), got (8, 7)"),
        ((1, None, ("gradcam",), (8, 8, 8)), "size must be an int >= 8 or (h, w), got (8, 8, 8)"),
        ((1, None, ("gradcam",), (8.0, 8)), "size must be an int >= 8 or (h, w), got (8.0, 8)"),
    ],
)
def test_invalid_arguments_are_named(args: tuple, message: str) -> None:
    with pytest.raises(ValueError) as e:
        EvaluateOptions(**dict(zip(("batch_size", "limit", "methods", "size"), args, strict=True)))
    assert str(e.value) == message


def test_valid_arguments_at_their_bounds() -> None:
    for args in (
        (1, None, ("gradcam",), None),
        (1, 1, ("gradcam",), 8),
        (3, 5, ("input_x_gradient",), (8, 9)),
    ):
        EvaluateOptions(**dict(zip(("batch_size", "limit", "methods", "size"), args, strict=True)))


def test_keyword_overrides_replace_the_given_options() -> None:
    base = EvaluateOptions(seed=3, limit=5)
    merged = EvaluateOptions.merged(base, {"limit": 7, "methods": ["gradcam"]})
    assert merged == EvaluateOptions(seed=3, limit=7, methods=("gradcam",)) and base.limit == 5
    assert EvaluateOptions.merged(None, {}) == EvaluateOptions() and EvaluateOptions.merged(base, {}) is base
    assert EvaluateOptions().methods == DEFAULT_METHODS == ("input_x_gradient", "gradcam")
    with pytest.raises(TypeError, match=r"unknown evaluation setting\(s\) \['sead'\]; the settings are \["):
        EvaluateOptions.merged(base, {"sead": 1})
    with pytest.raises(TypeError, match="options must be an EvaluateOptions or None, got str; pass other"):
        EvaluateOptions.merged("val", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be None or an int >= 1, got 0"):
        EvaluateOptions.merged(base, {"limit": 0})  # overrides are validated too


def test_defaults_and_the_report_copy_are_json_ready() -> None:
    d = EvaluateOptions().to_dict()
    assert d == {
        "split": "val",
        "size": None,
        "normalize": "auto",
        "device": None,
        "batch_size": 64,
        "seed": 0,
        "limit": None,
        "methods": ["input_x_gradient", "gradcam"],
        "num_workers": 0,
        "progress": False,
        "bootstrap": 1000,
        "ig_steps": 16,
        "gradcam_layer": None,
        "class_indices": None,
        "n_examples": 6,
        "weights_dir": None,
        "checkpoint_key": None,
        "recombine": {},
    }
    import torch

    opts = EvaluateOptions(
        size=[40, 48],  # type: ignore[arg-type]
        normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        device=torch.device("cpu"),
        class_indices={"b": 1, "a": 0},
        weights_dir=__import__("pathlib").Path("/w"),
        recombine={"mask_smoothing_sigma": 1.0},
    )
    d = opts.to_dict()
    assert opts.size == (40, 48) and d["size"] == [40, 48] and d["device"] == "cpu"
    assert d["normalize"] == {"mean": [0.5] * 3, "std": [0.25] * 3} and d["weights_dir"] == "/w"
    assert d["class_indices"] == {"b": 1, "a": 0} and d["recombine"] == {"mask_smoothing_sigma": 1.0}
    assert EvaluateOptions(class_indices=(2, 0)).to_dict()["class_indices"] == [2, 0]
    json.dumps(d)


def test_recombine_is_copied_so_later_changes_do_not_reach_the_options() -> None:
    settings = {"fg_scale_jitter": 0.1}
    opts = EvaluateOptions(recombine=settings)
    settings["fg_scale_jitter"] = 0.5
    assert opts.recombine == {"fg_scale_jitter": 0.1}
