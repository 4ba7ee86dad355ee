"""A training probe of issue 11's "hyperprior and/or context" question: the entropy model
without side information, context only.

    OMP_NUM_THREADS=1 python -m experiments.side_info_probe -- \
        /tmp/cifar /tmp/ctx.ndfbase --init experiments/checkpoints/cifar10_fr_weights.pt \
        --config 64,64,32,64,64,32,1,4,8,16,6,64,1,1,4,1,44 --steps 15000 --lr 1e-4 \
        --lmbda 0.007 1.0 --eval-split test --eval-every 5000 --calibrate 0 --checkpoint /tmp/ctx

Runs ``ndf train-base`` (the arguments after ``--``) with the hyper-analysis output replaced by
the hyper-latents' means: every ``z`` symbol is zero, so ``z`` costs (almost) no bits and tells
the entropy networks nothing. What they still see is the channel-conditional context (the
decoded slices), the checkerboard context and, through the hyper synthesis run on that
constant, a learned map of the latent position. The run's evaluation (``log.jsonl``: the float
model's ideal code length on rounded latents, the ``z`` bits included, and PSNR at the
anchors) is the probe's result; compare it with a control run of plain ``ndf train-base`` on the
same arguments (design probe qe in BENCHMARKS.md). At 32x32 the side information is 12% of a
record at 34 dB: this measures whether the context alone does better without paying for it.
The ``.ndfbase`` the run exports is not the result: it keeps the hyper-analysis of the start
(untrained here, its output replaced), whose ``z`` the trained entropy networks never saw.
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

import torch

from ndf_datasets.cli import main as ndf_main
from ndf_datasets.codec.fields.hyper_net import HyperNet


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_base_args", nargs=argparse.REMAINDER, help="-- then the arguments of ndf train-base")
    args = p.parse_args()
    rest = args.train_base_args[1:] if args.train_base_args[:1] == ["--"] else args.train_base_args
    real_init = HyperNet.__init__

    def init(self: HyperNet, *a, **k) -> None:
        real_init(self, *a, **k)
        # z := z_mean, so every symbol (z - z_mean) / step is exactly zero
        self.ha.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out) + self.z_mean[None, :, None, None])

    with mock.patch.object(HyperNet, "__init__", init):
        return ndf_main(["train-base", *rest])


if __name__ == "__main__":
    sys.exit(main())
