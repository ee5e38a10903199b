"""``auto`` and the loaders check that weights are really there: weight files, not only a config, and
no git-lfs pointer files in place of the real ones."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_models import GDINO_DIR, LAMA_FILE, SAM_FILE, SD_DIR, weights_with  # noqa: E402

from forcomp.errors import WeightsNotFoundError  # noqa: E402
from forcomp.offline.backends import resolve_backends  # noqa: E402
from forcomp.offline.config import BuildConfig  # noqa: E402
from forcomp.offline.inpainters import INPAINTERS  # noqa: E402
from forcomp.offline.segmenters import SEGMENTERS  # noqa: E402
from forcomp.weights import diffusers_dir_problems, hf_model_dir_problems, is_lfs_pointer  # noqa: E402

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4b8939a88964f0f4ff5f5b2642c598a6c4e3b3c0c3f5b8b6f1e4c1c9a2b1f0aa\n"
    "size 2564550879\n"
)


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src.resolve(), dst)
    return dst


def test_lfs_pointer_detected(tmp_path):
    (tmp_path / "a.pt").write_text(POINTER)
    (tmp_path / "b.pt").write_bytes(b"\x80\x02" + bytes(2000))
    assert is_lfs_pointer(tmp_path / "a.pt") and not is_lfs_pointer(tmp_path / "b.pt")
    assert not is_lfs_pointer(tmp_path / "missing.pt")


def test_auto_skips_lfs_pointers_and_says_how_to_fetch(tmp_path_factory, tmp_path, caplog):
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    (w / LAMA_FILE).write_text(POINTER)  # cloned without git-lfs
    with caplog.at_level(logging.WARNING, logger="forcomp.offline.registry"):
        assert INPAINTERS.resolve("auto", w).name == "telea"
    assert "git lfs pull" in caplog.text and LAMA_FILE in caplog.text
    # asked for by name: the build fails before any work, saying what to run
    with pytest.raises(WeightsNotFoundError, match=r"big-lama\.pt: it is a git-lfs pointer.*git lfs pull"):
        resolve_backends(BuildConfig(weights_dir=str(w), segmenter="sam", inpainter="lama"))
    with pytest.raises(WeightsNotFoundError, match="git lfs pull"):
        INPAINTERS.build("lama", weights_dir=w, device="cpu")
    (w / "sam_vit_h_4b8939.pth").write_text(POINTER)  # the largest SAM is a pointer: the next one is used
    assert SEGMENTERS.build("sam", weights_dir=w, device="cpu").weights_id == SAM_FILE


def test_auto_needs_detector_weights_not_only_config(tmp_path_factory, tmp_path, caplog):
    w = weights_with(tmp_path_factory, tmp_path / "w", SAM_FILE)
    shared = weights_with(tmp_path_factory, tmp_path / "shared", GDINO_DIR)
    det = _copy_tree(shared / GDINO_DIR, w / GDINO_DIR)
    assert SEGMENTERS.resolve("auto", w).name == "grounded-sam"
    (det / "model.safetensors").unlink()  # a folder with config.json but no weights
    assert hf_model_dir_problems(det) and "has no weights" in hf_model_dir_problems(det)[0]
    with caplog.at_level(logging.WARNING, logger="forcomp.offline.registry"):
        assert SEGMENTERS.resolve("auto", w).name == "sam", "falls back instead of failing at build"
    assert "grounded-sam" in caplog.text and "has no weights" in caplog.text
    (det / "model.safetensors").write_text(POINTER)
    assert SEGMENTERS.resolve("auto", w).name == "sam"
    with pytest.raises(WeightsNotFoundError, match=r"model\.safetensors: it is a git-lfs pointer"):
        SEGMENTERS.build("grounded-sam", weights_dir=w, device="cpu")


def test_auto_needs_pipeline_weights_not_only_model_index(tmp_path_factory, tmp_path):
    shared = weights_with(tmp_path_factory, tmp_path / "shared", SD_DIR)
    w = tmp_path / "w"
    sd = _copy_tree(shared / SD_DIR, w / SD_DIR)
    assert INPAINTERS.resolve("auto", w).name == "sd" and diffusers_dir_problems(sd) == []
    unet = next((sd / "unet").glob("*.safetensors"))
    unet.write_text(POINTER)
    problems = diffusers_dir_problems(sd)
    assert len(problems) == 1 and "unet" in problems[0] and "git lfs pull" in problems[0]
    assert INPAINTERS.resolve("auto", w).name == "telea"
    unet.unlink()
    assert "no .safetensors weights" in diffusers_dir_problems(sd)[0]
    shutil.rmtree(sd / "vae")
    assert any("'vae'" in p for p in diffusers_dir_problems(sd))
    # only model_index.json: not a pipeline
    only = w / "stable-diffusion-xl-1.0-inpainting-0.1"
    only.mkdir()
    (only / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    assert INPAINTERS.resolve("auto", w).name == "telea"


def test_auto_is_resolved_once_per_build_and_the_engine_gets_the_names(tmp_path, monkeypatch):
    """One resolution per build (the CLI's, passed in, or build_cache's own); workers never see auto."""
    from scenes import make_imagefolder

    from forcomp.offline import engines
    from forcomp.offline.entry import build_cache
    from forcomp.offline.registry import Registry

    resolved: list[tuple[str, str]] = []
    real_resolve = Registry.resolve

    def counting(self, name, weights_dir):
        resolved.append((self.stage, name))
        return real_resolve(self, name, weights_dir)

    seen: list[tuple[str, str]] = []
    real_run = engines.run_local

    def run_local(todo, layout, config, summary, **kw):
        seen.append((config.segmenter, config.inpainter))
        return real_run(todo, layout, config, summary, **kw)

    monkeypatch.setattr(Registry, "resolve", counting)
    monkeypatch.setattr("forcomp.offline.entry.run_local", run_local)
    src = make_imagefolder(tmp_path / "src", per_class=1)
    cfg = BuildConfig(split="val", weights_dir=str(tmp_path / "empty"), device="cpu")
    summary = build_cache(src, tmp_path / "cache", cfg)
    assert summary.ok + summary.no_object == 3
    assert seen == [("classical", "telea")]
    assert resolved.count(("segmenter", "auto")) == 1 and resolved.count(("inpainter", "auto")) == 1
    resolved.clear()
    build_cache(src, tmp_path / "cache2", cfg, backends={"segmenter": "classical", "inpainter": "telea"})
    assert ("segmenter", "auto") not in resolved and ("inpainter", "auto") not in resolved
