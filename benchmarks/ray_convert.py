"""Conversion throughput: ``ndf convert`` in one process vs on Ray Data (a local instance), same source, same files.

    unshare -n sh -c 'ip link set lo up && python -m benchmarks.ray_convert --count 4000'

(``unshare -n``: Ray's servers listen on every interface whatever address it is given, so the
benchmark runs in a network namespace that has only the loopback interface, as the tests do.)

Writes CIFAR-10 train images 0..count-1 (../shared/data/cifar10) as a PNG ImageFolder once, then
converts it twice with the zoo base: ``engine="local"`` (one process, torch with the machine's
threads) and ``engine="ray"`` (a local Ray instance on 127.0.0.1 with one encoding actor per CPU,
one torch thread each). Images/s are wall-clock for the whole conversion, Ray's start-up
included and also reported apart; the two outputs must be identical file by file.
Writes ``benchmarks/out/ray_convert.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

import ndf_datasets as ndf
from benchmarks.data import cifar10

OUT = Path(__file__).resolve().parent / "out"


def _source(root: Path, count: int) -> Path:
    if (root / "done").exists():
        return root
    x, y = cifar10("train", count)
    for i in range(count):
        d = root / "train" / f"c{int(y[i])}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    (root / "done").write_text("ok")
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=4000)
    p.add_argument("--base", default="cifar10")
    p.add_argument("--psnr", type=float, default=40.0)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--work", type=Path, default=OUT / "ray_convert")
    args = p.parse_args()
    src = _source(args.work / "src", args.count)
    common = dict(base=args.base, psnr=args.psnr, shard_size=args.shard_size, progress=False)
    result: dict = {"count": args.count, "cpus": os.cpu_count(), "base": args.base, "psnr": args.psnr}
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ndf.convert(str(src), os.path.join(tmp, "local"), **common)
        result["local_s"] = time.perf_counter() - t0

        import ray
        from ndf_datasets.integrations.ray import init_local

        t0 = time.perf_counter()
        init_local(num_cpus=os.cpu_count(), runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        result["ray_start_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ndf.convert(str(src), os.path.join(tmp, "ray"), engine="ray", **common)
        result["ray_convert_s"] = time.perf_counter() - t1
        result["ray_total_s"] = time.perf_counter() - t0
        ray.shutdown()
        result["identical"] = _digest(Path(tmp, "local")) == _digest(Path(tmp, "ray"))
    for k in ("local_s", "ray_convert_s", "ray_total_s"):
        result[k.replace("_s", "_img_per_s")] = args.count / result[k]
    OUT.mkdir(exist_ok=True)
    (OUT / "ray_convert.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    if not result["identical"]:
        raise SystemExit("the Ray conversion differs from the single-process one")


if __name__ == "__main__":
    main()
