"""The packed training form: same pictures as the folders, resumable, never used when stale."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import damaged_caches as dmg
import pytest
import torch

from forcomp.cache.pack import load_packed, pack_dir
from forcomp.cache.packing import pack_split
from forcomp.cache.reader import CacheReader
from forcomp.cache.verify import verify_cache
from forcomp.recombine.dataset import ForComp


def _pictures(cache: Path, **kw) -> list[torch.Tensor]:
    ds = ForComp(cache, dmg.SPLIT, size=48, seed=3, **kw)
    return [ds[i][0] for i in range(len(ds))]


def test_packed_form_gives_the_same_pictures_and_is_used(cache_copy, caplog) -> None:
    folders = _pictures(cache_copy, background="all")
    summary = pack_split(cache_copy, dmg.SPLIT)
    assert summary.foregrounds == 9 and summary.backgrounds == 9 and not summary.refused
    with caplog.at_level(logging.INFO, logger="forcomp.cache.reader"):
        reader = CacheReader(cache_copy, dmg.SPLIT)
    assert reader.mode == "packed" and "reading the packed form" in caplog.text
    folder_reader = CacheReader(cache_copy, dmg.SPLIT, packed=False)
    for i in range(len(reader.fg)):
        assert torch.equal(reader.decode_fg(i), folder_reader.decode_fg(i))
        assert reader.bg_bytes(i) == folder_reader.bg_bytes(i)
    packed = _pictures(cache_copy, background="all")
    assert all(torch.equal(a, b) for a, b in zip(folders, packed, strict=True))
    assert verify_cache(cache_copy) == []


def test_packing_resumes_where_a_killed_run_stopped(built_cache, tmp_path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(built_cache[1], whole)
    shutil.copytree(built_cache[1], killed)
    pack_split(whole, dmg.SPLIT, chunk=4)

    class Killed(Exception):
        pass

    def die(done: int, total: int) -> None:
        if done >= 8:
            raise Killed

    with pytest.raises(Killed):
        pack_split(killed, dmg.SPLIT, chunk=4, on_progress=die)
    assert load_packed(CacheReader(killed, dmg.SPLIT, packed=False).layout) is None  # not finished: unused
    partial = pack_dir(CacheReader(killed, dmg.SPLIT, packed=False).layout) / "data.bin.partial"
    with open(partial, "ab") as f:
        f.write(b"half of the next payload")  # what a kill between checkpoints leaves
    summary = pack_split(killed, dmg.SPLIT, chunk=4)
    assert summary.resumed_from == 8
    pack = [pack_dir(CacheReader(c, dmg.SPLIT, packed=False).layout) / "data.bin" for c in (whole, killed)]
    assert pack[0].read_bytes() == pack[1].read_bytes()  # the resumed pack equals an uninterrupted one
    assert CacheReader(killed, dmg.SPLIT).mode == "packed"
    assert all(torch.equal(x, y) for x, y in zip(_pictures(whole), _pictures(killed), strict=True))


def test_a_stale_packed_form_is_not_used(cache_copy, caplog) -> None:
    pack_split(cache_copy, dmg.SPLIT)
    ratios = cache_copy / f"fg_bg_ratios_{dmg.SPLIT}.json"
    ratios.write_text(ratios.read_text() + " ")  # a rebuild rewrites the ratios file
    with caplog.at_level(logging.WARNING):
        reader = CacheReader(cache_copy, dmg.SPLIT)
    assert reader.mode == "folder" and "older than the cache" in caplog.text


def test_verify_names_a_packed_copy_that_differs(cache_copy) -> None:
    pack_split(cache_copy, dmg.SPLIT)
    data = pack_dir(CacheReader(cache_copy, dmg.SPLIT, packed=False).layout) / "data.bin"
    blob = bytearray(data.read_bytes())
    blob[40] ^= 0xFF  # inside the first foreground's QOI stream
    data.write_bytes(bytes(blob))
    problems = verify_cache(cache_copy)
    assert any("packed copy differs" in p.message for p in problems), problems


def test_an_item_refused_when_packing_is_replaced_in_training_as_from_the_folders(
    cache_copy, tmp_path
) -> None:
    dmg.damage_corrupt_jpeg(cache_copy, tmp_path)
    summary = pack_split(cache_copy, dmg.SPLIT)
    assert len(summary.refused) == 1 and "Corrupt JPEG data" in summary.refused[0].message
    ds = ForComp(cache_copy, dmg.SPLIT, size=32, background="orig", seed=0)
    assert ds.reader.mode == "packed"
    labels = [int(y) for _, y in ds.loader(4, shuffle=False) for y in y]
    assert len(labels) == len(ds) and ds.decode_failures == 1


def test_forcomp_pack_command(cache_copy, capsys) -> None:
    from forcomp.cli import main

    assert main(["pack", str(cache_copy)]) == 0
    assert "packed 9 foregrounds and 9 backgrounds" in capsys.readouterr().out
    assert CacheReader(cache_copy, dmg.SPLIT).mode == "packed"
    assert main(["pack", str(cache_copy), "--split", "train"]) == 2
    assert "no train split" in capsys.readouterr().err
