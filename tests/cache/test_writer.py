"""The cache writer: an item's files are written, checked and removed as a pair."""

from __future__ import annotations

from forcomp.cache.layout import CacheLayout
from forcomp.cache.writer import CacheWriter, item_files_state


def test_write_check_remove(tmp_path):
    layout = CacheLayout(tmp_path, "train")
    writer = CacheWriter(layout)
    assert item_files_state(layout, "c", "s") == (False, False)
    assert writer.remove_item("c", "s") is False, "nothing to remove is not an error"
    writer.write_item("c", "s", b"fg", b"bg")
    assert item_files_state(layout, "c", "s") == (True, True)
    layout.bg_path("c", "s").write_bytes(b"")
    assert item_files_state(layout, "c", "s") == (False, True), "an empty file is not a file"
    layout.bg_path("c", "s").unlink()
    assert item_files_state(layout, "c", "s") == (False, True)
    assert writer.remove_item("c", "s") is True
    assert item_files_state(layout, "c", "s") == (False, False)
    assert not any((tmp_path / ".tmp").iterdir())
