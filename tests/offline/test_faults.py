"""Builds under faults: concurrent shards, file-size limits, a killed worker, odd sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scenes import make_imagefolder

from forcomp.cache.index import IndexRecord, IndexWriter, read_index, scan_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.verify import verify_cache
from forcomp.cli import main
from forcomp.offline.config import BuildConfig
from forcomp.offline.entry import build_cache

FAST = dict(split="val", segmenter="classical", inpainter="telea")


def _cli(source: Path, cache: Path, *extra: str) -> list[str]:
    return ["build", str(source), str(cache), "--quiet", "--split", "val", "--segmenter", "classical",
            "--inpainter", "telea", *extra]  # fmt: skip


def _run_python(code: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def _ok_keys(cache: Path) -> set[str]:
    return {k for k, r in read_index(CacheLayout(cache, "val")).items() if r.status == "ok"}


def _ratios(cache: Path) -> dict[str, float]:
    return json.loads((cache / "fg_bg_ratios_val.json").read_text())


# --- concurrent shards --------------------------------------------------------------------------

_SHARDS_DRIVER = """
import json, multiprocessing as mp, random, sys, time
from pathlib import Path
import forcomp.offline.entry as entry
from forcomp.cache.index import IndexWriter, read_index
from forcomp.cache.layout import CacheLayout
from forcomp.offline.config import BuildConfig

source, root, reps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
real_write, real_append = entry.atomic_write_bytes, IndexWriter.append

def shard(i, cache, barrier, early):
    # Widen the race: the "early" shard lingers between reading the index and writing the ratios
    # from it, while the other shard's records arrive a little later than its own.
    def slow_write(path, data, **kw):
        if path.name.startswith("fg_bg_ratios"):
            time.sleep(random.uniform(0.35, 0.7) if early else random.uniform(0.0, 0.05))
        real_write(path, data, **kw)

    def slow_append(self, records):
        time.sleep(0.0 if early else random.uniform(0.05, 0.15))
        real_append(self, records)

    random.seed()
    entry.atomic_write_bytes, IndexWriter.append = slow_write, slow_append
    barrier.wait()
    cfg = BuildConfig(split="val", segmenter="classical", inpainter="telea", batch_size=1, shard=(i, 2))
    entry.build_cache(source, cache, cfg)

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    lost = []
    for rep in range(reps):
        cache = root / f"cache{rep}"
        barrier = ctx.Barrier(2)
        early = random.randrange(2)
        procs = [ctx.Process(target=shard, args=(i, cache, barrier, i == early)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
        ok = {k for k, r in read_index(CacheLayout(cache, "val")).items() if r.status == "ok"}
        ratios = json.loads((cache / "fg_bg_ratios_val.json").read_text())
        if set(ratios) != ok:
            lost.append(sorted(ok - set(ratios)))
    print(json.dumps({"reps": reps, "lost": lost, "ok": len(ok)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks; fcntl locks")
def test_concurrent_shards_always_end_with_complete_ratios(tmp_path: Path) -> None:
    source = make_imagefolder(tmp_path / "src", per_class=2)
    driver = tmp_path / "driver.py"
    driver.write_text(_SHARDS_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), str(source), str(tmp_path), "20"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] == 6
    assert out["lost"] == [], f"ratios lost items in {len(out['lost'])} of {out['reps']} runs: {out['lost']}"


# --- file-size limits and short writes ----------------------------------------------------------


def _limited_build(source: Path, cache: Path, limit: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """``forcomp build`` in a process whose files may not grow past ``limit`` bytes (``ulimit -f``)."""
    return _run_python(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from forcomp.cli import main
        sys.exit(main({_cli(source, cache, *extra)!r}))
        """
    )


def _assert_clean_rerun(source: Path, cache: Path, n: int) -> None:
    assert main(_cli(source, cache)) == 0
    assert verify_cache(cache) == []
    assert len(_ok_keys(cache)) == n
    assert set(_ratios(cache)) == _ok_keys(cache)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_size_limit_hit_by_an_image_write_fails_those_items(tmp_path: Path) -> None:
    source = make_imagefolder(tmp_path / "src", per_class=1, size=(480, 360))  # backgrounds ~50 kB
    cache = tmp_path / "cache"
    proc = _limited_build(source, cache, 20_000)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ok: 0   no object: 0   errors: 3" in proc.stdout
    for cls in ("n00000001", "n00000002", "n00000003"):
        assert f"error: {source / cls / 'img0.jpg'}: cannot write cache files: " in proc.stdout
    assert "File too large" in proc.stdout
    assert not any((cache / ".tmp").iterdir())  # the failed temporary files are gone
    _assert_clean_rerun(source, cache, 3)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_size_limit_hit_by_the_index_stops_the_build_without_a_partial_line(tmp_path: Path) -> None:
    source = make_imagefolder(tmp_path / "src", per_class=8)  # 24 items, index ~9 kB, images < 4 kB
    cache = tmp_path / "cache"
    proc = _limited_build(source, cache, 5_000, "--batch-size", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    failed = [ln for ln in lines if "its index record could not be written" in ln]
    assert len(failed) == 1 and "File too large" in failed[0] and str(source) in failed[0]
    assert any(
        "stopped early: cannot write the index file" in ln and "rerun the same command" in ln for ln in lines
    )
    layout = CacheLayout(cache, "val")
    records, problems = scan_index(layout)
    assert problems == []
    assert all(p.read_bytes().endswith(b"\n") for p in layout.index_dir.glob("*.jsonl"))
    ok = _ok_keys(cache)
    assert 5 <= len(ok) < 24
    assert set(_ratios(cache)) == ok  # the ratios file still matches what the index holds
    _assert_clean_rerun(source, cache, 24)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_size_limit_hit_by_the_ratios_file_keeps_the_previous_one(tmp_path: Path) -> None:
    source = make_imagefolder(tmp_path / "src", per_class=4)
    cache = tmp_path / "cache"
    assert main(_cli(source, cache)) == 0
    ratios_path = cache / "fg_bg_ratios_val.json"
    stale = dict(list(_ratios(cache).items())[1:])  # a file a later write must bring up to date
    ratios_path.write_text(json.dumps(stale))
    before = ratios_path.read_bytes()
    assert len(before) > 300
    proc = _limited_build(source, cache, 300)  # every item is done: only the ratios file is written
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"problem: cannot write {ratios_path} (File too large); the previous file is kept" in proc.stdout
    assert ratios_path.read_bytes() == before
    assert not any((cache / ".tmp").iterdir())  # no temporary file left behind
    _assert_clean_rerun(source, cache, 12)


def test_index_writer_cuts_a_failed_append_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = CacheLayout(tmp_path / "cache", "val")
    rec = IndexRecord(key="c/a.JPEG", cls="c", stem="a", label=0, source="/x/a.jpg", status="ok")
    writes = []

    def short_then_fail(fd: int, data: bytes) -> int:
        writes.append(len(data))
        if len(writes) == 1:
            return real_write(fd, data[:10])  # a short write, then the disk is full
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    real_write = os.write
    with IndexWriter(layout) as index:
        index.append([rec])
        monkeypatch.setattr(os, "write", short_then_fail)
        with pytest.raises(OSError, match="No space left"):
            index.append([rec])
        monkeypatch.undo()
        good = index.path.read_bytes()
        assert good == (rec.to_json() + "\n").encode()
        index.append([rec])
    assert index.path.read_bytes() == good * 2


# --- a killed worker ----------------------------------------------------------------------------


def _children(pid: int) -> list[tuple[int, bytes]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat, cmd = (d / "stat").read_text(), (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append((int(d.name), cmd))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("victims", ["one worker", "every child"])
def test_a_killed_worker_ends_the_build_with_a_clear_message(tmp_path: Path, victims: str) -> None:
    source = make_imagefolder(tmp_path / "src", per_class=12, size=(480, 360))
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "forcomp", *_cli(source, cache, "--workers", "2", "--batch-size", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    index_dir = cache / "val" / "index"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            workers = [pid for pid, c in kids if b"spawn_main" in c]
            done = (
                sum(p.read_bytes().count(b"\n") for p in index_dir.glob("*.jsonl"))
                if index_dir.is_dir()
                else 0
            )
            if len(workers) >= 2 and done >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before a worker could be killed: make it slower"
        # "every child" takes multiprocessing's resource tracker too (as `pkill -9 -P <build>` does)
        for pid in workers[:1] if victims == "one worker" else [pid for pid, _ in kids]:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err and "KeyError" not in err, err
    assert "a build worker process died" in out and "rerun the same command to finish" in out
    assert "while processing it" in out  # the items in flight are named
    assert "__main__" not in out + err  # not the hint for a script without the guard
    _assert_clean_rerun(source, cache, 36)


# --- progress bar -------------------------------------------------------------------------------


class RecordingBar:
    """Stands in for ``tqdm.auto.tqdm`` (a real bar's monitor thread hangs forked test runs).

    Models tqdm's drawing: ``set_postfix(refresh=False)`` only stores, ``update`` redraws with the
    stored postfix; ``shown`` records every drawn ``(n, postfix)``.
    """

    def __init__(self, **kwargs: object) -> None:
        self.n, self.postfix, self.shown, self.closed = 0, {}, [], False

    def set_postfix(self, refresh: bool = True, **kw: object) -> None:
        self.postfix = dict(kw)
        if refresh:
            self.shown.append((self.n, dict(self.postfix)))

    def update(self, n: int) -> None:
        self.n += n
        self.shown.append((self.n, dict(self.postfix)))

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_postfix_counts_every_finished_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    bars: list[RecordingBar] = []
    monkeypatch.setattr("tqdm.auto.tqdm", lambda **kw: bars.append(RecordingBar(**kw)) or bars[-1])
    source = make_imagefolder(tmp_path / "src", per_class=2)
    blank = source / "n00000002" / "blank.png"
    Image.fromarray(np.full((72, 96, 3), 128, np.uint8)).save(blank)
    s = build_cache(
        source, tmp_path / "cache", BuildConfig(**FAST, batch_size=2, workers=workers), progress=True
    )
    (bar,) = bars
    assert bar.closed and bar.n == s.total == 7
    final = {"ok": s.ok, "no_obj": s.no_object, "err": len(s.errors)}
    assert bar.shown[-1] == (7, final)
    assert s.no_object >= 1
    # every drawn state is exact: each count equals the items behind n
    assert all(sum(p.values()) == n for n, p in bar.shown)


# --- sources ------------------------------------------------------------------------------------


def test_a_class_with_no_object_in_any_image_keeps_its_label(tmp_path: Path) -> None:
    from forcomp.cache.reader import CacheReader

    source = make_imagefolder(tmp_path / "src", classes=("n00000001", "n00000003"), per_class=2)
    (source / "n00000002").mkdir()
    for i in range(2):
        Image.fromarray(np.full((72, 96, 3), 100 + 40 * i, np.uint8)).save(
            source / "n00000002" / f"blank{i}.png"
        )
    cache = tmp_path / "cache"
    s = build_cache(source, cache, BuildConfig(**FAST))
    assert s.exit_code == 0 and s.no_object == 2 and s.ok == 4
    assert CacheReader(cache, "val").classes == ["n00000001", "n00000002", "n00000003"]
    assert build_cache(source, cache, BuildConfig(**FAST)).exit_code == 0  # idempotent
    assert CacheReader(cache, "val").classes == ["n00000001", "n00000002", "n00000003"]
    try:
        from forcomp import ForComp

        ds = ForComp(cache, split="val", size=None)
    except (ImportError, AttributeError) as e:  # pragma: no cover - the loader is optional here
        pytest.skip(f"ForComp unavailable: {e}")
    assert ds.classes == ["n00000001", "n00000002", "n00000003"]


def test_a_dataset_root_with_split_folders_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    make_imagefolder(imgs / "train", per_class=1)
    make_imagefolder(imgs / "val", per_class=1)
    cache = tmp_path / "cache"
    assert main(["build", str(imgs), str(cache), "--split", "train", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"source {imgs} holds split folders (train, val), not class folders" in err
    assert f"`forcomp build {imgs / 'train'} {cache} --split train`" in err
    assert not cache.exists()  # refused before any work


def test_a_source_without_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    for cls in ("cat", "dog"):
        (src / cls).mkdir(parents=True)
        (src / cls / "notes.txt").write_text("no image here")
    assert main(["build", str(src), str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"source {src} has 2 class folder(s) (cat, dog) but no image file in them" in err
    assert "Traceback" not in err
