"""Offline probes of a hyper-field base's entropy model (no training): two levers of issue 11.

    OMP_NUM_THREADS=1 python -m experiments.entropy_probes --base cifar10 --count 1000

1. **Likelihood shape.** The coder codes every latent symbol under a quantised Gaussian of the
   scale the entropy networks predict. Would another shape, with the same predicted scale,
   code the same rounded symbols in fewer bits? Tried: the Gaussian with its scale multiplied
   by ``c``; a Laplace with ``b = c * sd``; fixed scale mixtures ``(1 - w) N(0, c sd) + w N(0,
   k c sd)`` (no extra network outputs, so no extra decoder MACs). A trained likelihood would
   do at least as well as the best of these on the network trained for the Gaussian.
2. **Hyper-latent size.** How many of the ``Nz`` channels of ``z`` carry anything: a channel
   whose symbols are (almost) never non-zero costs (almost) no bytes, so a smaller ``Nz`` saves
   decoder MACs (``hs1``), not bytes.

Reads the CIFAR-10 test images 0..count-1 from ``../shared/data`` (benchmarks.data).
"""

from __future__ import annotations

import argparse
import math
from unittest import mock

import torch

import ndf_datasets as ndf
import ndf_datasets.codec.fields.hyper as hyper
from benchmarks.data import cifar10
from ndf_datasets.codec.gaussian import SCALE_TABLE


def _cdf_gauss(v: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-v / (sd * math.sqrt(2)))


def _cdf_laplace(v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(v < 0, 0.5 * torch.exp(v / b), 1 - 0.5 * torch.exp(-v / b))


def _bits(cdf, s: torch.Tensor, p: torch.Tensor) -> float:
    pr = (cdf(s + 0.5, p) - cdf(s - 0.5, p)).clamp(min=1e-9)
    return float(-torch.log2(pr).sum())


def _shapes() -> dict[str, object]:
    out: dict[str, object] = {}
    for c in (0.9, 1.0, 1.1):
        out[f"gauss x{c}"] = lambda v, sd, c=c: _cdf_gauss(v, sd * c)
    for c in (0.6, 0.7071, 0.8):
        out[f"laplace b={c}sd"] = lambda v, sd, c=c: _cdf_laplace(v, sd * c)
    for w, k in ((0.05, 3.0), (0.1, 2.5), (0.15, 2.0), (0.2, 2.0)):
        for c in (0.8, 0.9):
            out[f"mix w={w} k={k} x{c}"] = lambda v, sd, w=w, k=k, c=c: (1 - w) * _cdf_gauss(v, sd * c) + w * _cdf_gauss(v, sd * c * k)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="cifar10", help="zoo name or .ndfbase path (a hyper-field base)")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--levels", type=int, nargs="+", default=[16, 20, 40, 44])
    args = p.parse_args()
    torch.set_num_threads(1)
    base = ndf.load_base(args.base)
    x = cifar10("test", args.count)[0].float() / 255
    enc = base.arch.encoder(base.weights_on("cpu"), x)
    table = torch.from_numpy(SCALE_TABLE)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = hyper._information

    def record(symbols: torch.Tensor, scale_idx: torch.Tensor) -> torch.Tensor:  # what the encoder codes, in order
        seen.append((symbols.clone(), scale_idx.clone()))
        return real(symbols, scale_idx)

    print(f"base {args.base}, CIFAR-10 test 0-{args.count - 1}; bytes per image")
    for lv in args.levels:
        seen.clear()
        with mock.patch.object(hyper, "_information", record):
            enc.trial(torch.full((len(x),), lv))
        (sz, jz), ys = seen[0], seen[1:]
        s = torch.cat([a.flatten() for a, _ in ys]).double()
        sd = table[torch.cat([b.flatten() for _, b in ys]).long()]
        n = 8 * len(x)
        gauss = _bits(_cdf_gauss, s, sd) / n
        res = {name: _bits(cdf, s, sd) / n for name, cdf in _shapes().items()}
        best = min(res, key=res.get)
        laplace = min((v, k) for k, v in res.items() if k.startswith("laplace"))
        print(
            f"level {lv}: y {gauss:.1f} B under the Gaussian; best Laplace ({laplace[1]}) {laplace[0]:.1f} B "
            f"({100 * (laplace[0] / gauss - 1):+.2f}%); best of all ({best}) {res[best]:.1f} B ({100 * (res[best] / gauss - 1):+.2f}%)"
        )
        per = torch.stack([real(sz[:, c : c + 1], jz[:, c : c + 1]).mean() / 8 for c in range(sz.shape[1])])
        used = (sz != 0).double().mean((0, 2, 3)) >= 0.005
        print(
            f"          z {float(per.sum()):.1f} B: {int(used.sum())} of {sz.shape[1]} channels non-zero in >= 0.5% of positions; "
            f"the other {int((~used).sum())} cost {float(per[~used].sum()):.2f} B together"
        )


if __name__ == "__main__":
    main()
