"""Conversions on a local Ray instance, run by tests/test_ray.py in a subprocess (in a loopback-only network namespace).

Usage: ``python tests/ray_job.py SRC OUT_PREFIX MODE...`` with modes

* ``plain``: ``ndf.convert(SRC, OUT_PREFIX-plain, engine="ray")``;
* ``crash``: the same with an encoder whose actor dies (``os._exit``) the first time it takes
  unit 2 (Ray restarts it and retries the task) into ``OUT_PREFIX-crash``;
* ``encoder``: ``NDFEncoder`` in a user pipeline (``map_batches`` over an ``image`` column);
* ``slow``: like ``plain`` into ``OUT_PREFIX-slow``, one actor that sleeps before each unit
  (for the kill-and-resume test).

Prints one JSON line per mode: ``{"mode": ..., "encoded": ..., "skipped": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ndf_datasets.integrations.ray import NDFEncoder, NDFShardEncoder, convert_ray, init_local  # noqa: E402

import ndf_datasets as ndf  # noqa: E402

#: the conversion settings of every Ray test (tests/test_ray.py makes its single-process reference with them)
KW = dict(shard_size=4, batch_size=4, steps=20, base=None, base_epochs=1, psnr=24.0, progress=False)


class CrashOnce(NDFShardEncoder):
    """Dies (the whole actor process) the first time it is given unit 2."""

    marker = ""

    def __call__(self, batch):
        if 2 in [int(o) for o in batch["ordinal"]] and not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed once")
            os._exit(1)
        return super().__call__(batch)


class Slow(NDFShardEncoder):
    def __call__(self, batch):
        time.sleep(1.0)
        return super().__call__(batch)


def main() -> None:
    src, prefix, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
    init_local(num_cpus=2, object_store_memory=100 << 20)
    for mode in modes:
        if mode == "encoder":
            import ray.data

            base = ndf.load_base(next(Path(f"{prefix}-plain").glob("*.ndfbase")))
            rng = np.random.default_rng(0)
            rows = [{"image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "label": i % 2} for i in range(6)]
            ds = ray.data.from_items(rows).map_batches(NDFEncoder, fn_constructor_kwargs={"base": base, "steps": 3},
                                                        batch_size=3, compute=ray.data.ActorPoolStrategy(size=1))  # fmt: skip
            out = ds.take_all()
            labels = [ndf.read_field(bytes(r["ndf"]), base).label for r in out]
            print(json.dumps({"mode": mode, "rows": len(out), "labels": sorted(labels),
                              "psnr_ok": all(r["psnr"] > 5 for r in out)}), flush=True)  # fmt: skip
            continue
        CrashOnce.marker = f"{prefix}-crash.marker"
        encoder = {"plain": NDFShardEncoder, "crash": CrashOnce, "slow": Slow}[mode]
        result = convert_ray(src, f"{prefix}-{mode}", encoder=encoder, concurrency=1 if mode == "slow" else 2,
                             **KW)  # fmt: skip
        print(json.dumps({"mode": mode, "encoded": result.encoded, "skipped": result.skipped}), flush=True)


if __name__ == "__main__":
    main()
