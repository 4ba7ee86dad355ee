"""Resuming an epoch mid-way: exactly the samples not yet seen, in the same order, with workers and real ranks.

* ``epoch_dataset`` through torchdata's ``StatefulDataLoader`` (2 workers), with and without a
  shuffle buffer and with a decoding stage after it: saved after ``k`` samples here, restored in
  a fresh process (tests/resume_job.py), the rest of the epoch is the uninterrupted run's rest;
  the loader's next pass and the next epoch are those of an uninterrupted run. The same for
  every ``k`` in this process, without workers.
* Elastic: two real ranks (a gloo group on 127.0.0.1, separate processes) save their loader
  states; restored with ``resume=`` on 1 and on 4 real ranks, every remaining sample comes
  exactly once.
* Bad states are ``ValueError`` with a message saying what is wrong.
* HF ``datasets`` streaming through ``split_for_rank``: its own ``state_dict`` restores exactly
  with ``StatefulDataLoader`` workers when the stream is not ``.shuffle()``-d (what upstream
  does with a shuffle buffer is pinned below).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ndf_datasets.integrations.webdataset import SkipCounter, epoch_dataset, ndf_decoder, ndf_samples

import ndf_datasets as ndf

from .conftest import make_image
from .layouts import write_layout

StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader

PER_SHARD, N = 4, 26  # 7 shards, the last one of 2 samples: workers and ranks get unequal parts
SEED, EPOCH = 7, 2
JOB = Path(__file__).with_name("resume_job.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    labels = [i % 5 for i in range(N)]
    blobs = ndf.encode_batch([make_image(6, 6, 3, seed=i) for i in range(N)], psnr=None, steps=3, labels=labels)
    out = tmp_path_factory.mktemp("resume")
    return write_layout(out, blobs, labels, PER_SHARD, "tar"), out


def _keys(ds, workers: int = 0) -> list[str]:
    return [s["__key__"] for s in StatefulDataLoader(ds, batch_size=None, num_workers=workers)]


def _env() -> dict:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "WORKER", "NUM_WORKERS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*procs: list[str]) -> None:
    """Start the processes together (the ranks of one group), wait for all of them, fail with their output."""
    cmd = [sys.executable, str(JOB)]
    running = [subprocess.Popen(cmd + a, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for a in procs]
    outputs = []
    try:
        for p in running:
            out, _ = p.communicate(timeout=TIMEOUT)
            outputs.append((p.returncode, out.decode(errors="replace")[-3000:]))
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    bad = [f"exit {rc}:\n{o}" for rc, o in outputs if rc != 0]
    assert not bad, "\n---\n".join(bad)


def test_restored_in_a_fresh_process_with_workers(data, tmp_path):
    urls, _ = data
    decode = ndf_samples(ndf_decoder(size=None))

    def loader(shuffle: int, epoch: int = EPOCH):
        ds = epoch_dataset(urls, seed=SEED, epoch=epoch, shuffle=shuffle).map(decode)
        return StatefulDataLoader(ds, batch_size=None, num_workers=2)

    jobs, expected = [], []
    for shuffle, k in ((0, 9), (5, 1), (5, 13), (5, N - 2)):
        full = [(s["__key__"], float(s["ndf"].double().sum())) for s in loader(shuffle)]
        assert sorted(key for key, _ in full) == [f"{i:08d}" for i in range(N)]
        interrupted = loader(shuffle)
        it = iter(interrupted)
        assert [next(it)["__key__"] for _ in range(k)] == [key for key, _ in full[:k]]
        torch.save(interrupted.state_dict(), tmp_path / f"state-{shuffle}-{k}")
        del it, interrupted
        jobs.append({"shuffle": shuffle, "state": str(tmp_path / f"state-{shuffle}-{k}")})
        expected.append((full, k, [s["__key__"] for s in loader(shuffle, EPOCH + 1)]))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"urls": urls, "seed": SEED, "epoch": EPOCH, "jobs": jobs}))
    _run(["restore", str(spec), str(tmp_path / "out.json")])
    for got, (full, k, following) in zip(json.loads((tmp_path / "out.json").read_text()), expected):
        assert [tuple(r) for r in got["rest"]] == full[k:], "the rest of the epoch, in the same order, decoded the same"
        assert got["again"] == [key for key, _ in full], "the loader's next pass: the whole epoch"
        assert got["next_epoch"] == following, "the next epoch: as without interruption"


@pytest.mark.parametrize("shuffle", [0, 1, 3, 40])
def test_every_stopping_point_without_workers(data, shuffle):
    urls, _ = data
    full = _keys(epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=shuffle))
    assert sorted(full) == [f"{i:08d}" for i in range(N)]
    for k in range(N + 1):
        loader = StatefulDataLoader(epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=shuffle), batch_size=None)
        it = iter(loader)
        seen = [next(it)["__key__"] for _ in range(k)]
        state = json.loads(json.dumps(loader.state_dict()))  # JSON data
        restored = StatefulDataLoader(epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=shuffle), batch_size=None)
        restored.load_state_dict(state)
        assert seen + [s["__key__"] for s in restored] == full, k
        assert [s["__key__"] for s in restored] == full, "iterating again starts the epoch over"


def test_batches_are_resumed_whole(data):
    """``.batched()`` of the dataset yields a batch before reading the next sample, so a state saved after a
    batch holds no sample of the next one (WebDataset's own ``batched`` reads one ahead: refused)."""
    urls, _ = data

    def batches(state=None, stop=None):
        ds = epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=3).to_tuple("__key__").batched(4)
        loader = StatefulDataLoader(ds, batch_size=None)
        if state is not None:
            loader.load_state_dict(state)
        out, it = [], iter(loader)
        for batch in it:
            out.append(list(batch[0]))
            if len(out) == stop:
                return out, loader.state_dict()
        return out, None

    full, _ = batches()
    head, state = batches(stop=3)
    rest, _ = batches(state)
    assert head + rest == full and sum(map(len, full)) == N
    import webdataset as wds

    with pytest.raises(ValueError, match="batched"):
        epoch_dataset(urls).compose(wds.batched(4)).state_dict()


def _rank_spec(tmp_path: Path, urls: list[str], name: str, **kw) -> Path:
    spec = tmp_path / f"{name}.json"
    base = {"urls": urls, "seed": SEED, "epoch": EPOCH, "shuffle": 3, "state_prefix": str(tmp_path / "rank-state-")}
    spec.write_text(json.dumps({**base, **kw}))
    return spec


def _ranks(mode: str, spec: Path, world: int, tmp_path: Path) -> list[list[str]]:
    port = _free_port()
    outs = [tmp_path / f"{mode}-{world}-{r}.json" for r in range(world)]
    _run(*[[mode, str(spec), str(outs[r]), str(r), str(world), str(port)] for r in range(world)])
    return [json.loads(o.read_text()) for o in outs]


def test_elastic_resume_on_one_and_four_real_ranks(data, tmp_path):
    urls, _ = data
    seen = _ranks("save", _rank_spec(tmp_path, urls, "save", take=[5, 2]), 2, tmp_path)
    assert [len(s) for s in seen] == [5, 2]
    before = [k for rank in seen for k in rank]
    assert len(set(before)) == len(before)
    unseen = sorted(set(f"{i:08d}" for i in range(N)) - set(before))
    spec = _rank_spec(tmp_path, urls, "resumed", saved_world=2)
    for world in (1, 4):
        after = [k for rank in _ranks("resumed", spec, world, tmp_path) for k in rank]
        assert sorted(after) == unseen, f"{world} ranks: every remaining sample exactly once"


def test_elastic_resume_twice_in_one_process(data, monkeypatch):
    """A resumed run can itself be saved and resumed again, on yet another number of ranks (here ranks are
    ``RANK`` / ``WORLD_SIZE``, one after the other): in all, every sample exactly once."""
    urls, _ = data

    def run(world, resume=None, take=None):
        states, keys = [], []
        for rank in range(world):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            ds = epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=4, resume=resume)
            loader = StatefulDataLoader(ds, batch_size=None)
            keys += [s["__key__"] for s in itertools.islice(iter(loader), take)]
            states.append(loader.state_dict())
        return states, keys

    states, first = run(2, take=6)
    states, second = run(3, resume=states, take=2)
    _, third = run(1, resume=states)
    assert len(first) == 12 and len(second) <= 6  # a rank may get fewer than 2 of the 14 left
    assert sorted(first + second + third) == [f"{i:08d}" for i in range(N)]


def test_bad_states_are_refused(data, monkeypatch):
    urls, _ = data
    good = epoch_dataset(urls, seed=SEED, epoch=EPOCH, shuffle=3)
    it = iter(good)
    for _ in range(7):
        next(it)
    state = good.state_dict()

    def refused(match, state=state, **kw):
        args = {"seed": SEED, "epoch": EPOCH, "shuffle": 3, **kw}
        with pytest.raises(ValueError, match=match):
            ds = epoch_dataset(urls, **args)
            ds.load_state_dict(state)
            next(iter(ds))

    refused("another epoch", epoch=EPOCH + 1)
    refused("another epoch", seed=SEED + 1)
    refused("shuffle buffer of 3", shuffle=4)
    refused("not an epoch_dataset worker state", state={"counts": []})
    refused("version", state={**state, "version": 99})
    refused("'counts' is missing", state={k: v for k, v in state.items() if k != "counts"})
    refused("out of range", state={**state, "finished": 99})
    refused("do not add up", state={**state, "emitted": state["emitted"] + 1})
    refused("not increasing", state={**state, "pieces": [[urls[0], 0, [3, 1]]]})
    refused("fresh epoch", resume=[state])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    refused("rank 0/1 worker 0/1, this is rank 1/2")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="each of the 2 ranks"):
        half = {**state, "world": 2}
        epoch_dataset(urls, seed=SEED, epoch=EPOCH, resume=[half])
    with pytest.raises(ValueError, match="no epoch_dataset state"):
        epoch_dataset(urls, seed=SEED, epoch=EPOCH, resume=[{"x": 1}])
    with pytest.raises(ValueError, match="between snapshots"):
        epoch_dataset(urls, seed=SEED, epoch=EPOCH, resume=[{"_steps_since_snapshot": 2, "w": state}])
    with pytest.raises(ValueError, match="shuffle stage"):
        epoch_dataset(urls).shuffle(10).state_dict()
    with pytest.raises(ValueError, match="with_epoch"):
        epoch_dataset(urls).with_epoch(5).state_dict()


def test_a_damaged_shard_is_skipped_and_counted_as_by_ndf_webdataset(data, tmp_path):
    from ndf_datasets.integrations.webdataset import NDFWebDataset

    urls, _ = data
    cut = tmp_path / Path(urls[1]).name
    raw = Path(urls[1]).read_bytes()
    cut.write_bytes(raw[: raw.index(b"00000006.") // 512 * 512 + 100])  # inside a tar header
    damaged = [urls[0], str(cut)] + urls[2:]
    ours, theirs = SkipCounter(warn=False), SkipCounter(warn=False)
    keys = [
        s["__key__"]
        for s in epoch_dataset(damaged, seed=SEED, shuffle=3, handler=ours).map(ndf_samples(ndf_decoder(size=None)))
    ]
    reference = [s["__key__"] for s in NDFWebDataset(damaged, shardshuffle=False, handler=theirs, empty_check=False)]
    assert sorted(keys) == sorted(reference) and ours.count == theirs.count == 1
    assert "00000005" in keys and "00000006" not in keys and len(keys) == N - 2


def test_hf_streaming_restores_exactly_without_a_shuffle_buffer(tmp_path):
    """HF ``datasets`` resumes a stream split by rank exactly, with workers, when it is not shuffled."""
    import datasets
    from ndf_datasets.integrations.hf import split_for_rank

    labels = [i % 5 for i in range(12)]
    blobs = ndf.encode_batch([make_image(6, 6, 3, seed=i) for i in range(12)], psnr=None, steps=3, labels=labels)
    write_layout(tmp_path, blobs, labels, 2, "parquet")
    (tmp_path / "ndf_dataset.json").write_text(json.dumps({"format": "ndf-webdataset"}))

    def loader(shuffle: int = 0):
        ds = datasets.load_dataset(str(tmp_path), split="train", streaming=True)
        if shuffle:
            ds = ds.shuffle(seed=SEED, buffer_size=shuffle)
        return StatefulDataLoader(split_for_rank(ds, 1, 2, EPOCH, format="torch"), batch_size=None, num_workers=2)

    full = [r["key"] for r in loader()]
    assert len(full) == 6
    interrupted = loader()
    it = iter(interrupted)
    head = [next(it)["key"] for _ in range(3)]
    state = interrupted.state_dict()
    del it, interrupted
    restored = loader()
    restored.load_state_dict(state)
    assert head + [r["key"] for r in restored] == full
    assert [r["key"] for r in restored] == full, "the loader's next pass: the whole epoch"
    # upstream (datasets 5.2): with .shuffle() the restore fails in the workers (the saved worker state is
    # loaded into the stream before it is split by worker); without workers the buffer's samples are lost
    shuffled = loader(shuffle=3)
    it = iter(shuffled)
    next(it)
    state = shuffled.state_dict()
    del it, shuffled
    restored = loader(shuffle=3)
    restored.load_state_dict(state)
    with pytest.raises(IndexError):
        list(restored)
