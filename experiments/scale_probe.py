"""How far are a hyper-field base's coded scales from the rounded symbols they code? (offline)

For each rate level, the symbols the encoder codes for ``--count`` train images and as many test
images are collected once; then each latent's coded standard deviation is multiplied by a factor
``c`` and the symbols' information is summed. Three fits are scored on the test images, each
chosen on the train images: one ``c`` for all latents, one per slice and pass, and one per slice,
pass and channel. ``table.ldy`` holds one entry per level and channel (shared by the passes), so
what :func:`~ndf_datasets.codec.calibrate.calibrate_scales` can reach lies between the first
and the last.

    OMP_NUM_THREADS=1 python -m experiments.scale_probe --base BASE.ndfbase --count 500
"""

from __future__ import annotations

import argparse

import torch

import ndf_datasets as ndf
from benchmarks.data import cifar10
from ndf_datasets.codec.exact import THRESHOLDS
from ndf_datasets.codec.fields.hyper_net import gauss_bits
from ndf_datasets.codec.gaussian import SCALE_TABLE

FACTORS = torch.tensor([0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3])


def _bits(s: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """``B x ms x n`` symbols under their ``sd`` times each of :data:`FACTORS`: bits per channel and factor."""
    return gauss_bits(s.double()[..., None], sd[..., None] * FACTORS).sum((0, 2))


def _per_call(base, x: torch.Tensor, level: int) -> list[torch.Tensor]:
    trace: list = []
    coder = base.arch.encoder(base.weights_on("cpu"), x)
    with torch.no_grad():
        base.arch.code(coder.net, torch.full((len(x),), level), y=coder.y, z=coder.z, dry=True, residuals=False, trace=trace)
    tab = coder.net.tables
    table = torch.from_numpy(SCALE_TABLE)
    ms = base.arch.cfg.M // base.arch.cfg.S
    out = []
    for _, k, sym, lu in trace[1:]:
        ldk = tab["table.ldy"][level, k * ms : (k + 1) * ms].long()[None, :, None]
        j = torch.searchsorted(torch.tensor(THRESHOLDS), (lu - ldk).contiguous(), right=True)
        out.append(_bits(sym, table[j]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="cifar10")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--levels", type=int, nargs="+", default=[16, 20, 40, 44])
    a = p.parse_args()
    torch.set_num_threads(1)
    base = ndf.load_base(a.base)
    xtr = cifar10("train", a.count)[0].float() / 255
    xte = cifar10("test", a.count)[0].float() / 255
    one = list(FACTORS).index(1.0)
    for lv in a.levels:
        tr, te = _per_call(base, xtr, lv), _per_call(base, xte, lv)
        now = sum(float(t[:, one].sum()) for t in te)
        glob = int(torch.stack([t.sum(0) for t in tr]).sum(0).argmin())
        by_glob = sum(float(t[:, glob].sum()) for t in te)
        by_call = sum(float(e[:, int(t.sum(0).argmin())].sum()) for t, e in zip(tr, te))
        by_chan = sum(float(e.gather(1, t.argmin(1, keepdim=True)).sum()) for t, e in zip(tr, te))
        pct = lambda b: 100 * (b / now - 1)  # noqa: E731
        print(
            f"level {lv}: y {now / (8 * a.count):.1f} B; one factor (x{float(FACTORS[glob]):.2f}) {pct(by_glob):+.2f}%; "
            f"per slice and pass {pct(by_call):+.2f}%; per slice, pass and channel {pct(by_chan):+.2f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
