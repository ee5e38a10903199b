"""Walking ImageFolders: ordering, labels as torchvision's, odd names, stable shards."""

from __future__ import annotations

from PIL import Image

from forcomp.offline.sources import list_items, select_shard, shard_of


def _touch_img(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16)).save(p)


def test_labels_match_torchvision_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    for cls in ["b cls", "a_cls", "ç-ünï"]:
        for n in ["x.jpg", "y.PNG"]:
            _touch_img(tmp_path / cls / n)
    items = list_items(tmp_path)
    tv = ImageFolder(str(tmp_path))
    assert {it.cls: it.label for it in items} == tv.class_to_idx
    assert len(items) == 6 and all(it.problem is None for it in items)


def test_stem_collisions_and_nesting(tmp_path):
    _touch_img(tmp_path / "c" / "a.jpg")
    _touch_img(tmp_path / "c" / "a.png")
    _touch_img(tmp_path / "c" / "sub" / "a.jpg")
    keys = sorted(it.key for it in list_items(tmp_path))
    assert keys == ["c/a.JPEG", "c/a_png.JPEG", "c/sub__a.JPEG"]


def test_hidden_and_non_images_skipped(tmp_path):
    _touch_img(tmp_path / "c" / "a.jpg")
    _touch_img(tmp_path / "c" / ".b.jpg")
    _touch_img(tmp_path / ".hidden_cls" / "a.jpg")
    (tmp_path / "c" / "readme.txt").write_text("x")
    assert [it.key for it in list_items(tmp_path)] == ["c/a.JPEG"]


def test_shards_partition_and_are_stable(tmp_path):
    for i in range(40):
        _touch_img(tmp_path / f"c{i % 3}" / f"{i}.jpg")
    items = list_items(tmp_path)
    parts = [select_shard(items, (i, 4)) for i in range(4)]
    assert sorted(k.key for p in parts for k in p) == sorted(k.key for k in items)
    assert all(parts)
    # adding a file does not move existing items between shards
    _touch_img(tmp_path / "c0" / "new.jpg")
    assert all(shard_of(it.key, 4) == i for i, p in enumerate(parts) for it in p)


def test_an_empty_class_folder_is_warned_about(tmp_path, caplog):
    import logging

    from scenes import make_imagefolder

    from forcomp.offline.sources import list_items

    src = make_imagefolder(tmp_path / "src", per_class=1)
    (src / "n00000000").mkdir()  # sorts first: every later label would shift in the cache
    with caplog.at_level(logging.WARNING):
        items = list_items(src)
    assert {it.label for it in items} == {1, 2, 3}
    assert "n00000000 holds no image" in caplog.text
