"""Probe: train a shared base on CIFAR-10 train images, encode test images 0..N-1 with it.

    python -m experiments.cifar_base_probe --arch conv-field --train 10000 --epochs 3 --lmbda 2e-3 --test 200 --steps 20

Prints the mean record bytes (every header included), PSNR (RGB, 8-bit) and encode speed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import ndf_datasets as ndf
from benchmarks.data import cifar10
from ndf_datasets.fitting import psnr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="conv-field")
    p.add_argument("--config", type=int, nargs="*", default=None)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lmbda", type=float, default=2e-3)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--psnr", type=float, default=None)
    p.add_argument("--save", default=None)
    args = p.parse_args()
    x, _ = cifar10("train", args.train)
    t0 = time.time()
    kw = {"lr": args.lr} if args.arch == "conv-field" else {}
    base = ndf.fit_base(x.float() / 255, tuple(args.config) if args.config else None, arch=args.arch, epochs=args.epochs,
                        batch_size=args.batch, lmbda=args.lmbda, progress=True, **kw)
    fit_s = time.time() - t0
    if args.save:
        base.save(args.save, overwrite=True)
    xt, _ = cifar10("test", args.test)
    imgs = xt.float() / 255
    t0 = time.time()
    recs = ndf.encode_batch(list(imgs), base=base, psnr=args.psnr, lmbda=args.lmbda, steps=args.steps, min_steps=0)
    enc_s = time.time() - t0
    dec = ndf.decode_batch(recs, base=base)
    p_img = psnr(dec, imgs)
    out = {
        "arch": args.arch, "config": list(base.arch.config), "train": args.train, "epochs": args.epochs, "lmbda": args.lmbda,
        "steps": args.steps, "base_fit_s": round(fit_s, 1), "base_bytes": len(base.to_bytes()),
        "mean_bytes": float(np.mean([len(r) for r in recs])), "mean_psnr": float(p_img.mean()),
        "encode_img_s": args.test / enc_s, "macs_per_pixel": base.arch.macs_per_pixel(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
