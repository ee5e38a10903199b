"""A training epoch over a damaged or hostile cache: it finishes, fast and small, with the bad file
counted and named once, labels unchanged, and ``forcomp verify`` exiting 1 naming it.

One policy for every file read in training (foreground, background, source image): a file that is
refused is replaced — another foreground of the class, another background of the pool, the
recombination instead of the original — counted in ``decode_failures`` and warned once per file.
"""

from __future__ import annotations

import logging
import resource
import shutil
import time

import damaged_caches as dmg
import pytest
import torch

from forcomp.cache.reader import CacheReader
from forcomp.cli import main as cli_main
from forcomp.recombine.dataset import ForComp

EPOCH_SECONDS = 30  # a 9-item epoch takes well under a second; a decoded bomb takes minutes
EPOCH_GROWTH_BYTES = 1 << 30  # a decoded 65500x65500 bomb needs ~12 GiB


@pytest.fixture(scope="module")
def clean(built_cache) -> tuple[list[str], dict[str, int]]:
    reader = CacheReader(built_cache[1], dmg.SPLIT)
    return reader.classes, dmg.labels_by_key(reader)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _epoch(ds: ForComp, workers: int) -> list[int]:
    labels = [int(y) for _, y in ds.loader(4, num_workers=workers, shuffle=False) for y in y]
    return labels


@pytest.mark.parametrize("damage", dmg.ALL, ids=lambda f: f.__name__)
def test_an_epoch_over_a_damaged_cache_finishes_and_names_the_file_once(
    damage, cache_copy, tmp_path, clean, caplog, capsys
) -> None:
    where, why = damage(cache_copy, tmp_path)
    before, t0 = _peak_rss(), time.perf_counter()
    with caplog.at_level(logging.WARNING):
        ds = ForComp(cache_copy, dmg.SPLIT, size=32, background="orig", seed=0)
        labels = _epoch(ds, workers=0)
    elapsed, grown = time.perf_counter() - t0, _peak_rss() - before
    assert elapsed < EPOCH_SECONDS and grown < EPOCH_GROWTH_BYTES, (elapsed, grown)
    # every item delivered once, each with the label of its picture's class; classes unchanged
    classes, clean_labels = clean
    assert ds.classes == classes and len(labels) == len(ds)
    keys = [ds.key(i) for i in range(len(ds))]
    assert all(clean_labels[k] == int(ds.labels[i]) for i, k in enumerate(keys))
    named = [r.getMessage() for r in caplog.records if where in r.getMessage()]
    if damage in dmg.DECODE_TIME:
        assert ds.decode_failures == 1
        assert len(named) == 1 and why in named[0], named  # counted and named once
        assert sorted(labels) == sorted(int(v) for v in ds.labels)  # substitutes of the same class
        with caplog.at_level(logging.WARNING):
            assert len(_epoch(ds, workers=0)) == len(ds)  # a second epoch: counted again, not named again
        assert ds.decode_failures == 2
        assert len([r for r in caplog.records if where in r.getMessage()]) == 1
    elif damage in dmg.LOAD_TIME:
        assert ds.decode_failures == 0
        assert any(where in str(p) and why in str(p) for p in ds.problems)
        said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert len(said) == 1, said  # one line at construction, pointing to forcomp verify
    else:
        assert ds.decode_failures == 0
    # forcomp verify exits 1 and names it
    capsys.readouterr()
    assert cli_main(["verify", str(cache_copy)]) == 1
    out = capsys.readouterr()
    assert where in out.out + out.err and why in out.out + out.err


@pytest.mark.parametrize("damage", [dmg.damage_jpeg_bomb, dmg.damage_fifo], ids=lambda f: f.__name__)
def test_damage_met_in_dataloader_workers_is_counted_in_the_main_process(
    damage, cache_copy, tmp_path
) -> None:
    damage(cache_copy, tmp_path)
    ds = ForComp(cache_copy, dmg.SPLIT, size=32, background="orig", seed=0)
    t0 = time.perf_counter()
    labels = _epoch(ds, workers=2)
    assert time.perf_counter() - t0 < EPOCH_SECONDS
    assert len(labels) == len(ds) and ds.decode_failures == 1


def test_truncated_source_image_with_orig_img_prob_recombines_instead(built_cache, tmp_path, caplog) -> None:
    source, cache = tmp_path / "source", tmp_path / "cache"
    shutil.copytree(built_cache[0], source)
    shutil.copytree(built_cache[1], cache)
    # the index records absolute source paths of the original build: point them at the copy
    for f in (cache / dmg.SPLIT / "index").glob("*"):
        f.write_text(f.read_text().replace(str(built_cache[0]), str(source)))
    victim = next((source / dmg.CLS).glob(f"{dmg.STEM}.*"))
    victim.write_bytes(victim.read_bytes()[:200])
    ds = ForComp(cache, dmg.SPLIT, size=32, orig_img_prob=1.0, seed=0)
    with caplog.at_level(logging.WARNING):
        labels = _epoch(ds, workers=0)
    assert len(labels) == len(ds) and ds.decode_failures == 1
    named = [r.getMessage() for r in caplog.records if victim.name in r.getMessage()]
    assert len(named) == 1 and "recombining instead" in named[0]


def test_index_source_outside_the_build_source_is_not_opened(built_cache, tmp_path, caplog) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(built_cache[1], cache)
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    shutil.copy(next((built_cache[0] / dmg.CLS).glob(f"{dmg.STEM}.*")), outside)
    for f in (cache / dmg.SPLIT / "index").glob("*.jsonl"):
        text = f.read_text()
        original = str(next((built_cache[0] / dmg.CLS).glob(f"{dmg.STEM}.*")))
        f.write_text(text.replace(original, str(outside)))
    ds = ForComp(cache, dmg.SPLIT, size=32, orig_img_prob=1.0, seed=0, return_masks=True)
    i = [ds.key(j) for j in range(len(ds))].index(dmg.KEY)
    with caplog.at_level(logging.WARNING):
        _, _, mask = ds[i]
    assert float(mask.sum()) > 0  # recombined: the outside file was not used as the original
    assert any("outside the build's source folder" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(ds[i][0], ds[i][0])  # deterministic either way
