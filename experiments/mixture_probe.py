"""A training probe of issue 11's last lever: a fixed Gaussian scale mixture as the likelihood.

    OMP_NUM_THREADS=1 python -m experiments.mixture_probe --weight 0.15 --ratio 2.0 -- \
        /tmp/cifar /tmp/mix.ndfbase --init experiments/checkpoints/cifar10_fr_weights.pt \
        --config 64,64,32,64,64,32,1,4,8,16,6,64,1,1,4,1,44 --steps 10000 --lr 1e-4 \
        --lmbda 0.007 1.0 --eval-split test --eval-every 2500 --checkpoint /tmp/mix

Runs ``ndf train-base`` (the arguments after ``--``) with every latent's rate measured under
``(1 - w) N(0, sd) + w N(0, r sd)`` instead of ``N(0, sd)``, in training and in the run's
evaluation (``log.jsonl``: estimated bytes and PSNR at the anchors), so the network learns its
scales for that shape. ``experiments/entropy_probes.py`` found this shape (w = 0.15, r = 2)
codes the zoo base's own symbols in ~0.9% fewer bits at 34 dB without retraining; this
measures what training for it adds. The coder has no such family: the ``.ndfbase`` the run
exports codes with Gaussians and is not the probe's result. Compare its ``log.jsonl`` with a
control run of plain ``ndf train-base`` on the same arguments.
"""

from __future__ import annotations

import argparse
import math
import sys
from unittest import mock

import torch

import ndf_datasets.codec.fields.hyper_net as hyper_net
import ndf_datasets.codec.training as training
from ndf_datasets.cli import main as ndf_main


def mixture_bits(weight: float, ratio: float):
    """``-log2`` of the unit bin around ``s`` under the mixture (differentiable, like ``gauss_bits``)."""
    c = 1 / math.sqrt(2)

    def bits(s: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        s = s.abs()

        def mass(sd: torch.Tensor) -> torch.Tensor:
            return 0.5 * (torch.erfc((s - 0.5) / sd * c) - torch.erfc((s + 0.5) / sd * c))

        return -torch.log2(((1 - weight) * mass(sig) + weight * mass(sig * ratio)).clamp(min=1e-9))

    return bits


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weight", type=float, default=0.15, help="weight w of the wide component")
    p.add_argument("--ratio", type=float, default=2.0, help="its scale, in units of the predicted one")
    p.add_argument("train_base_args", nargs=argparse.REMAINDER, help="-- then the arguments of ndf train-base")
    args = p.parse_args()
    rest = args.train_base_args[1:] if args.train_base_args[:1] == ["--"] else args.train_base_args
    if not 0 <= args.weight < 1 or args.ratio <= 0:
        p.error("--weight must be in [0, 1) and --ratio > 0")
    bits = mixture_bits(args.weight, args.ratio)
    with mock.patch.object(hyper_net, "gauss_bits", bits), mock.patch.object(training, "gauss_bits", bits):
        return ndf_main(["train-base", *rest])


if __name__ == "__main__":
    sys.exit(main())
