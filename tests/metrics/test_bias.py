"""What one evaluation (``bias.py``) feeds the model and how it turns logits into hits, checked
independently on a 16-item colour cache at 48 px (fast):

- *normalisation*: the model un-normalises its input with the test's own mean/std (it only
  recognises the colours when they were normalised), and every input it receives is compared with
  ``(image - mean) / std`` computed here on the per-sample path ``ForComp(...)[i]``;
- *pairing*: every condition's inputs equal the items of an independent ``ForComp`` with the
  evaluation's seed and that condition's settings, for the seeded ``limit`` subset recomputed here;
- *the mapped argmax*: the 1000-way double's unmapped outputs are the *largest*, so only the
  mapped-argmax rule gets the classes right.

Every model double reacts to its input (colour detectors of ``biased_models.py``). Whether each metric
singles out the model built to have that bias is ``test_evaluate_end_to_end.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path

import biased_models
import pytest
import torch
from colour_cache import EVAL_SIZE, make_colour_cache
from torch import nn

import forcomp
from forcomp.errors import CacheFormatError
from forcomp.metrics.attribution import Attributor, focus_scores
from forcomp.metrics.bias import ExamplePicker, evaluate, run_evaluation
from forcomp.metrics.classnames import imagenet1k_index
from forcomp.metrics.grids import EvaluationGrid
from forcomp.models.classifiers import wrap_module
from forcomp.recombine.dataset import ForComp

SIZE = 48

PER_CLASS = 4

N_ITEMS = 4 * PER_CLASS
MEAN, STD = (0.6, 0.3, 0.5), (0.2, 0.3, 0.25)
FAST = dict(size=SIZE, batch_size=5, methods=("input_x_gradient",), bootstrap=10)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_colour_cache(tmp_path_factory.mktemp("small_colour") / "cache", per_class=PER_CLASS)


class Recorder(nn.Module):
    """Passes ``x`` to ``inner`` and keeps a copy of every prediction input (those run without autograd;
    attribution passes need gradients) and whether the model was in eval mode then."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            self.inputs.append(x.detach().clone())
            self.modes.append(self.training)
        return self.inner(x)


class Denormalising(nn.Module):
    """The invariant colour model behind ``x * std + mean``: it sees the right colours only when the
    evaluation normalised with exactly ``(mean, std)``."""

    def __init__(self, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> None:
        super().__init__()
        self.inner = biased_models.invariant()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * self.std + self.mean)


def reference_images(cache: Path, seed: int, items: list[int]) -> dict[str, torch.Tensor]:
    """Per condition, the items the evaluation must show, built here on the per-sample path."""
    out = {}
    for cond in EvaluationGrid.default():
        ds = ForComp(cache, split="val", size=SIZE, seed=seed, return_masks=True, **cond.recombine_kwargs())
        out[cond.name] = torch.stack([ds[i][0] for i in items])
    return out


def per_condition(rec: Recorder, batches_per_condition: int) -> dict[str, torch.Tensor]:
    names = EvaluationGrid.default().names()
    assert len(rec.inputs) == batches_per_condition * len(names)
    return {
        n: torch.cat(rec.inputs[k * batches_per_condition : (k + 1) * batches_per_condition])
        for k, n in enumerate(names)
    }


def test_normalisation_is_applied_before_the_model(colour_cache: Path) -> None:
    """The model undoes the normalisation itself (the test's own formula, not forcomp's code): with the
    right (mean, std) it sees what the plain model sees on unnormalised images; without it, it does not.
    The per-input comparison with ``(image - mean) / std`` is
    ``test_inputs_are_normalised_and_every_condition_is_paired_by_seed_and_subset``."""
    kw = dict(size=EVAL_SIZE, batch_size=8, seed=1, limit=6, methods=("input_x_gradient",), bootstrap=50)
    plain = evaluate(biased_models.invariant(), colour_cache, normalize=None, **kw)
    norm = (MEAN, STD)
    r = evaluate(Denormalising(), colour_cache, normalize=norm, **kw)
    assert r["conditions"] == plain["conditions"] and r["accuracy"] == 1.0
    assert r["normalize"] == {"mean": list(norm[0]), "std": list(norm[1])} and plain["normalize"] is None
    ignored = evaluate(Denormalising(), colour_cache, normalize=None, **kw)
    assert ignored["accuracy"] <= 0.5  # the bug "normalisation ignored" is visible to this model
    identity = evaluate(biased_models.invariant(), colour_cache, normalize=((0, 0, 0), (1, 1, 1)), **kw)
    assert identity["conditions"] == plain["conditions"]


def test_inputs_are_normalised_and_every_condition_is_paired_by_seed_and_subset(cache: Path) -> None:
    seed, limit = 3, 7
    model = Recorder(Denormalising())
    r = evaluate(model, cache, normalize=(MEAN, STD), seed=seed, limit=limit, **FAST)
    items = sorted(torch.randperm(N_ITEMS, generator=torch.Generator().manual_seed(seed))[:limit].tolist())
    ref = reference_images(cache, seed, items)
    seen = per_condition(model, 2)  # 7 items in batches of 5: 5 + 2
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for name, images in ref.items():
        assert seen[name].dtype == torch.float32
        torch.testing.assert_close(seen[name], (images - mean) / std, atol=1e-5, rtol=0, msg=name)
    assert r["background_robustness"]["accuracy"] == {"orig": 1.0, "same": 1.0, "all": 1.0}
    assert r["normalize"] == {"mean": list(MEAN), "std": list(STD)}
    assert r["n_images"] == limit and r["limit"] == limit and r["seed"] == seed
    assert r["conditions"]["bg=all"]["accuracy"] == 1.0 and r["size_bias"]["reference"] == 1.0
    labels = [i // PER_CLASS for i in items]
    assert r["chance"]["majority_share"] == max(labels.count(k) for k in range(4)) / limit
    assert model.modes and not any(model.modes)  # predictions in eval mode


def test_without_normalisation_the_model_gets_the_images_and_every_item(cache: Path, caplog) -> None:
    model = Recorder(biased_models.invariant())
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="forcomp.metrics"):
        r = evaluate(model, cache, normalize=None, seed=0, **FAST)
    elapsed = time.perf_counter() - t0
    seen = per_condition(model, 4)  # 16 items: 5 + 5 + 5 + 1
    for name, images in reference_images(cache, 0, list(range(N_ITEMS))).items():
        torch.testing.assert_close(seen[name], images, atol=1e-5, rtol=0, msg=name)
    assert r["normalize"] is None and r["n_images"] == N_ITEMS and r["limit"] is None
    assert r["accuracy"] == 1.0 and r["chance"]["majority_share"] == 0.25
    assert r["foreground_focus"]["methods"]["input_x_gradient"]["n_valid"] == N_ITEMS
    # focus recomputed here in float64 from the attribution of the focus condition's batches
    ds = ForComp(cache, split="val", size=SIZE, seed=0, return_masks=True, background="all")
    masks = torch.stack([ds[i][2] for i in range(N_ITEMS)]).float()
    labels = torch.tensor([i // PER_CLASS for i in range(N_ITEMS)])
    attr = Attributor(model, ("input_x_gradient",))
    k = EvaluationGrid.default().names().index("bg=all")
    batches = zip(model.inputs[4 * k : 4 * k + 4], labels.split(5), strict=True)
    maps = torch.cat([attr(x, y)["input_x_gradient"] for x, y in batches])
    want = focus_scores(maps, masks, dtype=torch.float64).mean().item()
    assert r["foreground_focus"]["score"] == pytest.approx(want, rel=1e-12, abs=0)
    seconds = r["runtime"]["seconds"]
    assert 0 < seconds <= elapsed + 1e-3 and seconds == round(seconds, 3)
    lines = [m for m in caplog.messages if " accuracy " in m]
    assert lines == [f"{n}: accuracy 1.0000 over {N_ITEMS} images" for n in EvaluationGrid.default().names()]


def test_normalize_auto_uses_the_models_own_statistics(cache: Path) -> None:
    inner = Denormalising()
    inner.pretrained_cfg = {"mean": MEAN, "std": STD}  # as a timm model declares its preprocessing
    model = Recorder(inner)
    model.pretrained_cfg = inner.pretrained_cfg
    r = evaluate(model, cache, limit=5, **FAST)  # normalize defaults to "auto"
    assert r["normalize"] == {"mean": list(MEAN), "std": list(STD)} and r["accuracy"] == 1.0


def test_a_model_in_train_mode_is_evaluated_in_eval_mode_and_handed_back_in_train_mode(cache: Path) -> None:
    model = Recorder(biased_models.invariant()).train()
    evaluate(model, cache, normalize=None, limit=3, **FAST)
    assert model.modes and not any(model.modes) and model.training
    model.eval()
    evaluate(model, cache, normalize=None, limit=3, **FAST)
    assert not model.training


def test_half_precision_inputs_in_the_models_dtype_with_and_without_normalisation(cache: Path) -> None:
    for norm in (None, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))):
        model = Recorder(biased_models.invariant()).to(torch.bfloat16)
        r = evaluate(model, cache, normalize=norm, limit=5, **FAST)
        assert {x.dtype for x in model.inputs} == {torch.bfloat16}, norm
        assert r["accuracy"] == 1.0


class ImageNetColour(nn.Module):
    """A 1000-way double: the colour model's logits at ``outputs``, and every other output *larger*
    (1000 plus a term that depends on the image), so an argmax over all outputs is always wrong."""

    def __init__(self, outputs: list[int]) -> None:
        super().__init__()
        self.inner = biased_models.invariant()
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        rest = 1e3 + 10.0 * x.mean((1, 2, 3)).view(-1, 1).expand(-1, 1000).clone()
        return rest.index_copy(1, torch.tensor(self.outputs, device=x.device), z)


def test_1000_way_model_argmax_over_the_mapped_outputs_only(tmp_path: Path, caplog) -> None:
    order = imagenet1k_index()
    wnids = sorted(order)
    classes = (wnids[5], wnids[300], wnids[600], wnids[900])
    outputs = [order[c] for c in classes]
    cache = make_colour_cache(tmp_path / "in1k", per_class=2, classes=classes)
    kw = dict(FAST, methods=("input_x_gradient", "gradcam"))
    with caplog.at_level(logging.INFO, logger="forcomp.metrics"):
        r = evaluate(ImageNetColour(outputs), cache, normalize=None, **kw)
    assert caplog.messages[0] == "mapping 4 cache classes onto the ImageNet-1k outputs by WordNet id"
    assert r["class_indices"] == outputs and r["n_model_outputs"] == 1000
    assert r["background_robustness"]["accuracy"] == {"orig": 1.0, "same": 1.0, "all": 1.0}
    assert r["prediction"] == (
        "argmax over the 4 outputs mapped to the cache's classes (the model has 1000 outputs; "
        "the other 996 are ignored)"
    )
    # attributions explain the mapped output of the true class (the unmapped ones see the whole image)
    assert r["foreground_focus"]["methods"]["input_x_gradient"]["score"] > 2.0


class Permuted(nn.Module):
    """The colour model's 4 logits at outputs ``order`` of a 4-way head."""

    def __init__(self, order: list[int]) -> None:
        super().__init__()
        self.inner = biased_models.invariant()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return torch.zeros_like(z).index_copy(1, torch.tensor(self.order), z)


def test_class_indices_as_a_permutation_and_as_names(cache: Path) -> None:
    order = [2, 0, 3, 1]
    kw = dict(FAST, normalize=None, limit=8)
    r = evaluate(Permuted(order), cache, class_indices=order, **kw)
    assert r["accuracy"] == 1.0 and r["class_indices"] == order and r["n_model_outputs"] == 4
    assert (
        r["prediction"] == "argmax over all 4 model outputs, mapped to the cache's classes by class_indices"
    )
    names = dict(zip(["n00000001", "n00000002", "n00000003", "n00000004"], order, strict=True))
    assert evaluate(Permuted(order), cache, class_indices=names, **kw)["conditions"] == r["conditions"]
    plain = evaluate(Permuted(order), cache, **kw)  # identity mapping: the permuted head is wrong
    assert plain["class_indices"] is None and plain["accuracy"] < 0.5
    assert plain["prediction"] == "argmax over all 4 model outputs (one per cache class)"


def test_evaluation_refusals_name_what_and_how(cache: Path, tmp_path: Path) -> None:
    model = biased_models.invariant()
    with pytest.raises(ValueError) as e:
        evaluate(model, cache, recombine={"seed": 1, "background": "all", "fg_scale_jitter": 0.1})
    assert str(e.value) == (
        "recombine may not set ['background', 'seed']: the evaluation controls them; allowed are the other "
        "ForComp settings (e.g. mask_smoothing_sigma, fg_scale_jitter, fg_size_mode)"
    )
    for key in ("nonant", "size_factor", "split", "size", "return_masks"):
        with pytest.raises(ValueError, match="recombine may not set"):
            evaluate(model, cache, recombine={key: None})
    with pytest.raises(ValueError) as e:
        evaluate(model, cache, bootstrap=0)
    assert str(e.value) == "bootstrap must be >= 1 resamples, got 0"
    with pytest.raises(TypeError) as e:
        evaluate(42, cache)  # type: ignore[arg-type]
    assert str(e.value) == "model must be an nn.Module, a LoadedModel or a spec string, got int"
    with pytest.raises(CacheFormatError) as e:
        evaluate(model, tmp_path / "nope", size=SIZE)
    nope = tmp_path / "nope"
    assert str(e.value) == f"cache {nope} does not exist (build one with `forcomp build SOURCE {nope}`)"
    (tmp_path / "nope").write_text("a file, not a cache")
    with pytest.raises(CacheFormatError, match="does not exist"):
        evaluate(model, tmp_path / "nope", size=SIZE)


def test_a_split_without_items_is_refused_with_the_build_command(
    cache: Path, tmp_path: Path, monkeypatch
) -> None:
    import forcomp.recombine.dataset as dataset_mod

    class Empty:
        classes = ["a"]

        def __init__(self, *args, **kwargs) -> None:
            pass

        def __len__(self) -> int:
            return 0

    monkeypatch.setattr(dataset_mod, "ForComp", Empty)
    with pytest.raises(CacheFormatError) as e:
        evaluate(biased_models.invariant(), cache, split="train", size=SIZE)
    assert str(e.value) == (
        f"cache {cache} has no train items (expected {cache}/train/foregrounds/<class>/*.WEBP); "
        f"build the split with `forcomp build SOURCE {cache} --split train`"
    )


class FakeBar:
    """Stands in for ``tqdm.auto.tqdm`` (a real bar starts a monitor thread, which hangs forked test runs
    such as a mutation-testing runner's): records what the evaluation tells it."""

    made: list[FakeBar] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.updates, self.closed = kwargs, [], False
        FakeBar.made.append(self)

    def update(self, n: int) -> None:
        self.updates.append(n)

    def close(self) -> None:
        self.closed = True


def test_report_fields_model_spec_and_cache_identity(cache: Path, monkeypatch) -> None:
    FakeBar.made.clear()
    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    spec = f"{Path(biased_models.__file__)}:factory"
    ev = run_evaluation(
        spec, cache, normalize=None, limit=6, progress=True, n_examples=3, recombine={"fg_scale_jitter": 0.1},
        **dict(FAST, size=(SIZE, SIZE + 8), methods=("input_x_gradient", "gradcam")),
    )  # fmt: skip
    r = ev.report
    assert r["model"]["spec"] == spec and r["model"]["source"] == "factory"
    assert (
        r["size"] == [SIZE, SIZE + 8]
        and r["split"] == "val"
        and r["methods"] == ["input_x_gradient", "gradcam"]
    )
    assert r["gradcam_layer"] == "window" and r["recombine"] == {"fg_scale_jitter": 0.1}
    assert r["n_classes"] == 4 and r["n_model_outputs"] == 4 and r["class_indices"] is None
    assert r["forcomp_version"] == forcomp.__version__
    ratios = cache / "fg_bg_ratios_val.json"
    assert r["cache"] == {
        "path": str(cache.resolve()),
        "split": "val",
        "n_items": N_ITEMS,
        "n_classes": 4,
        "classes": ["n00000001", "n00000002", "n00000003", "n00000004"],
        "ratios_sha256_16": hashlib.sha256(ratios.read_bytes()).hexdigest()[:16],
    }
    rt = r["runtime"]
    assert rt["device"] == "cpu" and rt["batch_size"] == 5 and rt["torch"] == torch.__version__
    assert rt["python"] == platform.python_version() and 0 < rt["seconds"] < 600
    json.dumps({k: v for k, v in r.items() if k != "chance"})  # JSON-ready (NaN allowed)
    (bar,) = FakeBar.made  # 2 batches x 20 conditions
    assert bar.kwargs == {"total": 40, "desc": "forcomp evaluate", "unit": "batch"}
    assert bar.updates == [1] * 40 and bar.closed
    ex = ev.examples
    assert (
        ex is not None and ex.images.shape == (3, 3, SIZE, SIZE + 8) and ex.classes == r["cache"]["classes"]
    )
    assert set(ex.maps) == {"input_x_gradient", "gradcam"}
    square = run_evaluation(biased_models.invariant(), cache, normalize=None, limit=2, **FAST).report
    assert len(FakeBar.made) == 1  # no bar without progress=True
    assert square["size"] == SIZE and square["gradcam_layer"] is None
    loaded = wrap_module(biased_models.invariant())
    assert evaluate(loaded, cache, normalize=None, limit=2, **FAST)["model"] == loaded.identity()


def test_example_picker_keeps_each_image_with_its_own_label_mask_and_map() -> None:
    picker = ExamplePicker(5)
    for labels in ([0, 0, 0, 0], [0, 1, 1, 2], [2, 2, 0, 1]):
        y = torch.tensor(labels)
        x = (y.float() + 0.5).view(-1, 1, 1, 1).expand(-1, 3, 2, 2) / 4
        mask = torch.zeros(4, 2, 2)
        mask[:, 0, 0] = 1
        maps = {"m": torch.ones(4, 2, 2) + y.float().view(-1, 1, 1) * mask}  # focus grows with the label
        picker.offer(x, y, mask, maps)
        assert len(picker.kept) <= 5
    ex = picker.examples(["a", "b", "c"])
    assert ex is not None and ex.labels.tolist() == [0, 1, 2, 0, 1] and ex.classes == ["a", "b", "c"]
    assert torch.equal(ex.images[:, 0, 0, 0], (ex.labels.float() + 0.5) / 4)
    assert torch.equal(ex.maps["m"][:, 0, 0], 1 + ex.labels.float()) and ex.masks.shape == (5, 2, 2)
    want = (1 + ex.labels.double()) / (4 + ex.labels.double()) * 4  # share of the map / share of the area
    torch.testing.assert_close(ex.focus["m"].double(), want)
    assert ExamplePicker(0).examples(["a"]) is None
    none = ExamplePicker(0)
    none.offer(x, y, mask, maps)
    assert none.kept == [] and ExamplePicker(3).examples(["a"]) is None
    one = ExamplePicker(1)
    one.offer(x, y, mask, maps)  # labels 2, 2, 0, 1: the first of class 0 is the smallest key
    assert one.examples(["a", "b", "c"]).labels.tolist() == [0]


def test_run_evaluation_defaults(cache: Path, monkeypatch) -> None:
    """The documented defaults: ImageNet normalisation for a model that declares none, batch 64, seed 0,
    no workers, no progress bar, 1000 resamples, 16 integrated-gradients steps, 6 examples, the model's
    own input size (as a timm model states it)."""
    seen: list[dict] = []
    original = ForComp.loader

    def loader(self, batch_size, **kwargs):
        seen.append(dict(kwargs, batch_size=batch_size))
        return original(self, batch_size, **kwargs)

    monkeypatch.setattr(ForComp, "loader", loader)
    model = biased_models.invariant()
    model.patch_embed = nn.Module()  # states its input size as a (non-strict) timm ViT does
    model.patch_embed.img_size = 40
    ev = run_evaluation(model, cache, limit=8, methods=("integrated_gradients",))
    r = ev.report
    assert r["size"] == 40 and r["seed"] == 0 and r["runtime"]["batch_size"] == 64
    assert r["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert r["bootstrap"]["resamples"] == 1000 and ev.examples is not None and len(ev.examples.labels) == 6
    assert len(seen) == 20 and all(s["num_workers"] == 0 and s["batch_size"] == 64 for s in seen)
    assert all(s["shuffle"] is False and s["device"] == torch.device("cpu") for s in seen)
    again = run_evaluation(model, cache, limit=8, methods=("integrated_gradients",), ig_steps=16, seed=0)
    ig = r["foreground_focus"]["methods"]["integrated_gradients"]["score"]
    assert again.report["foreground_focus"]["methods"]["integrated_gradients"]["score"] == ig
    fewer = run_evaluation(model, cache, limit=8, methods=("integrated_gradients",), ig_steps=2, bootstrap=5)
    assert fewer.report["foreground_focus"]["methods"]["integrated_gradients"]["score"] != ig
    assert fewer.report["bootstrap"]["resamples"] == 5 and run_evaluation(
        model, cache, limit=1, bootstrap=1, n_examples=0, num_workers=0, methods=("gradcam",),
        gradcam_layer="features",
    ).report["gradcam_layer"] == "features"  # fmt: skip
    seen.clear()
    run_evaluation(model, cache, limit=2, bootstrap=5, methods=("gradcam",), num_workers=1, batch_size=3)
    assert {s["num_workers"] for s in seen} == {1} and {s["batch_size"] for s in seen} == {3}


def test_recombine_settings_reach_every_condition_and_the_train_split_is_not_shuffled(
    tmp_path: Path, monkeypatch
) -> None:
    """Extra ForComp settings go to every condition's dataset (the first one included), and the train
    split, which the loader would shuffle by default, is read in item order too (pairing)."""
    cache = make_colour_cache(tmp_path / "train", per_class=2, split="train")
    made: list[dict] = []
    original = ForComp.__init__

    def init(self, *args, **kwargs):
        made.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ForComp, "__init__", init)
    model = Recorder(biased_models.invariant())
    r = evaluate(model, cache, split="train", normalize=None, recombine={"fg_scale_jitter": 0.05}, **FAST)
    assert len(made) == 20 and all(kw["fg_scale_jitter"] == 0.05 for kw in made)
    assert r["recombine"] == {"fg_scale_jitter": 0.05} and r["split"] == "train"
    seen = per_condition(model, 2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # item order: the cache's classes in turn
    colour = biased_models.invariant()
    for name in ("bg=orig", "bg=same", "bg=all", "size=1", "size=2"):
        assert torch.equal(colour(seen[name]).argmax(1), labels), name  # the object colours, in item order
    again = Recorder(biased_models.invariant())
    evaluate(again, cache, split="train", normalize=None, recombine={"fg_scale_jitter": 0.05}, **FAST)
    assert all(torch.equal(x, y) for x, y in zip(model.inputs, again.inputs, strict=True))  # reproducible


def test_model_specs_get_the_weights_options_and_sizes_are_checked(cache: Path, monkeypatch) -> None:
    import forcomp.metrics.prepare as prepare_mod
    from forcomp.models.classifiers import InputSizeError, LoadedModel

    calls: list[tuple] = []

    def load(spec, **kwargs):
        calls.append((spec, kwargs))
        return wrap_module(biased_models.invariant())

    monkeypatch.setattr(prepare_mod, "load_model", load)
    evaluate(
        "some:spec", cache, normalize=None, limit=2, weights_dir="/w", checkpoint_key="model_ema", **FAST
    )
    assert calls == [("some:spec", {"weights_dir": "/w", "checkpoint_key": "model_ema"})]
    fixed = LoadedModel(biased_models.invariant(), spec="fixed", source="module", fixed_size=(SIZE, SIZE))
    with pytest.raises(InputSizeError, match=f"only accepts {SIZE} px inputs"):
        evaluate(fixed, cache, **dict(FAST, size=SIZE + 8))
    assert evaluate(fixed, cache, normalize=None, limit=2, **dict(FAST, size=None))["size"] == SIZE
    for kwargs, message in (
        ({"limit": 0}, "limit must be"),
        ({"size": 4}, r"^size must be an int >= 8 or \(h, w\), got 4$"),
        ({"bootstrap": 0}, "boot"),
    ):
        with pytest.raises(ValueError, match=message):
            evaluate(biased_models.invariant(), cache, **{**FAST, **kwargs})
    assert (
        evaluate(biased_models.invariant(), cache, normalize=None, limit=2, **dict(FAST, bootstrap=1))[
            "bootstrap"
        ]["resamples"]
        == 1
    )


def test_example_picker_skips_only_the_items_that_do_not_fit() -> None:
    picker = ExamplePicker(2)
    mask = torch.ones(3, 2, 2)
    picker.offer(torch.zeros(3, 3, 2, 2), torch.tensor([0, 0, 0]), mask, {"m": mask})
    picker.offer(torch.ones(2, 3, 2, 2), torch.tensor([0, 1]), mask[:2], {"m": mask[:2]})
    assert picker.examples(["a", "b"]).labels.tolist() == [0, 1]  # the class-1 image after a skipped one


def test_evaluate_passes_its_arguments_and_has_the_documented_defaults(cache: Path, monkeypatch) -> None:
    seen: list[dict] = []
    original = ForComp.loader

    def loader(self, batch_size, **kwargs):
        seen.append(dict(kwargs, batch_size=batch_size))
        return original(self, batch_size, **{**kwargs, "num_workers": 0})  # workers: recorded, not started

    monkeypatch.setattr(ForComp, "loader", loader)
    FakeBar.made.clear()
    monkeypatch.setattr("tqdm.auto.tqdm", FakeBar)
    model = biased_models.invariant()
    r = evaluate(model, cache, size=SIZE, limit=2, methods=("input_x_gradient",), bootstrap=5)
    assert r["runtime"]["batch_size"] == 64 and r["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert r["seed"] == 0
    assert {s["num_workers"] for s in seen} == {0} and FakeBar.made == []
    seen.clear()
    evaluate(model, cache, limit=2, num_workers=2, progress=True, device="cpu", normalize=None, **FAST)
    assert {s["num_workers"] for s in seen} == {2} and len(FakeBar.made) == 1


def test_example_picker_round_robin_across_batches() -> None:
    picker = ExamplePicker(5)
    for labels in ([0, 0, 0, 0], [0, 1, 1, 2], [2, 2, 0, 1]):
        y = torch.tensor(labels)
        x = y.float().view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        picker.offer(x, y, torch.ones(4, 2, 2), {"m": torch.ones(4, 2, 2)})
        assert len(picker.kept) <= 5  # never holds more than it shows
    ex = picker.examples(["a", "b", "c"])
    assert ex is not None and ex.labels.tolist() == [0, 1, 2, 0, 1]
