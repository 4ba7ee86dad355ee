"""Resume overhead of ``epoch_dataset``: how long a restored loader takes to its first sample, and what state tracking costs.

    python -m benchmarks.resume                       # the figures in BENCHMARKS.md
    python -m benchmarks.resume --samples 2000 --repeats 1   # a quick look

A generated dataset: ``--samples`` samples in tar shards of ``--per-shard`` (``write_shards``;
the ``.ndf`` members are a few distinct small standalone fields repeated under distinct keys:
the pipeline never decodes here, so what the bytes hold does not matter, only their size).

1. **Time to first sample**, ``StatefulDataLoader(epoch_dataset(...), batch_size=None,
   num_workers=W)``: a fresh epoch (from ``iter()``) against a loader restored from a state
   saved after a fraction ``f`` of the epoch (from ``load_state_dict`` + ``iter()``), for a
   shuffle buffer of 0 and of ``--shuffle`` samples. Both start ``W`` workers; a restore also
   replays the buffer's random choices over the samples already seen (no I/O), reads the
   buffered samples back from their shards and skips the part of the current shard already
   read. Median of ``--repeats``.
2. **Cost per sample** over a whole epoch, in this process (CPU time, so the load of other
   processes counts less): a plain WebDataset pipeline (``NDFWebDataset`` split by node and
   worker, then ``.shuffle``: what ``epoch_dataset`` was before it was resumable),
   ``epoch_dataset`` (its counting is always on), and ``epoch_dataset`` with what a
   ``StatefulDataLoader`` worker adds per sample (``state_dict()`` and torchdata's delta
   against the previous state, ``snapshot_every_n_steps=1``, the default). Then end to end,
   samples/s (wall clock) of ``epoch_dataset`` in a ``DataLoader`` and in a
   ``StatefulDataLoader``, one worker each (the latter also carries the delta to the main
   process and keeps its snapshots), and in a ``StatefulDataLoader`` that snapshots every 64
   steps (a restore then replays up to 63 samples; exact resume still holds).
3. The size of a worker's state (JSON), and the time ``epoch_dataset(..., resume=states)``
   takes to plan an elastic resume from 2 ranks x ``W`` workers.

Writes ``benchmarks/out/resume.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

OUT = Path(__file__).resolve().parent / "out"


def make_dataset(root: Path, samples: int, per_shard: int) -> tuple[list[str], int]:
    """Shards of ``samples`` samples; returns their URLs and the bytes of one ``.ndf`` member."""
    import numpy as np
    from ndf_datasets.integrations.webdataset import write_shards

    import ndf_datasets as ndf

    rng = np.random.default_rng(0)
    images = [(rng.random((16, 16, 3)) * 255).astype(np.uint8) for _ in range(8)]
    blobs = ndf.encode_batch(images, psnr=None, steps=5, labels=list(range(8)))
    rows = ({"ndf": blobs[i % 8], "cls": i % 8} for i in range(samples))
    urls = write_shards(str(root / "train-%06d.tar"), rows, maxcount=per_shard).urls
    return urls, len(blobs[0])


def _first(loader) -> float:
    t = time.perf_counter()
    next(iter(loader))
    return time.perf_counter() - t


def time_to_first(urls: list[str], total: int, shuffle: int, workers: int, fraction: float, repeats: int) -> dict:
    from ndf_datasets.integrations.webdataset import epoch_dataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        return StatefulDataLoader(
            epoch_dataset(urls, seed=1, epoch=0, shuffle=shuffle), batch_size=None, num_workers=workers
        )

    fresh, restored = [], []
    take = int(fraction * total)
    for _ in range(repeats):
        fresh.append(_first(loader()))
        saving = loader()
        it = iter(saving)
        for _ in range(take):
            next(it)
        state = json.loads(json.dumps(saving.state_dict()))
        del it, saving
        reread = _reread(state)
        again = loader()
        t = time.perf_counter()
        again.load_state_dict(state)
        next(iter(again))
        restored.append(time.perf_counter() - t)
        del again
    return {"shuffle": shuffle, "workers": workers, "after": take, "fresh_s": statistics.median(fresh),
            "restored_s": statistics.median(restored), **reread}  # fmt: skip


def _reread(loader_state: dict) -> dict:
    """What a restore reads again, over all workers: the shards holding buffered samples (each read up to the
    last one it needs) and the current shards (up to where they were), from the saved states alone."""
    from ndf_datasets.integrations.webdataset.epochstate import simulate

    shards = samples = 0
    for worker in loader_state["_snapshot"]["_worker_snapshots"].values():
        state = worker["dataset_state"]
        refs, _ = simulate(state)
        last: dict[int, int] = {}
        for k, j in refs:
            last[k] = max(last.get(k, 0), j + 1)
        if state["finished"] < len(state["counts"]):
            last.setdefault(-1 - state["finished"], state["counts"][state["finished"]])
        shards += len(last)
        samples += sum(last.values())
    return {"reread_shards": shards, "reread_samples": samples}


def throughput(urls: list[str], shuffle: int, repeats: int) -> dict:
    import webdataset as wds
    from ndf_datasets.integrations.webdataset import NDFWebDataset, epoch_dataset
    from torchdata.stateful_dataloader import StatefulDataLoader
    from torchdata.stateful_dataloader.incremental_state import _IncrementalWorkerState

    def plain():
        ds = NDFWebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node,
                           workersplitter=wds.split_by_worker, empty_check=False)  # fmt: skip
        return ds.shuffle(shuffle, seed=1) if shuffle else ds

    def ours():
        return epoch_dataset(urls, seed=1, epoch=0, shuffle=shuffle)

    def worker_step(ds):
        """What a StatefulDataLoader worker does per sample besides reading it (worker.py: _make_state_dict,
        then the delta against the previous state)."""

        def state():
            return {"worker_id": 0, "fetcher_state": {"dataset_iter_state": None, "fetcher_ended": False},
                    "dataset_state": ds.state_dict()}  # fmt: skip

        incremental = _IncrementalWorkerState(state())
        for sample in ds:
            incremental.generate_delta(state())
            yield sample

    in_process = {"plain WebDataset": lambda: iter(plain()), "epoch_dataset": lambda: iter(ours()),
                  "epoch_dataset + state per sample": lambda: worker_step(ours())}  # fmt: skip
    loaders = {
        "epoch_dataset, DataLoader": lambda: DataLoader(ours(), batch_size=None, num_workers=1),
        "epoch_dataset, StatefulDataLoader": lambda: StatefulDataLoader(ours(), batch_size=None, num_workers=1),
        "the same, snapshot_every_n_steps=64": lambda: StatefulDataLoader(
            ours(), batch_size=None, num_workers=1, snapshot_every_n_steps=64
        ),
    }
    cpu: dict[str, list[float]] = {name: [] for name in in_process}
    wall: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(repeats):  # the rows take turns, so a drifting background load falls on all of them
        for name, make in in_process.items():
            t, n = time.process_time(), sum(1 for _ in make())
            cpu[name].append((time.process_time() - t) / n)
        for name, make in loaders.items():
            it = iter(make())
            next(it)  # the worker started
            t, n = time.perf_counter(), sum(1 for _ in it)
            wall[name].append(n / (time.perf_counter() - t))
    return {"shuffle": shuffle, "cpu_s_per_sample": {k: statistics.median(v) for k, v in cpu.items()},
            "samples_per_s": {k: statistics.median(v) for k, v in wall.items()}}  # fmt: skip


def elastic(urls: list[str], shuffle: int, workers: int) -> dict:
    import os

    from ndf_datasets.integrations.webdataset import epoch_dataset
    from torchdata.stateful_dataloader import StatefulDataLoader

    states = []
    for rank in range(2):
        os.environ.update(RANK=str(rank), WORLD_SIZE="2")
        loader = StatefulDataLoader(
            epoch_dataset(urls, seed=1, epoch=0, shuffle=shuffle), batch_size=None, num_workers=workers
        )
        it = iter(loader)
        for _ in range(len(urls) * 10):
            next(it)
        states.append(json.loads(json.dumps(loader.state_dict())))
        del it, loader
    os.environ.pop("RANK")
    os.environ.pop("WORLD_SIZE")
    t = time.perf_counter()
    epoch_dataset(urls, seed=1, epoch=0, shuffle=shuffle, resume=states)
    plan = time.perf_counter() - t
    worker = states[0]["_snapshot"]["_worker_snapshots"]["worker_0"]["dataset_state"]
    return {
        "plan_s": plan,
        "worker_state_bytes": len(json.dumps(worker)),
        "loader_state_bytes": len(json.dumps(states[0])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=20000)
    p.add_argument("--per-shard", type=int, default=100)
    p.add_argument("--shuffle", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        urls, member = make_dataset(Path(tmp), args.samples, args.per_shard)
        first = [
            time_to_first(urls, args.samples, s, args.workers, f, args.repeats)
            for s in (0, args.shuffle)
            for f in (0.5, 0.9)
        ]
        rates = [throughput(urls, s, args.repeats) for s in (0, args.shuffle)]
        plan = elastic(urls, args.shuffle, args.workers)
    result = {"args": vars(args), "ndf_bytes": member, "first_sample": first, "throughput": rates, "elastic": plan}
    OUT.mkdir(exist_ok=True)
    (OUT / "resume.json").write_text(json.dumps(result, indent=1))
    print(f"{args.samples} samples, {args.samples // args.per_shard} shards, .ndf {member} B\n")
    print("| shuffle | workers | restored after | first sample, fresh | first sample, restored | read again |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in first:
        print(f"| {r['shuffle']} | {r['workers']} | {r['after']} | {r['fresh_s'] * 1e3:.0f} ms | "
              f"{r['restored_s'] * 1e3:.0f} ms | {r['reread_samples']} samples of {r['reread_shards']} shards |")  # fmt: skip
    cols = list(rates[0]["cpu_s_per_sample"]) + list(rates[0]["samples_per_s"])
    print("\n| shuffle | " + " | ".join(cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for r in rates:
        cells = [f"{v * 1e6:.0f} µs" for v in r["cpu_s_per_sample"].values()]
        cells += [f"{v:,.0f}/s" for v in r["samples_per_s"].values()]
        print(f"| {r['shuffle']} | " + " | ".join(cells) + " |")
    print(f"\nworker state {plan['worker_state_bytes']} B (loader state {plan['loader_state_bytes']} B); "
          f"planning an elastic resume of 2 x {args.workers} states: {plan['plan_s'] * 1e3:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
