"""Which model output counts as which cache class (``class_map.py``): validation, messages, the rule."""

from __future__ import annotations

import pytest

from forcomp.errors import ForcompError
from forcomp.metrics.class_map import (
    imagenet_class_indices,
    map_class_indices,
    not_imagenet_message,
    prediction_rule,
)
from forcomp.metrics.classnames import class_name, imagenet1k_index


def test_class_indices_validation_messages() -> None:
    classes = ["a", "b", "c"]
    assert map_class_indices(3, classes, None) is None
    assert map_class_indices(5, classes, [4, 0, 2]) == [4, 0, 2]
    assert map_class_indices(5, classes, {"c": 1, "a": 0, "b": 4, "z": 3}) == [0, 4, 1]
    how = (
        "class_indices=[...] in Python, or on the command line --class-indices I0,I1,... "
        "or --class-indices FILE.json"
    )
    cases = [
        ({"a": 0}, "class_indices maps class names to outputs but lacks 2 of the cache's 3 classes: "
                   "['b', 'c']"),
        ([0, 1], f"class_indices must give one model output index per cache class in sorted class order "
                 f"(3 classes), got 2 ({how})"),
        ([0, 1, 5], "class_indices must be integers in [0, 5) (the model has 5 outputs), got [5]"),
        ([0, -1, True], "class_indices must be integers in [0, 5) (the model has 5 outputs), got [-1, True]"),
        ([0, 1.0, 2], "class_indices must be integers in [0, 5) (the model has 5 outputs), got [1.0]"),
        ([1, 1, 4], "class_indices maps several cache classes to the same output(s) [1]"),
    ]  # fmt: skip
    for given, message in cases:
        with pytest.raises(ValueError) as e:
            map_class_indices(5, classes, given)
        assert str(e.value) == message, given
    many = [f"c{i:02d}" for i in range(12)]
    with pytest.raises(ValueError) as e:
        map_class_indices(20, many, {})
    assert str(e.value).endswith(f"lacks 12 of the cache's 12 classes: {many[:10]} …")
    ten = [f"c{i:02d}" for i in range(10)]
    with pytest.raises(ValueError) as e:
        map_class_indices(20, ten, {})
    assert str(e.value).endswith(f"lacks 10 of the cache's 10 classes: {ten}")
    with pytest.raises(ValueError) as e:
        map_class_indices(20, [*ten, "c10"], {})
    assert str(e.value).endswith(f"lacks 11 of the cache's 11 classes: {ten} …")
    with pytest.raises(ValueError) as e:
        map_class_indices(3, [*ten, "c10"], list(range(100, 111)))
    assert str(e.value).endswith(f"got {list(range(100, 110))}")
    with pytest.raises(ForcompError, match="^the model has 5 outputs but the cache has 2 classes"):
        map_class_indices(5, ["n01440764", "n01443537"], None)  # ImageNet wnids map only onto 1000 outputs
    assert map_class_indices(4, ["x", "y"], [3, 0]) == [3, 0]
    assert map_class_indices(4, ["x", "y"], [0, 3]) == [0, 3]
    with pytest.raises(ForcompError) as e:
        map_class_indices(7, classes, None)
    assert str(e.value) == (
        f"the model has 7 outputs but the cache has 3 classes; give the model output index of each cache "
        f"class (in sorted class order): {how}; or evaluate a model trained on these classes"
    )
    with pytest.raises(ForcompError, match="^the model has 1000 outputs but the cache has 3 classes"):
        map_class_indices(1000, classes, None)  # not wnids: no ImageNet mapping to explain


def test_wnid_classes_outside_imagenet_are_explained() -> None:
    order = imagenet1k_index()
    tench, goldfish = "n01440764", "n01443537"
    assert order[tench] == 0 and order[goldfish] == 1
    assert map_class_indices(1000, [tench, goldfish], None) == [0, 1]
    with pytest.raises(ForcompError) as e:
        map_class_indices(1000, [tench, "n02084071", "n09999999"], None)
    assert str(e.value) == not_imagenet_message([tench, "n02084071", "n09999999"])
    msg = not_imagenet_message([tench, "n02084071", "n09999999"])
    assert msg.startswith(
        "the model has 1000 outputs (ImageNet-1k) and the cache's classes are WordNet ids, but 2 of its 3 "
        "classes are not ImageNet-1k classes: n02084071 (dog) — ImageNet-1k "
        "classes under it: n02085620 Chihuahua = 151, "
    ), msg
    assert " …; n09999999 (not in the packaged WordNet table). The other 1 map by WordNet id; " in msg
    assert msg.endswith(
        "replace each ? by the output to count as correct for that class (sorted class order):\n"
        "  --class-indices 0,?,?\n"
        "(class_indices=[...] in Python, or a JSON file {class_name: index}); or evaluate a cache without "
        "those classes"
    )
    fake = [f"n0999{i:04d}" for i in range(12)]
    many = not_imagenet_message(fake)
    assert "12 of its 12 classes" in many and "; and 2 more. The other 0 map" in many
    assert "n09990009 (not in the packaged WordNet table)" in many and "n09990010" not in many
    assert "--class-indices " + ",".join("?" * 12) + "\n" in many


def test_imagenet_classes_under_a_parent_shown_up_to_three_and_counts_of_the_rest() -> None:
    abstraction = not_imagenet_message(["n00002137"])  # 3 ImageNet-1k classes below it: all shown
    assert "n00002137 (abstraction) — ImageNet-1k classes under it: n06794110 " in abstraction
    last = f"n09229709 {class_name('n09229709')} = {imagenet1k_index()['n09229709']}. The other 0 map"
    assert last in abstraction and " …" not in abstraction
    article = not_imagenet_message(["n00022903"])  # 4 below it: 3 shown, then …
    assert "n04263257 " in article and "n04597913" not in article and " …. The other 0 map" in article
    ten = not_imagenet_message([f"n0999{i:04d}" for i in range(10)])
    assert "(not in the packaged WordNet table). The other 0 map" in ten and "more" not in ten
    eleven = not_imagenet_message([f"n0999{i:04d}" for i in range(11)])
    assert "; and 1 more. The other 0 map" in eleven


def test_prediction_rule_words() -> None:
    assert prediction_rule(4, None) == "argmax over all 4 model outputs (one per cache class)"
    assert prediction_rule(3, [2, 0, 1]) == (
        "argmax over all 3 model outputs, mapped to the cache's classes by class_indices"
    )
    assert prediction_rule(10, [7, 2]) == (
        "argmax over the 2 outputs mapped to the cache's classes (the model has 10 outputs; the other 8 "
        "are ignored)"
    )


def test_imagenet_class_indices() -> None:
    assert imagenet_class_indices(["n01440764", "n01443537"]) == [0, 1]
    assert imagenet_class_indices(["n01443537", "n01440764"]) == [1, 0]
    assert imagenet_class_indices(["n00000001"]) is None
    assert imagenet_class_indices(["cat"]) is None and imagenet_class_indices([]) is None
