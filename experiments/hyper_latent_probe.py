"""Is the hyper-latent's size a MAC lever? Drop the ``z`` channels that carry no bits, measure.

    OMP_NUM_THREADS=1 python -m experiments.hyper_latent_probe --count 500

The zoo's ``cifar10`` network (``experiments/checkpoints/cifar10_fr_weights.pt``) codes almost
nothing in about half of its 32 ``z`` channels (``experiments/entropy_probes.py``). Cutting them
(``Nz`` 32 -> k) would free ``9 * (32 - k)`` decoder MACs/px in ``hs1`` for the entropy networks,
the one capacity lever the design probes found. This probe measures what the cut costs before
any retraining, so the trade can be priced without a training run:

1. the channels' use: the share of non-zero symbols per channel at five levels on CIFAR-10
   **train** images (the channels to keep are chosen on train, never on test);
2. the cut: the kept channels' weights are copied, and each dropped channel's decoded value
   (its mean ``z_mean``, the symbol being almost always zero) is folded into ``hs1``'s bias as
   it reaches an interior position; at the 4x4 grid's border the zero padding makes that
   contribution differ, which no bias can carry;
3. the same cut keeping also the unused channels whose constant does reach ``hs1`` (``|z_mean|``
   times the norm of their ``hs1`` weights above ``--constants``): those tell ``hs1`` where the
   grid's border is;
4. the estimate (the float entropy model on rounded latents, as ``ndf train-base --eval-split``
   reports it) at the six anchors on CIFAR-10 test images, and bytes at 34 / 40 dB.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

import ndf_datasets as ndf
from benchmarks.data import cifar10
from benchmarks.rd import bytes_at
from ndf_datasets.codec.fields.hyper_net import HyperConfig, HyperNet
from ndf_datasets.codec.training import _rounded

CKPT = "experiments/checkpoints/cifar10_fr_weights.pt"
CONFIG = (64, 64, 32, 64, 64, 32, 1, 4, 8, 16, 6, 64, 1, 1, 4, 1, 44)


def channel_use(images: torch.Tensor, levels: tuple[int, ...] = (0, 16, 32, 48, 63)) -> torch.Tensor:
    """Share of non-zero ``z`` symbols per channel, averaged over ``levels``, coded by the zoo base
    (the calibrated export of :data:`CKPT`: calibration moves scales only, never a symbol)."""
    base = ndf.load_base("cifar10")
    enc = base.arch.encoder(base.weights_on("cpu"), images.float() / 255)
    use = torch.zeros(CONFIG[2], dtype=torch.float64)
    for lv in levels:
        trace: list = []  # the coded symbols, z first (as scale calibration reads them)
        with torch.no_grad():
            base.arch.code(enc.net, torch.full((len(images),), lv), y=enc.y, z=enc.z, dry=True, residuals=False, trace=trace)
        use += (trace[0][1] != 0).double().mean((0, 2, 3))
    return use / len(levels)


def cut(state: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """``state`` with only the ``z`` channels ``keep``; dropped ones folded into ``hs1``'s bias."""
    drop = torch.tensor([c for c in range(state["z_mean"].numel()) if c not in set(keep.tolist())])
    out = dict(state)
    w = state["hs1.weight"]
    out["hs1.bias"] = state["hs1.bias"] + (w[:, drop].sum((2, 3)) * state["z_mean"][drop]).sum(1)
    out["hs1.weight"] = w[:, keep].clone()
    out["ha.2.weight"], out["ha.2.bias"] = state["ha.2.weight"][keep].clone(), state["ha.2.bias"][keep].clone()
    for k in ("z_mean", "z_logscale"):
        out[k] = state[k][keep].clone()
    out["log_dz"] = state["log_dz"][:, keep].clone()
    return out


@torch.no_grad()
def estimate(state: dict[str, torch.Tensor], nz: int, x: torch.Tensor) -> list[tuple[float, float]]:
    """(bytes, PSNR) at the six anchors: the float model's ideal code length + 8 bytes."""
    cfg = dataclasses.replace(HyperConfig.from_values(CONFIG), Nz=nz)
    net = HyperNet(cfg, 3)
    net.load_state_dict(state)
    net.eval()
    rows = []
    for a in range(cfg.A):
        bits, x_hat = _rounded(net, x, torch.full((len(x),), float(a)))
        mse = ((((x_hat.clamp(0, 1) * 255).round() / 255) - x) ** 2).flatten(1).mean(1).clamp(min=1e-12)
        rows.append((float(bits.mean()) / 8 + 8, float((10 * torch.log10(1 / mse)).mean())))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=500, help="train images for the use, test images for the estimate")
    p.add_argument("--keep", type=int, nargs="+", default=[18, 16, 12], help="channels to keep in each cut (the uncut 32 is the reference)")
    p.add_argument("--save", default=None, help="write the last --keep cut (with its constant channels) here, for `ndf train-base --init`")
    p.add_argument("--constants", type=float, default=0.5, help="then keep every unused channel with |z_mean| * |hs1 weights| above this too")
    args = p.parse_args()
    torch.set_num_threads(1)
    state = dict(torch.load(CKPT, map_location="cpu", weights_only=True)["model"])
    use = channel_use(cifar10("train", args.count)[0])
    order = use.argsort(descending=True)
    print(f"z channels by use on CIFAR-10 train 0-{args.count - 1} (share of non-zero symbols, levels 0-63):")
    for c in order.tolist():
        norm = float(state["hs1.weight"][:, c].norm())
        print(f"  {c:2d}: {float(use[c]):.4f}  z_mean {float(state['z_mean'][c]):+.2f}  |hs1 weights| {norm:.2f}")
    x = cifar10("test", args.count)[0].float() / 255
    ref = estimate(state, len(use), x)
    report(len(use), ref, ref)
    # the unused channels that hold a constant: at the border their hs1 contribution differs
    strength = state["z_mean"].abs() * state["hs1.weight"].transpose(0, 1).flatten(1).norm(dim=1)
    cuts = [k for k in args.keep if k < len(use)]
    for k in cuts:
        report(k, estimate(cut(state, order[:k].sort().values), k, x), ref)
    for k in cuts:
        extra = [c for c in order[k:].tolist() if strength[c] > args.constants]
        keep = torch.tensor(sorted(order[:k].tolist() + extra))
        print(f"  + the constant channels {extra}:", end=" ")
        report(len(keep), estimate(cut(state, keep), len(keep), x), ref)
    if args.save and cuts:
        torch.save({"model": cut(state, keep)}, args.save)
        print(f"wrote {args.save}: Nz {len(keep)}, channels {keep.tolist()} of {CKPT}")


def report(nz: int, pts: list[tuple[float, float]], ref: list[tuple[float, float]]) -> None:
    """One line: the estimate at 34 / 40 dB of a network with ``nz`` channels against the uncut ``ref``."""
    b34, b40 = bytes_at(pts, 34.0), bytes_at(pts, 40.0)
    r34, r40 = bytes_at(ref, 34.0), bytes_at(ref, 40.0)
    print(
        f"Nz {nz:2d} (frees {9 * (CONFIG[2] - nz):3d} MACs/px): 34 dB at {b34:.1f} B ({100 * (b34 / r34 - 1):+.2f}%), "
        f"40 dB at {b40:.1f} B ({100 * (b40 / r40 - 1):+.2f}%); anchors " + ", ".join(f"{b:.0f}/{q:.2f}" for b, q in pts)
    )


if __name__ == "__main__":
    main()
