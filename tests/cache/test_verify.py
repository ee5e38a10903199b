"""``verify`` finds every kind of damage; ``info`` reports what the cache holds."""

from __future__ import annotations

import shutil

import pytest

from forcomp.cache.info import cache_info, format_info
from forcomp.cache.layout import CacheLayout
from forcomp.cache.verify import verify_cache


def test_sound_cache_verifies(built_cache):
    assert verify_cache(built_cache[1]) == []


def test_truncated_foreground(cache_copy):
    fg = CacheLayout(cache_copy, "val").fg_path("n00000002", "img1")
    fg.write_bytes(fg.read_bytes()[:40])
    problems = verify_cache(cache_copy)
    assert len(problems) == 1 and "img1.WEBP" in problems[0].path and "decode" in problems[0].message


def test_missing_background(cache_copy):
    CacheLayout(cache_copy, "val").bg_path("n00000003", "img2").unlink()
    problems = verify_cache(cache_copy)
    assert [p.message for p in problems] == ["missing background file"]


def test_wrong_size_and_orphan_and_ratio(cache_copy):
    from PIL import Image

    layout = CacheLayout(cache_copy, "val")
    Image.new("RGB", (10, 10)).save(layout.bg_path("n00000001", "img0"), "JPEG")
    shutil.copy(layout.fg_path("n00000001", "img1"), layout.fg_dir / "n00000001" / "stray.WEBP")
    txt = layout.ratios_path.read_text().replace('"n00000002/img0.JPEG": 0.', '"n00000002/img0.JPEG": 0.9')
    layout.ratios_path.write_text(txt)
    msgs = "\n".join(str(p) for p in verify_cache(cache_copy))
    assert "size 10x10 != source size" in msgs
    assert "stray.WEBP: foreground file has no 'ok' index record" in msgs
    assert "n00000002/img0.JPEG: ratio" in msgs


def test_stale_temp_file_reported(cache_copy):
    (cache_copy / ".tmp").mkdir(exist_ok=True)
    (cache_copy / ".tmp" / "x.WEBP.forcomp-tmp.host.1.ab").write_bytes(b"half")
    assert any("interrupted build" in p.message for p in verify_cache(cache_copy))


def test_info_counts(built_cache):
    info = cache_info(built_cache[1])
    val = info["splits"]["val"]
    assert val["items"] == 9 and val["status"] == {"ok": 9}
    assert set(val["classes"]) == {"n00000001", "n00000002", "n00000003"}
    assert val["produced_by"] == ["classical[no weights] + telea[no weights]"]
    assert "[val] 9 items: ok 9" in format_info(info)


def test_index_entry_cannot_point_outside_the_cache(cache_copy, tmp_path):
    from forcomp.cache.index import IndexRecord, IndexWriter

    outside = tmp_path / "outside.WEBP"
    outside.write_bytes(b"precious")
    with IndexWriter(CacheLayout(cache_copy, "val"), "evil") as w:
        w.append(
            [
                IndexRecord(
                    key="../../outside.JPEG",
                    cls="..",
                    stem="../outside",
                    label=0,
                    source="x",
                    status="ok",
                    ratio=0.5,
                )
            ]
        )
    problems = verify_cache(cache_copy)
    assert any("index line refused" in p.message and "unsafe class name" in p.message for p in problems)
    assert outside.read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "", "x\x00y", "/abs", "C:evil"])
def test_safe_component_rejects_escapes(name):
    from forcomp.cache.layout import safe_component
    from forcomp.errors import UnsafePathError

    with pytest.raises(UnsafePathError):
        safe_component(name)


@pytest.mark.parametrize("name", ["n01440764", "café au lait", "猫", "a.b", "with space"])
def test_safe_component_allows_data_names(name):
    from forcomp.cache.layout import safe_component

    assert safe_component(name) == name


def test_report_ends_with_how_to_fix(cache_copy, built_cache):
    """The report names the damage, then says: delete the damaged files, rerun the build (which
    redoes items whose files are missing), with the source the cache was built from."""
    from forcomp.cache.verify import format_report
    from forcomp.offline.config import BuildConfig
    from forcomp.offline.entry import build_cache

    source = built_cache[0]
    layout = CacheLayout(cache_copy, "val")
    layout.bg_path("n00000003", "img2").unlink()
    fg = layout.fg_path("n00000002", "img1")
    fg.write_bytes(fg.read_bytes()[:40])
    problems = verify_cache(cache_copy)
    lines = format_report(problems, cache_copy).splitlines()
    assert lines[: len(problems)] == [str(p) for p in problems]
    assert lines[len(problems)] == "2 problem(s) found"
    hint = "\n".join(lines[len(problems) + 1 :])
    assert "delete the damaged files listed above" in hint and "redoes every item" in hint
    assert lines[-1] == f"  forcomp build {source.resolve()} {cache_copy} --split val"
    assert format_report([], cache_copy) == "cache OK"
    # following the hint repairs the cache
    fg.unlink()
    s = build_cache(source, cache_copy, BuildConfig(split="val", segmenter="classical", inpainter="telea"))
    assert s.processed == 2 and verify_cache(cache_copy) == []
