"""Train a shared base on a dataset's TRAIN split and save it.

    python -m experiments.train_base cifar --arch conv-field --epochs 12 --lmbda 4e-4 \
        --out benchmarks/out/bases/cifar_cf_4e-4.ndfbase
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ndf_datasets as ndf
from benchmarks.data import cifar10, mnist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset", choices=["cifar", "mnist"])
    p.add_argument("--arch", default="conv-field")
    p.add_argument("--config", type=int, nargs="*", default=None)
    p.add_argument("--train", type=int, default=None, help="first N train images (default all)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lmbda", type=float, default=4e-4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    x, _ = (cifar10 if args.dataset == "cifar" else mnist)("train", args.train)
    t0 = time.time()
    kw = {"lr": args.lr} if args.arch == "conv-field" else {}
    base = ndf.fit_base(x, tuple(args.config) if args.config else None, arch=args.arch, epochs=args.epochs,
                        batch_size=args.batch, lmbda=args.lmbda, seed=args.seed, progress=True,
                        metadata={"dataset": args.dataset, "split": "train"}, **kw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    base.save(args.out, overwrite=True)
    print(json.dumps({"out": str(args.out), "seconds": round(time.time() - t0, 1), "bytes": len(base.to_bytes()),
                      "hash": base.hash.hex(), "config": list(base.arch.config), "macs_per_pixel": base.arch.macs_per_pixel()}))


if __name__ == "__main__":
    main()
