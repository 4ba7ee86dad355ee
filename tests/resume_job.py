"""Processes for tests/test_resume.py: a fresh process that restores a loader, and real ``torch.distributed`` ranks.

Usage: ``python tests/resume_job.py MODE SPEC.json OUT.json [RANK WORLD PORT]``; the spec holds
``urls``, ``seed``, ``epoch`` and, per mode:

* ``restore``: ``jobs``, a list of ``{"shuffle": n, "state": path}``: for each, a
  ``StatefulDataLoader(epoch_dataset(...).map(ndf_samples(ndf_decoder(size=None))),
  batch_size=None, num_workers=2)`` restored from the ``torch.save``-d loader state; writes the
  keys and pixel sums of the rest of the epoch, then the keys of the loader's next pass (the
  same epoch again) and of the next epoch;
* ``save`` (one rank of a gloo group on 127.0.0.1, rank and world from the group, not from
  the environment): reads ``take[RANK]`` samples, ``torch.save``-s the loader state to
  ``state_prefix + RANK``; writes the keys it read;
* ``resumed`` (a rank of another group): ``epoch_dataset(..., resume=[every saved state])``
  read to the end; writes the keys.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from ndf_datasets.integrations.webdataset import epoch_dataset, ndf_decoder, ndf_samples  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402

WORKERS = 2


def _loader(spec: dict, shuffle: int, resume: list | None = None) -> StatefulDataLoader:
    ds = epoch_dataset(spec["urls"], seed=spec["seed"], epoch=spec["epoch"], shuffle=shuffle, resume=resume)
    return StatefulDataLoader(ds.map(ndf_samples(ndf_decoder(size=None))), batch_size=None, num_workers=WORKERS)


def restore(spec: dict) -> list[dict]:
    out = []
    for job in spec["jobs"]:
        loader = _loader(spec, job["shuffle"])
        loader.load_state_dict(torch.load(job["state"], weights_only=True))
        rest = [(s["__key__"], float(s["ndf"].double().sum())) for s in loader]
        again = [s["__key__"] for s in loader]
        following = [s["__key__"] for s in _loader({**spec, "epoch": spec["epoch"] + 1}, job["shuffle"])]
        out.append({"rest": rest, "again": again, "next_epoch": following})
    return out


def rank_job(mode: str, spec: dict, rank: int, world: int, port: int) -> list[str]:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        if mode == "save":
            loader = _loader(spec, spec["shuffle"])
            it = iter(loader)
            keys = [next(it)["__key__"] for _ in range(spec["take"][rank])]
            state = loader.state_dict()
            workers = [w["dataset_state"] for w in state["_snapshot"]["_worker_snapshots"].values()]
            found = sorted((w["rank"], w["world"], w["worker"], w["workers"]) for w in workers)
            assert found == [(rank, world, w, WORKERS) for w in range(WORKERS)], f"ranks from the group: {found}"
            torch.save(state, spec["state_prefix"] + str(rank))
            del it
        else:
            saved = [torch.load(spec["state_prefix"] + str(r), weights_only=True) for r in range(spec["saved_world"])]
            keys = [s["__key__"] for s in _loader(spec, spec["shuffle"], resume=saved)]
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return keys


def main(argv: list[str]) -> None:
    mode, spec_path, out_path = argv[:3]
    spec = json.loads(Path(spec_path).read_text())
    if mode == "restore":
        result = restore(spec)
    else:
        rank, world, port = (int(a) for a in argv[3:6])
        result = rank_job(mode, spec, rank, world, port)
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
