"""Short CIFAR trainings of conv-field configs: is the synthesis capacity the bottleneck?

    python -m experiments.cifar_capacity --epochs 3 --configs 16,2,24,16,24,64 16,2,48,16,32,64

For each config: train on all 50k train images, then on 200 lossless test images report the
amortised (0-step) point, 20 refinement steps at the training lambda, and 100 steps at
lambda/100 (close to the decoder's quality ceiling).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import ndf_datasets as ndf
from benchmarks.data import cifar10
from ndf_datasets.codec.fitting import psnr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lmbda", type=float, default=4e-4)
    p.add_argument("--configs", nargs="+", required=True)
    args = p.parse_args()
    x, _ = cifar10("train")
    xt, _ = cifar10("test", 200)
    xt = xt.float() / 255
    for cfg in args.configs:
        config = tuple(int(v) for v in cfg.split(","))
        t0 = time.time()
        base = ndf.fit_base(x, config, arch="conv-field", epochs=args.epochs, lmbda=args.lmbda, progress=False)
        row = {"config": config, "macs_per_pixel": base.arch.macs_per_pixel(), "train_s": round(time.time() - t0)}
        for name, scale, steps in (("amortised", 1.0, 0), ("refine20", 1.0, 20), ("ceiling100", 0.01, 100)):
            recs = ndf.encode_batch(list(xt), base=base, psnr=None, lmbda=args.lmbda * scale, steps=max(1, steps),
                                    min_steps=0, latent_lr=0.2 if steps else 1e-12)
            d = ndf.decode_batch(recs, base=base)
            row[name] = (round(float(np.mean([len(r) for r in recs])), 1), round(float(psnr(d, xt).mean()), 2))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
