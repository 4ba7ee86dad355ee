"""2 ranks x 4 DataLoader workers: every sample exactly once per epoch, the same order for a seed.

On every shard layout (:mod:`tests.layouts`): WebDataset's own tar, ``ndf convert``'s compact
``.tar.gz`` (one member per sample) and, for HF ``datasets``, Parquet.

Ranks are simulated in one process, one after the other, the way the libraries see them:
WebDataset reads ``RANK`` / ``WORLD_SIZE`` from the environment (the DataLoader's forked
workers inherit it), HF ``datasets`` takes the rank in ``split_dataset_by_node``. Each rank
iterates a real ``torch.utils.data.DataLoader`` with 4 worker processes.
"""

from __future__ import annotations

import json

import pytest
import torch
from ndf_datasets.integrations.webdataset import epoch_dataset, ndf_decoder, ndf_samples
from torch.utils.data import DataLoader

import ndf_datasets as ndf

from .conftest import make_image
from .layouts import LAYOUTS, TAR_LAYOUTS, write_layout

RANKS, WORKERS, SHARDS, PER_SHARD = 2, 4, 8, 3
SEED = 1234


@pytest.fixture(scope="module")
def encoded():
    n = SHARDS * PER_SHARD
    labels = [i % 7 for i in range(n)]
    blobs = ndf.encode_batch([make_image(6, 6, 3, seed=i) for i in range(n)], psnr=None, steps=3, labels=labels)
    return blobs, labels, {f"{i:08d}": ndf.decode(b) for i, b in enumerate(blobs)}


@pytest.fixture(scope="module", params=LAYOUTS)
def shards(request, encoded, tmp_path_factory):
    blobs, labels, pixels = encoded
    out = tmp_path_factory.mktemp(f"once-{request.param}")
    urls = write_layout(out, blobs, labels, PER_SHARD, request.param)
    (out / "ndf_dataset.json").write_text(json.dumps({"format": "ndf-webdataset"}))
    return urls, out, pixels, request.param


def _wds_rank(urls: list[str], rank: int, epoch: int, monkeypatch) -> list[tuple[str, torch.Tensor]]:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(RANKS))
    ds = epoch_dataset(urls, seed=SEED, epoch=epoch, shuffle=4).map(ndf_samples(ndf_decoder(size=None)))
    loader = DataLoader(ds.to_tuple("__key__", "ndf"), batch_size=None, num_workers=WORKERS)
    return [(key, x) for key, x in loader]


def _hf_rank(location: str, rank: int, epoch: int) -> list[tuple[str, torch.Tensor]]:
    import datasets
    from ndf_datasets.integrations.hf import split_for_rank

    ds = datasets.load_dataset(location, split="train", streaming=True).shuffle(seed=SEED, buffer_size=4)
    part = split_for_rank(ds, rank, RANKS, epoch, format="torch")
    loader = DataLoader(part, batch_size=None, num_workers=WORKERS)
    return [(row["key"], row["image"]) for row in loader]


def _check_epoch(per_rank: list[list[tuple[str, torch.Tensor]]], pixels: dict) -> None:
    keys = [k for rank in per_rank for k, _ in rank]
    assert sorted(keys) == sorted(pixels), "every sample exactly once over all ranks and workers"
    assert all(len(rank) == SHARDS * PER_SHARD // RANKS for rank in per_rank), [len(r) for r in per_rank]
    for rank in per_rank:
        for key, x in rank:
            assert torch.equal(x, pixels[key]), key


def _orders(per_rank) -> list[list[str]]:
    return [[k for k, _ in rank] for rank in per_rank]


@pytest.mark.slow
def test_webdataset_two_ranks_four_workers(shards, monkeypatch):
    urls, _, pixels, layout = shards
    if layout not in TAR_LAYOUTS:
        pytest.skip("WebDataset reads tar shards")
    epoch0 = [_wds_rank(urls, r, 0, monkeypatch) for r in range(RANKS)]
    _check_epoch(epoch0, pixels)
    again = [_wds_rank(urls, r, 0, monkeypatch) for r in range(RANKS)]
    assert _orders(again) == _orders(epoch0), "same seed and epoch: same order on every rank"
    epoch1 = [_wds_rank(urls, r, 1, monkeypatch) for r in range(RANKS)]
    _check_epoch(epoch1, pixels)
    assert _orders(epoch1) != _orders(epoch0), "another epoch: another order"


@pytest.mark.slow
def test_hf_streaming_two_ranks_four_workers(shards):
    _, location, pixels, _ = shards
    epoch0 = [_hf_rank(str(location), r, 0) for r in range(RANKS)]
    _check_epoch(epoch0, pixels)
    again = [_hf_rank(str(location), r, 0) for r in range(RANKS)]
    assert _orders(again) == _orders(epoch0), "same seed and epoch: same order on every rank"
    epoch1 = [_hf_rank(str(location), r, 1) for r in range(RANKS)]
    _check_epoch(epoch1, pixels)
    assert _orders(epoch1) != _orders(epoch0), "another epoch: another order"


def test_epoch_dataset_partitions_shards_before_reading(shards, monkeypatch):
    """The shard permutation is the same on every rank and the parts are disjoint (no I/O: the
    state before iterating names the shards this rank will read)."""
    urls, _, _, layout = shards
    if layout not in TAR_LAYOUTS:
        pytest.skip("WebDataset reads tar shards")
    seen = []
    for rank in range(RANKS):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(RANKS))
        ds = epoch_dataset(urls, seed=SEED, epoch=3)
        part = [url for url, _, _ in ds.state_dict()["pieces"]]
        seen.append(part)
    assert sorted(seen[0] + seen[1]) == sorted(urls) and not set(seen[0]) & set(seen[1])


def test_split_dataset_by_node_forgets_the_epoch(shards):
    """Why split_for_rank exists: the upstream split and with_format reset the epoch (datasets 5.2)."""
    import datasets
    from datasets.distributed import split_dataset_by_node
    from ndf_datasets.integrations.hf import split_for_rank

    ds = datasets.load_dataset(str(shards[1]), split="train", streaming=True).shuffle(seed=SEED, buffer_size=4)
    ds.set_epoch(5)
    assert split_dataset_by_node(ds, rank=0, world_size=RANKS).epoch == 0  # upstream behaviour this works around
    assert ds.with_format("torch").epoch == 0
    assert split_for_rank(ds, 0, RANKS, 5, format="torch").epoch == 5
