"""Bias metrics end to end on the synthetic colour cache, with hand-built, known-biased models.

The four models (``biased_models.py``): ``invariant`` (sees any object anywhere), ``center``
(object colours in the central window only), ``border`` (background colours in an outer ring only:
a pure background model), ``large`` (needs the object to cover >= 10% of the image). Every metric
must single out the model built to have that bias, by a clear margin, and leave ``invariant`` clean.
These run full evaluations (a minute in all); the mechanics of one evaluation are in ``test_bias.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import biased_models
import pytest
import torch
from colour_cache import EVAL_SIZE, make_colour_cache
from torch import nn

import forcomp
from forcomp.errors import CacheFormatError, ForcompError
from forcomp.metrics.bias import evaluate, run_evaluation

HEADLINE_KEYS = ("background_robustness", "foreground_focus", "center_bias", "size_bias", "bg_gap")


def score(reports: dict, model: str, key: str) -> float:
    return reports[model][key]["score"]


def test_background_robustness_and_bg_gap_single_out_the_background_model(biased_reports) -> None:
    br = {m: score(biased_reports, m, "background_robustness") for m in biased_reports}
    gap = {m: score(biased_reports, m, "bg_gap") for m in biased_reports}
    assert br["invariant"] == pytest.approx(1.0) and gap["invariant"] == pytest.approx(0.0)
    assert br["border"] < 0.5  # on a random class's background it is at chance
    assert br["border"] < min(v for m, v in br.items() if m != "border") - 0.4
    assert gap["border"] > 50.0 and all(abs(v) < 15.0 for m, v in gap.items() if m != "border")
    acc = biased_reports["border"]["background_robustness"]["accuracy"]
    assert acc["orig"] == 1.0 and acc["same"] == 1.0 and acc["all"] < 0.5


def test_foreground_focus_singles_out_the_background_model(biased_reports) -> None:
    for method in ("input_x_gradient", "gradcam"):
        ff = {m: r["foreground_focus"]["methods"][method]["score"] for m, r in biased_reports.items()}
        assert ff["border"] < 0.5, (method, ff)  # looks away from the object
        assert all(v > 2.0 for m, v in ff.items() if m != "border"), (method, ff)  # concentrate on it
    assert biased_reports["invariant"]["foreground_focus"]["score"] == pytest.approx(
        biased_reports["invariant"]["foreground_focus"]["methods"]["input_x_gradient"]["score"]
    )


def test_center_bias_singles_out_the_center_model(biased_reports) -> None:
    cb = {m: score(biased_reports, m, "center_bias") for m in biased_reports}
    assert cb["center"] > 0.6
    assert cb["center"] > max(v for m, v in cb.items() if m != "center") + 0.5
    assert abs(cb["invariant"]) < 0.05 and abs(cb["border"]) < 0.05
    grid = biased_reports["center"]["center_bias"]["grid"]
    assert (
        grid[1][1] > 0.9
        and max(v for r, row in enumerate(grid) for c, v in enumerate(row) if (r, c) != (1, 1)) < 0.3
    )
    r = biased_reports["center"]["center_bias"]
    assert r["corner_score"] > 0.6 and r["edge_score"] > 0.6


def test_size_bias_singles_out_the_large_object_model(biased_reports) -> None:
    sb = {m: score(biased_reports, m, "size_bias") for m in biased_reports}
    assert sb["large"] > 0.4
    assert sb["large"] == max(sb.values()) and sb["large"] > sb["center"] + 0.15
    assert sb["large"] > sb["invariant"] + 0.4 and abs(sb["invariant"]) < 0.05 and abs(sb["border"]) < 0.05
    curve = biased_reports["large"]["size_bias"]["curve"]
    assert curve["0.1"] == pytest.approx(0.25) and curve["2"] == pytest.approx(1.0)  # chance → perfect
    assert biased_reports["large"]["size_bias"]["large_score"] < 0  # larger than natural helps it


def test_report_structure_and_intervals(biased_reports) -> None:
    r = biased_reports["center"]
    assert (
        isinstance(r["accuracy"], float) and r["accuracy"] == r["background_robustness"]["accuracy"]["orig"]
    )
    assert r["n_images"] == 32 and r["seed"] == 0 and r["forcomp_version"] == forcomp.__version__
    assert r["model"]["class"].endswith("ColourWindowNet") and r["cache"]["n_items"] == 32
    assert r["cache"]["classes"] == ["n00000001", "n00000002", "n00000003", "n00000004"]
    for key in HEADLINE_KEYS:
        s, (lo, hi) = r[key]["score"], r[key]["ci95"]
        assert isinstance(s, float) and r[key]["n_images"] == 32
        assert lo <= s <= hi, (key, s, lo, hi)
    assert len(r["center_bias"]["grid"]) == 3 and all(len(row) == 3 for row in r["center_bias"]["grid"])
    assert set(r["size_bias"]["curve"]) == {"0.1", "0.2", "0.3", "0.5", "0.7", "1", "1.5", "2"}
    assert set(r["foreground_focus"]["methods"]) == {"input_x_gradient", "gradcam"}
    assert r["gradcam_layer"] == "window" and len(r["conditions"]) == 20
    assert r["conditions"]["nonant=4"]["accuracy"] == r["center_bias"]["grid"][1][1]


def test_deterministic_for_a_seed(colour_cache: Path) -> None:
    def run(seed: int) -> dict:
        r = evaluate(
            biased_models.center(),
            colour_cache,
            size=EVAL_SIZE,
            normalize=None,
            batch_size=8,
            seed=seed,
            limit=12,
            methods=("input_x_gradient",),
            bootstrap=100,
        )
        r.pop("runtime")
        return r

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert a["n_images"] == 12 and a["limit"] == 12
    assert a["foreground_focus"]["score"] != c["foreground_focus"]["score"]  # other draws


def test_class_indices_map_cache_classes_to_model_outputs(colour_cache: Path) -> None:
    kw = dict(
        size=EVAL_SIZE, normalize=None, batch_size=8, limit=8, methods=("input_x_gradient",), bootstrap=50
    )
    # the 6 unmapped outputs are the largest: only the argmax over the mapped 4 gets them right
    r = evaluate(biased_models.padded(), colour_cache, class_indices=[7, 2, 5, 0], **kw)
    assert r["accuracy"] == 1.0 and r["class_indices"] == [7, 2, 5, 0]
    assert all(c["accuracy"] == 1.0 for n, c in r["conditions"].items() if n.startswith("bg="))
    with pytest.raises(ForcompError, match="class_indices"):
        evaluate(biased_models.padded(), colour_cache, **kw)


def test_vit_end_to_end(colour_cache: Path) -> None:
    timm = pytest.importorskip("timm")
    vit = timm.create_model("test_vit", pretrained=False, num_classes=4, img_size=64)
    ev = run_evaluation(
        vit,
        colour_cache,
        size=64,
        batch_size=4,
        limit=4,
        bootstrap=50,
        methods=("input_x_gradient", "integrated_gradients", "gradcam"),
        ig_steps=2,
    )
    methods = ev.report["foreground_focus"]["methods"]
    assert all(math.isfinite(m["score"]) for m in methods.values()), methods
    assert ev.report["gradcam_layer"].endswith("norm1")
    assert ev.examples is not None and ev.examples.maps["gradcam"].shape == (4, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"limit": 0}, "limit"),
        ({"normalize": "zscore"}, "normalize"),
        ({"methods": ("saliency",)}, "methods"),
        ({"size": 4}, "size"),
        ({"recombine": {"nonant": 3}}, "recombine may not set"),
        ({"recombine": {"mask_smoothing_sigma": -1.0}}, "mask_smoothing_sigma"),
    ],
)
def test_invalid_parameters(colour_cache: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(biased_models.invariant(), colour_cache, **kwargs)


def test_recombine_settings_reach_every_condition(colour_cache: Path, monkeypatch) -> None:
    """Extra ForComp settings (e.g. feathering for small canvases) apply to every condition and are
    recorded in the report."""
    import forcomp.recombine.dataset as dataset_mod

    seen: list[dict] = []
    original = dataset_mod.ForComp

    def recording(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset_mod, "ForComp", recording)
    r = evaluate(
        biased_models.invariant(),
        colour_cache,
        size=EVAL_SIZE,
        normalize=None,
        batch_size=32,
        limit=8,
        methods=("input_x_gradient",),
        bootstrap=20,
        recombine={"mask_smoothing_sigma": 1.5},
    )
    assert r["recombine"] == {"mask_smoothing_sigma": 1.5}
    assert len(seen) >= 3 + 9 + 8 - 1  # every background, nonant and size condition
    assert all(kw["mask_smoothing_sigma"] == 1.5 for kw in seen)
    assert {kw.get("nonant") for kw in seen} >= set(range(9))


def test_unusable_caches(tmp_path: Path) -> None:
    with pytest.raises(CacheFormatError, match="does not exist"):
        evaluate(biased_models.invariant(), tmp_path / "nope")
    (tmp_path / "empty" / "val" / "foregrounds").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "backgrounds").mkdir(parents=True)
    with pytest.raises(ForcompError, match="no foregrounds"):
        evaluate(biased_models.invariant(), tmp_path / "empty")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_the_cpu_rankings(tmp_path: Path) -> None:
    cache = make_colour_cache(tmp_path / "cache")
    reports = {
        name: evaluate(
            build(),
            cache,
            size=EVAL_SIZE,
            normalize=None,
            device="cuda",
            batch_size=32,
            seed=0,
            bootstrap=200,
        )
        for name, build in biased_models.MODELS.items()
    }
    assert reports["border"]["background_robustness"]["score"] < 0.5
    assert reports["center"]["center_bias"]["score"] > 0.6
    assert reports["large"]["size_bias"]["score"] > 0.4
    assert (
        reports["border"]["foreground_focus"]["score"]
        < 0.5
        < 2.0
        < reports["invariant"]["foreground_focus"]["score"]
    )
    assert reports["invariant"]["runtime"]["device"] == "cuda"


def test_api_default_normalize_is_the_models_own_like_the_cli(colour_cache: Path) -> None:
    kw = dict(size=EVAL_SIZE, batch_size=8, limit=4, methods=("input_x_gradient",), bootstrap=20)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def model() -> nn.Module:
        m = biased_models.invariant()
        m.pretrained_cfg = {"mean": mean, "std": std}  # as a timm model declares its preprocessing
        return m

    default = evaluate(model(), colour_cache, **kw)
    assert default["normalize"] == {"mean": list(mean), "std": list(std)}
    auto = evaluate(model(), colour_cache, normalize="auto", **kw)
    assert default["conditions"] == auto["conditions"]
    imagenet = evaluate(model(), colour_cache, normalize="imagenet", **kw)  # explicit values still work
    assert imagenet["normalize"]["mean"] == [0.485, 0.456, 0.406]


def test_attribution_examples_are_spread_over_the_classes(colour_cache: Path) -> None:
    kw = dict(size=EVAL_SIZE, normalize=None, batch_size=4, limit=16, bootstrap=20, seed=0)
    ev = run_evaluation(
        biased_models.invariant(), colour_cache, methods=("input_x_gradient",), n_examples=6, **kw
    )
    assert ev.examples is not None
    assert ev.examples.labels.tolist() == [0, 1, 2, 3, 0, 1]  # round-robin by class, in class order
    assert ev.examples.images.shape == (6, 3, EVAL_SIZE, EVAL_SIZE)
    assert ev.examples.maps["input_x_gradient"].shape == ev.examples.masks.shape == (6, EVAL_SIZE, EVAL_SIZE)
    again = run_evaluation(
        biased_models.invariant(), colour_cache, methods=("input_x_gradient",), n_examples=6, **kw
    )
    assert torch.equal(again.examples.images, ev.examples.images)  # deterministic


def test_swin_end_to_end_own_size_and_channels_last_gradcam(colour_cache: Path) -> None:
    swin = biased_models.tiny_swin(4)
    ev = run_evaluation(swin, colour_cache, limit=4, batch_size=4, bootstrap=20)  # size: the model's 64
    r = ev.report
    assert r["size"] == 64 and r["gradcam_layer"] == "norm"
    assert "unavailable" not in r["foreground_focus"]["methods"]["gradcam"]
    assert ev.examples is not None and ev.examples.maps["gradcam"].shape == (4, 64, 64)


# ---------------------------------------------------------------- chance level, dtypes, class mapping


def test_constant_predictor_gets_the_chance_warning_and_no_perfect_headline(colour_cache: Path) -> None:
    r = evaluate(
        biased_models.constant(),
        colour_cache,
        size=EVAL_SIZE,
        normalize=None,
        batch_size=32,
        methods=("input_x_gradient",),
        bootstrap=200,
    )
    assert r["accuracy"] == 0.25 and r["background_robustness"]["score"] == 1.0  # numbers kept
    assert r["chance"]["level"] == 0.25 and r["chance"]["n_classes"] == 4
    assert r["chance"]["majority_share"] == 0.25  # 8 images in each of the 4 classes
    assert "not clearly above chance" in r["chance"]["warning"]
    for key in ("background_robustness", "bg_gap", "foreground_focus", "center_bias", "size_bias"):
        assert r[key]["meaningful"] is False, key
    assert r["accuracy_at_chance"] is True


def test_biased_but_working_models_get_no_chance_warning(biased_reports) -> None:
    """The center model is at chance in the outer cells and the border model on foreign backgrounds:
    that is what their scores measure, not a reason to distrust them. The large-object model is at
    chance in every nonant cell (objects scaled to a cell are below its 10% threshold), so its center
    bias, and only that, is flagged."""
    for name, r in biased_reports.items():
        if name == "large":
            continue
        assert r["chance"]["warning"] is None, (name, r["chance"])
        assert all(r[k]["meaningful"] for k in HEADLINE_KEYS), name
    large = biased_reports["large"]
    assert list(large["chance"]["not_meaningful"]) == ["center_bias"]
    assert large["center_bias"]["meaningful"] is False and large["size_bias"]["meaningful"] is True
    assert "bg=all" in biased_reports["border"]["chance"]["conditions_at_chance"]
    assert "nonant=0" in biased_reports["center"]["chance"]["conditions_at_chance"]


def test_half_precision_model_gets_inputs_in_its_dtype(colour_cache: Path) -> None:
    """A bfloat16 model (as loaded for inference on a GPU) gets bfloat16 inputs, not float32 ones."""
    model = biased_models.invariant().to(torch.bfloat16)
    seen: list[torch.dtype] = []
    model.features.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    r = evaluate(
        model,
        colour_cache,
        size=EVAL_SIZE,
        normalize=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # the normalising path, values as the model expects
        batch_size=16,
        limit=16,
        methods=("input_x_gradient", "gradcam"),
        bootstrap=50,
    )
    assert set(seen) == {torch.bfloat16}
    assert r["accuracy"] > 0.9 and isinstance(r["background_robustness"]["score"], float)
    assert math.isfinite(r["foreground_focus"]["methods"]["gradcam"]["score"])
    assert r["conditions"]["bg=orig"]["accuracy"] == r["accuracy"]


def test_wnid_classes_outside_imagenet_1k_are_named_with_a_working_line(tmp_path: Path) -> None:
    # tench, goldfish: ImageNet-1k classes 0 and 1; dog: a WordNet parent of 118 ImageNet-1k breeds;
    # n09999999: no synset at all
    classes = ("n01440764", "n01443537", "n02084071", "n09999999")
    cache = make_colour_cache(tmp_path / "c", per_class=2, classes=classes)
    kw = dict(size=EVAL_SIZE, normalize=None, batch_size=8, methods=("input_x_gradient",), bootstrap=20)
    with pytest.raises(ForcompError) as e:
        evaluate(biased_models.MappedNet((0, 1, 151, 999), 1000), cache, **kw)
    msg = str(e.value)
    assert "2 of its 4 classes are not ImageNet-1k classes" in msg
    assert "n02084071 (dog" in msg and "n02085620 Chihuahua = 151" in msg
    assert "n09999999 (not in the packaged WordNet table)" in msg
    assert "--class-indices 0,1,?,?" in msg
    # the line, ? filled in; the model's unmapped outputs are its largest: the mapped argmax is used
    model = biased_models.MappedNet((0, 1, 151, 999), 1000)
    r = evaluate(model, cache, class_indices=[0, 1, 151, 999], **kw)
    assert r["class_indices"] == [0, 1, 151, 999] and r["accuracy"] == 1.0
    ok = evaluate(
        biased_models.MappedNet((0, 1), 1000),
        make_colour_cache(tmp_path / "ok", per_class=2, classes=classes[:2]),
        **kw,
    )
    assert ok["class_indices"] == [0, 1] and ok["accuracy"] == 1.0  # all ImageNet-1k: mapped by wnid


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_on_cuda(colour_cache: Path, dtype: torch.dtype) -> None:
    r = evaluate(
        biased_models.invariant().to("cuda", dtype),
        colour_cache,
        size=EVAL_SIZE,
        normalize=None,
        batch_size=16,
        limit=16,
        methods=("input_x_gradient", "gradcam"),
        bootstrap=50,
    )
    assert r["runtime"]["device"].startswith("cuda") and r["accuracy"] > 0.9
    assert math.isfinite(r["foreground_focus"]["methods"]["gradcam"]["score"])
