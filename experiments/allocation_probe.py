"""How close does ``encode_batch(mean_psnr=)``'s level search come to the exact hull?

Offline, on one learned base: every image is coded at all of the base's levels once (real
coder bytes, every header byte of a label-free record), then each search variant is scored on
those tables: mean bytes at the mean-PSNR targets, and how many trial passes it ran.

    OMP_NUM_THREADS=1 python -m experiments.allocation_probe BASE.ndfbase CIFAR_DIR --count 1000 --batch 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ndf_datasets.codec.learned import allocate, choose_on_hull, psnr_8bit
from ndf_datasets.codec.shared import load_base
from ndf_datasets.data.sources.raw import read_cifar10_bin

HEADER = 6  # tag, level byte, CRC-32 (record version 3: no label, the base's size)


class Counting:
    """A coder wrapper that counts the trial passes a search runs."""

    def __init__(self, coder) -> None:
        self.coder, self.passes, self.target = coder, 0, coder.target

    def trial(self, lv):
        self.passes += 1
        return self.coder.trial(lv)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("cifar")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--targets", type=float, nargs="+", default=[34.0, 40.0])
    p.add_argument("--searches", nargs="+", default=["2:1", "2:2", "2:3", "3:3", "2:4"], help="ROUNDS:RADIUS pairs")
    a = p.parse_args()
    base = load_base(a.base)
    x8, _ = read_cifar10_bin(a.cifar, "test")
    x = torch.from_numpy(np.ascontiguousarray(x8[: a.count])).permute(0, 3, 1, 2).float() / 255
    arch = base.arch_for(32, 32)
    L = arch.levels
    results: dict[str, list[tuple[float, float]]] = {}
    passes: dict[str, int] = {}
    for start in range(0, a.count, a.batch):
        xb = x[start : start + a.batch]
        coder = arch.encoder(base.weights_on("cpu"), xb)
        B = xb.shape[0]
        real = torch.zeros(B, L, dtype=torch.float64)
        est = torch.zeros(B, L, dtype=torch.float64)
        gain = torch.zeros(B, L, dtype=torch.float64)
        t0 = time.time()
        for lv in range(L):
            levels = torch.full((B,), lv, dtype=torch.long)
            payloads, recon = coder.encode(levels)
            real[:, lv] = torch.tensor([len(q) + HEADER for q in payloads], dtype=torch.float64)
            gain[:, lv] = psnr_8bit(recon, coder.target).double()
            est[:, lv] = coder.trial(levels)[1] + HEADER
        print(
            f"batch {start}: all {L} levels coded in {time.time() - t0:.0f} s; estimate - real = {float((est - real).mean()):+.2f} B (sd {float((est - real).std()):.2f})"
        )
        rows = torch.arange(B)
        for target in a.targets:
            variants: dict[str, torch.Tensor] = {
                "hull, real bytes": choose_on_hull(gain, real, target),
                "hull, estimate": choose_on_hull(gain, est, target),
            }
            for spec in a.searches:
                r, radius = (int(v) for v in spec.split(":"))
                c = Counting(coder)
                variants[f"search {r} rounds, radius {radius}"] = allocate(c, L, target, rounds=r, radius=radius)
                passes[f"search {r} rounds, radius {radius}"] = c.passes
            for name, ch in variants.items():
                results.setdefault(f"{name} @{target:g}", []).append(
                    (float(real[rows, ch].sum()), float(gain[rows, ch].sum()))
                )
    n = a.count
    for key, parts in results.items():
        name = key.rsplit(" @", 1)[0]
        print(
            f"{key:32s} {sum(b for b, _ in parts) / n:7.1f} B  {sum(g for _, g in parts) / n:6.3f} dB  passes/batch {passes.get(name, L)}"
        )


if __name__ == "__main__":
    main()
