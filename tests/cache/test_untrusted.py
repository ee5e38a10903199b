"""A cache from elsewhere is untrusted: every damage is refused quickly, named, and labels stay."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import damaged_caches as dmg
import pytest

from forcomp.cache.info import cache_info
from forcomp.cache.reader import BadItemError, CacheReader
from forcomp.cache.verify import format_report, verify_cache
from forcomp.errors import CacheFormatError


@pytest.fixture(scope="module")
def clean_labels(built_cache) -> tuple[list[str], dict[str, int]]:
    reader = CacheReader(built_cache[1], dmg.SPLIT)
    return reader.classes, dmg.labels_by_key(reader)


def _names(problems) -> str:
    return "\n".join(str(p) for p in problems)


@pytest.mark.parametrize("damage", dmg.ALL, ids=lambda f: f.__name__)
def test_damage_is_named_quickly_and_labels_stay(damage, cache_copy, tmp_path, clean_labels) -> None:
    where, why = damage(cache_copy, tmp_path)
    t0 = time.perf_counter()
    reader = CacheReader(cache_copy, dmg.SPLIT)
    failures = []
    for i in range(len(reader.fg)):
        try:
            reader.decode_fg(i)
        except BadItemError as e:
            failures.append(e)
    for i in range(len(reader.bg)):
        try:
            reader.decode_bg(i)
        except BadItemError as e:
            failures.append(e)
    problems = verify_cache(cache_copy)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"reading and verifying a 9-item cache took {elapsed:.1f} s"
    # verify names the damage, with the reason
    hits = [p for p in problems if where in str(p) and why in str(p)]
    assert hits, f"verify did not name {where!r} ({why!r}):\n{_names(problems)}"
    # classes and the labels of every remaining item are those of the clean cache
    classes, labels = clean_labels
    assert reader.classes == classes
    got = dmg.labels_by_key(reader)
    assert all(labels[k] == v for k, v in got.items())
    if damage in dmg.DECODE_TIME:
        assert len(failures) == 1 and where in failures[0].path and why in failures[0].reason
    elif damage in dmg.LOAD_TIME:
        assert any(where in str(p) and why in str(p) for p in reader.problems)
        assert not failures
    else:
        assert not failures and not reader.problems or damage is dmg.damage_traversal_key
        assert got == labels


def test_traversal_key_does_not_replace_the_real_ratio(cache_copy, tmp_path) -> None:
    before = CacheReader(cache_copy, dmg.SPLIT)
    i = [before.fg_key(j) for j in range(len(before.fg))].index(dmg.KEY)
    dmg.damage_traversal_key(cache_copy, tmp_path)
    after = CacheReader(cache_copy, dmg.SPLIT)
    assert after.fg_ratio[i] == before.fg_ratio[i] != 0.9


def test_clean_cache_verifies_and_reader_has_no_problems(built_cache) -> None:
    assert verify_cache(built_cache[1]) == []
    assert CacheReader(built_cache[1], dmg.SPLIT).problems == []


def test_ratios_file_that_is_a_list_names_the_file(cache_copy) -> None:
    path = cache_copy / f"fg_bg_ratios_{dmg.SPLIT}.json"
    path.write_text(json.dumps([0.1, 0.2]))
    with pytest.raises(CacheFormatError, match=r"fg_bg_ratios_val\.json: a JSON list, expected an object"):
        CacheReader(cache_copy, dmg.SPLIT)
    problems = verify_cache(cache_copy)
    assert any("a JSON list" in str(p) for p in problems)
    assert "problem(s) found" in format_report(problems, cache_copy)


def _zip_copy(cache: Path, dst: Path) -> Path:
    """The cache in ForNet's published form: foregrounds_<split>.zip, backgrounds_<split>.zip, ratios."""
    import zipfile

    dst.mkdir()
    for kind in ("foregrounds", "backgrounds"):
        with zipfile.ZipFile(dst / f"{kind}_{dmg.SPLIT}.zip", "w") as z:
            for f in sorted((cache / dmg.SPLIT / kind).rglob("*")):
                if f.is_file():
                    z.write(f, f"{dmg.SPLIT}/{kind}/{f.parent.name}/{f.name}")
    shutil.copy(cache / f"fg_bg_ratios_{dmg.SPLIT}.json", dst)
    return dst


def test_release_zips_verify_clean_and_count_as_the_folders(built_cache, tmp_path) -> None:
    zipped = _zip_copy(built_cache[1], tmp_path / "release")
    assert verify_cache(zipped) == []
    folder, zips = CacheReader(built_cache[1], dmg.SPLIT), CacheReader(zipped, dmg.SPLIT)
    assert zips.mode == "zip" and folder.classes == zips.classes
    assert dmg.labels_by_key(folder) == dmg.labels_by_key(zips)
    for i in range(len(folder.fg)):
        assert (folder.decode_fg(i) == zips.decode_fg(i)).all()
    a, b = cache_info(built_cache[1])["splits"][dmg.SPLIT], cache_info(zipped)["splits"][dmg.SPLIT]
    assert (b["form"], b["items"], b["classes"]) == ("zip", a["items"], a["classes"])
    assert b["foregrounds"] == a["foregrounds"] and b["backgrounds"] == a["backgrounds"]


def test_damage_inside_a_release_zip_is_named_with_its_member(built_cache, tmp_path) -> None:
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(built_cache[1], src)
    dmg.damage_corrupt_jpeg(src, tmp_path)
    zipped = _zip_copy(src, tmp_path / "release")
    problems = verify_cache(zipped)
    member = f"backgrounds_{dmg.SPLIT}.zip:{dmg.SPLIT}/backgrounds/{dmg.KEY}"
    assert [p.path for p in problems] == [str(zipped / member)], _names(problems)
    assert "delete the damaged files" not in format_report(problems, zipped)
    with zipfile.ZipFile(zipped / f"foregrounds_{dmg.SPLIT}.zip", "a") as z:
        z.writestr("../../evil/x.WEBP", b"x")
    assert any("unexpected member path" in str(p) for p in verify_cache(zipped))


def test_foreground_without_alpha_is_decoded_and_warned_once(cache_copy, tmp_path, caplog) -> None:
    """An RGB file where an RGBA one belongs decodes fully opaque (as an object filling its box does):
    training may use it, but it is said once per file, and verify names it by its alpha share."""
    import logging

    dmg.damage_rgb_foreground(cache_copy, tmp_path)
    reader = CacheReader(cache_copy, dmg.SPLIT)
    i = [reader.fg_key(j) for j in range(len(reader.fg))].index(dmg.KEY)
    with caplog.at_level(logging.WARNING, logger="forcomp.cache.reader"):
        for _ in range(3):
            assert bool((reader.decode_fg(i)[3] == 255).all())
    said = [r.getMessage() for r in caplog.records if "no alpha channel" in r.getMessage()]
    assert len(said) == 1 and f"{dmg.CLS}/{dmg.STEM}.WEBP" in said[0]
