"""Paths inside a cache: names are data and never leave the cache; errors say which name and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from forcomp.cache.layout import CacheLayout, check_split, safe_component
from forcomp.errors import UnsafePathError


def test_layout_paths_follow_the_fornet_layout(tmp_path):
    layout = CacheLayout(str(tmp_path), "val")  # a str root works like a Path
    assert layout.root == tmp_path and isinstance(layout.root, Path)
    assert layout.fg_path("n01", "a b") == tmp_path / "val" / "foregrounds" / "n01" / "a b.WEBP"
    assert layout.bg_path("n01", "café") == tmp_path / "val" / "backgrounds" / "n01" / "café.JPEG"
    assert layout.index_dir == tmp_path / "val" / "index"
    assert layout.ratios_path == tmp_path / "fg_bg_ratios_val.json"
    assert (
        layout.fg_zip == tmp_path / "foregrounds_val.zip"
        and layout.bg_zip == tmp_path / "backgrounds_val.zip"
    )
    assert CacheLayout.ratio_key("n01", "x.y") == "n01/x.y.JPEG"


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "empty"),
        (".", "single path component"),
        ("..", "single path component"),
        ("a/b", "single path component"),
        ("a\\b", "single path component"),
        ("a\x00b", "single path component"),
        ("a\nb", "single path component"),
        ("C:", "absolute"),
        ("C:x", "absolute"),
    ],
)
def test_unsafe_names_are_refused(name, why):
    with pytest.raises(UnsafePathError, match=why):
        safe_component(name)


@pytest.mark.parametrize("name", ["n01440764", "a b", "café", "x.y", "-", "..a"])
def test_harmless_names_pass_unchanged(name):
    assert safe_component(name) == name


def test_errors_name_what_was_refused(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    with pytest.raises(UnsafePathError) as e:
        safe_component("")
    assert str(e.value) == "empty name: ''"
    for path_of in (layout.fg_path, layout.bg_path, CacheLayout.ratio_key):
        with pytest.raises(UnsafePathError) as e:
            path_of("../evil", "x")
        assert str(e.value) == "unsafe class name '../evil': it must be a single path component"
        with pytest.raises(UnsafePathError) as e:
            path_of("n01", "/etc/passwd")
        assert str(e.value) == "unsafe stem '/etc/passwd': it must be a single path component"
        with pytest.raises(UnsafePathError) as e:
            path_of("n01", "C:")
        assert str(e.value) == "unsafe stem 'C:': absolute paths are not allowed"


def test_split_must_be_train_or_val(tmp_path):
    assert check_split("val") == "val"
    with pytest.raises(ValueError) as e:
        CacheLayout(tmp_path, "test")
    assert str(e.value) == "split must be one of ('train', 'val'), got 'test'"
