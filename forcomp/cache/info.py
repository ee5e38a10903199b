"""``forcomp info``: what a cache holds, what failed and why, and what produced it."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from forcomp.cache.index import read_index
from forcomp.cache.layout import CacheLayout
from forcomp.cache.reader import CacheReader
from forcomp.cache.verify import splits_present
from forcomp.errors import CacheFormatError


def cache_info(cache: str | os.PathLike[str]) -> dict[str, Any]:
    """Per split: item counts by status and class, failures with reasons, backends and builds."""
    cache = Path(cache)
    out: dict[str, Any] = {"cache": str(cache), "splits": {}}
    for split in splits_present(cache):
        layout = CacheLayout(cache, split)
        index = read_index(layout)
        reader: CacheReader | None = None
        unreadable: str | None = None
        try:
            reader = CacheReader(cache, split)
        except CacheFormatError as e:
            unreadable = str(e)
        per_class: dict[str, Counter[str]] = {}
        if index:
            status = Counter(r.status for r in index.values())
            for r in index.values():
                per_class.setdefault(r.cls, Counter())[r.status] += 1
        else:  # a ForNet release (folders or zips): the files are all there is to count
            status = Counter({"ok": len(reader.fg)} if reader is not None else {})
            if reader is not None:
                for c in reader.classes:
                    per_class[c] = Counter()
                for label in reader.fg.labels.tolist():
                    per_class[reader.classes[label]]["ok"] += 1
        builds = []
        if layout.index_dir.is_dir():
            for p in sorted(layout.index_dir.glob("build-*.json")):
                try:
                    builds.append(json.loads(p.read_text()))
                except ValueError:
                    continue
        out["splits"][split] = {
            "form": reader.mode if reader is not None else None,
            "foregrounds": len(reader.fg) if reader is not None else 0,
            "backgrounds": len(reader.bg) if reader is not None else 0,
            "problems": [str(p) for p in reader.problems] if reader is not None else [],
            "unreadable": unreadable,
            "items": len(index) if index else sum(status.values()),
            "status": dict(status),
            "classes": {c: dict(v) for c, v in sorted(per_class.items())},
            "failures": [
                {"source": r.source, "status": r.status, "message": r.message}
                for r in sorted(index.values(), key=lambda r: r.key)
                if r.status != "ok"
            ],
            "produced_by": sorted(
                {
                    f"{r.segmenter}[{r.segmenter_weights or 'no weights'}] + "
                    f"{r.inpainter}[{r.inpainter_weights or 'no weights'}]"
                    for r in index.values()
                    if r.segmenter
                }
            ),
            "builds": [
                {
                    "forcomp_version": b.get("forcomp_version"),
                    "source": b.get("source"),
                    "config": b.get("config"),
                }
                for b in builds
            ],
        }
    return out


def format_info(info: dict[str, Any]) -> str:
    lines = [f"cache {info['cache']}"]
    if not info["splits"]:
        lines.append("  no splits found")
    for split, s in info["splits"].items():
        st = s["status"]
        if s["unreadable"]:
            lines.append(f"[{split}] cannot be read: {s['unreadable']}")
        form = {"zip": "a release in zips", "folder": "folders"}.get(s["form"] or "", "?")
        lines.append(
            f"[{split}] {s['items']} items: ok {st.get('ok', 0)}, no object {st.get('no_object', 0)}, "
            f"errors {st.get('error', 0)}; "
            f"{len(s['classes'])} classes; {s['foregrounds']} foregrounds, {s['backgrounds']} backgrounds "
            f"({form})"
        )
        if s["problems"]:
            lines.append(f"  {len(s['problems'])} file(s) left out (run forcomp verify for the list)")
        for cls, c in s["classes"].items():
            lines.append(f"  {cls}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        for p in s["produced_by"]:
            lines.append(f"  produced by: {p}")
        for b in s["builds"]:
            cfg = b.get("config") or {}
            lines.append(
                f"  build: forcomp {b.get('forcomp_version')} from {b.get('source')} shard {cfg.get('shard')}"
            )
        if s["failures"]:
            lines.append("  failures:")
            lines += [f"    {f['status']}: {f['source']}: {f['message']}" for f in s["failures"]]
    return "\n".join(lines)
