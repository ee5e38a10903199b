"""The local engine's worker processes: they die with the build process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scenes import make_imagefolder


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc; zombies count as gone)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _index_lines(cache: Path) -> int:
    d = cache / "val" / "index"
    return sum(p.read_bytes().count(b"\n") for p in d.glob("*.jsonl")) if d.is_dir() else 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_build_process_is_killed(tmp_path):
    source = make_imagefolder(tmp_path / "src", per_class=20, size=(480, 360))
    cache = tmp_path / "cache"
    script = tmp_path / "build_it.py"
    script.write_text(
        "from forcomp import BuildConfig, build_cache\n"
        'if __name__ == "__main__":\n'
        f"    build_cache({str(source)!r}, {str(cache)!r}, "
        "BuildConfig(split='val', workers=2, batch_size=1, segmenter='classical', inpainter='telea'))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            # two workers started and at least one result back: the pool is up and busy
            workers = _children(proc.pid)
            if len(workers) >= 2 and _index_lines(cache) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be killed: make it slower"
        assert len(workers) >= 2, f"workers did not start: {workers}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 6  # workers check for their parent about once a second
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"worker processes {left} outlived the killed build"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
