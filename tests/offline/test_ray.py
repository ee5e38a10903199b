"""The Ray engine writes the same cache as the local engine, and resumes the same way.

One local Ray (2 CPUs) serves the whole module; skipped, with the reason, only if Ray cannot start.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from scenes import make_imagefolder, synthetic_scene

from forcomp.cache.index import IndexRecord, read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.verify import verify_cache
from forcomp.cli import main
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    # Ray Data's own DataContext warns about its deprecated fields on every run; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

BACKENDS = dict(segmenter="classical", inpainter="telea")


def _start_local_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        pytest.skip(f"Ray is not installed ({e}); pip install 'forcomp[ray]'")
    if ray.is_initialized():
        pytest.skip("a Ray is already initialised in this process; these tests need their own")
    try:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as e:  # any start-up failure means "cannot test here", said loudly
        reason = f"Ray cannot start here: {type(e).__name__}: {e}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    return ray


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    """A private local Ray on 127.0.0.1 (never a cluster from $RAY_ADDRESS), shut down after the module."""
    with pytest.MonkeyPatch.context() as mp:
        # Ray reads this at import: its servers then listen on loopback only, not on every interface.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = _start_local_ray()
        try:
            gcs = ray.get_runtime_context().gcs_address
            assert gcs.startswith("127.0.0.1:"), f"the test Ray must listen on loopback only, got {gcs}"
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 2 tiny images, plus one empty file that both engines must record as an error."""
    src = make_imagefolder(tmp_path_factory.mktemp("ray_src") / "source", per_class=2)
    (src / "n00000002" / "broken.jpg").write_bytes(b"")
    return src


@pytest.fixture(scope="module")
def local_cache(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("ray_local") / "cache"
    s = build_cache(source, cache, BuildConfig(split="val", batch_size=2, **BACKENDS))
    assert s.ok == 6 and len(s.errors) == 1, s.format()
    return cache


@pytest.fixture(scope="module")
def ray_cache(ray_session: Any, source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    cache = tmp_path_factory.mktemp("ray_ray") / "cache"
    cfg = BuildConfig(split="val", batch_size=2, engine="ray", ray_concurrency=2, **BACKENDS)
    return cache, build_cache(source, cache, cfg)


def _files(cache: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(cache)): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and p.suffix in (".WEBP", ".JPEG")
    }


def _stamps(cache: Path) -> dict[Path, tuple[int, int]]:
    return {
        p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in cache.rglob("*") if p.suffix in (".WEBP", ".JPEG")
    }


def _records(cache: Path, split: str = "val") -> dict[str, dict[str, Any]]:
    """The merged index without the per-run timestamp."""
    out = {}
    for key, rec in read_index(CacheLayout(cache, split)).items():
        d = json.loads(rec.to_json())
        del d["time"]
        out[key] = d
    return out


def assert_same_cache(a: Path, b: Path, split: str = "val") -> None:
    assert _records(a, split) == _records(b, split)
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b) and len(files_a) == 12
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"
    ratios = f"fg_bg_ratios_{split}.json"
    assert json.loads((a / ratios).read_text()) == json.loads((b / ratios).read_text())
    assert (a / ratios).read_bytes() == (b / ratios).read_bytes()


def test_ray_build_matches_local(ray_session, local_cache, ray_cache):
    cache, summary = ray_cache
    assert (summary.ok, summary.no_object, summary.skipped) == (6, 0, 0), summary.format()
    assert len(summary.errors) == 1
    assert summary.errors[0][0].endswith("broken.jpg") and "0 bytes" in summary.errors[0][1]
    assert (summary.segmenter, summary.inpainter) == ("classical", "telea")
    assert_same_cache(local_cache, cache)
    assert verify_cache(cache) == []
    assert ray_session.is_initialized(), "run_ray must not shut down a Ray it did not start"
    prov = [json.loads(p.read_text()) for p in (cache / "val" / "index").glob("build-*.json")]
    assert [p["config"]["engine"] for p in prov] == ["ray"]


def test_cli_ray_matches_local_cli(ray_session, source, tmp_path, monkeypatch):
    """Relative paths, as typed on a command line: the actors must resolve them like the driver."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(source, "src")
    common = ["src", "--split", "val", "--segmenter", "classical", "--inpainter", "telea", "--quiet"]
    rc_local = main(["build", common[0], "local_cache", *common[1:], "--batch-size", "2"])
    rc_ray = main(["build", common[0], "ray_cache", *common[1:], "--batch-size", "3", "--engine", "ray",
                   "--concurrency", "2"])  # fmt: skip
    assert rc_local == rc_ray == 1, "one broken file: finished with failures"
    assert_same_cache(Path("local_cache"), Path("ray_cache"))
    assert main(["verify", "ray_cache"]) == 0
    rec = read_index(CacheLayout(Path("ray_cache"), "val"))["n00000001/img0.JPEG"]
    assert rec.source == str((tmp_path / "src" / "n00000001" / "img0.jpg").resolve()), "absolute in the index"


def test_resume_on_ray(ray_session, ray_cache, tmp_path):
    built, _ = ray_cache
    cache = tmp_path / "cache"
    shutil.copytree(built, cache)
    source = Path(read_index(CacheLayout(cache, "val"))["n00000001/img0.JPEG"].source).parent.parent
    cfg = BuildConfig(split="val", batch_size=2, engine="ray", ray_concurrency=2, **BACKENDS)
    before = _stamps(cache)

    # 1) nothing to do except the failed file, which is retried (and fails again); no image file written
    s = build_cache(source, cache, cfg)
    assert (s.skipped, s.ok, len(s.errors)) == (6, 0, 1), s.format()
    assert _stamps(cache) == before

    # 2) forget one item's record: only that item is processed, the others' files are untouched
    lost = "n00000003/img1.JPEG"
    for path in (cache / "val" / "index").glob("*.jsonl"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(ln for ln in lines if IndexRecord.from_dict(json.loads(ln)).key != lost))
    old_bytes = _files(cache)
    s = build_cache(source, cache, cfg)
    assert (s.skipped, s.ok) == (5, 1), s.format()
    after = _stamps(cache)
    changed = {p.relative_to(cache).as_posix() for p in after if after[p] != before[p]}
    assert changed == {"val/foregrounds/n00000003/img1.WEBP", "val/backgrounds/n00000003/img1.JPEG"}
    assert _files(cache) == old_bytes, "the redone item is byte-identical"

    # 3) a new image is picked up, and only it (and the failed file) is processed
    new_src = tmp_path / "src"
    shutil.copytree(source, new_src)
    Image.fromarray(synthetic_scene("n00000001", 7)).save(new_src / "n00000001" / "new.jpg")
    s = build_cache(new_src, cache, cfg)
    assert (s.skipped, s.ok, len(s.errors)) == (6, 1, 1), s.format()
    assert "n00000001/new.JPEG" in read_index(CacheLayout(cache, "val"))
    assert verify_cache(cache) == []


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    from forcomp.offline.entry import plan
    from forcomp.offline.pipeline import BuildSummary
    from forcomp.offline.ray_engine import run_ray

    source = make_imagefolder(tmp_path / "src", classes=("n00000001",), per_class=1)
    cfg = BuildConfig(split="val", engine="ray", **BACKENDS)
    layout, _, todo = plan(source, tmp_path / "cache", cfg)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes "import ray" raise ImportError
    with pytest.raises(ImportError, match=r"forcomp\[ray\]"):
        run_ray(todo, layout, cfg, BuildSummary(split="val"))


def test_gpu_actors_fail_fast_without_gpus():
    from types import SimpleNamespace

    from forcomp.errors import ForcompError
    from forcomp.offline.ray_engine import _pool_size

    def fake(gpus: float) -> Any:
        return SimpleNamespace(cluster_resources=lambda: {"CPU": 8.0, "GPU": gpus})

    cfg = BuildConfig(engine="ray", ray_concurrency=4, ray_num_gpus_per_worker=1)
    with pytest.raises(ForcompError, match="--device cpu"):
        _pool_size(fake(0), cfg, 1.0, 100, local=True)
    assert _pool_size(fake(2), cfg, 1.0, 100, local=True) == 2, "a local Ray: as many actors as GPUs"
    assert _pool_size(fake(0), cfg, 1.0, 100, local=False) == 4, "a cluster may autoscale: wait"
    assert _pool_size(fake(8), cfg, 1.0, 3, local=True) == 3, "no more actors than blocks"
