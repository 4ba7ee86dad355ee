"""Encoding with a learned base: rate control to a PSNR target, compact records, honest reports.

``encode_learned`` is what ``ndf.encode(..., base=...)`` and ``ndf.encode_batch`` run for
``hyper-field`` and ``pixel-context`` bases. Per image it picks the *smallest* rate level whose
decoded PSNR reaches the target (a batched binary search over the base's levels, then, for
``hyper-field``, a few refinement steps at that level and a last check one level down and up).
A target the base can not reach is not silent: the image gets the base's best level, and
:class:`EncodeReport` says so (``ndf.encode`` warns, ``ndf convert`` counts them).

``mean_psnr=`` is the other contract: the batch's *mean* PSNR reaches the target at the fewest
bytes. Each image takes the level that maximises ``psnr - slope * bytes`` for one slope shared by
the batch (bits go where they buy the most decibels: easy images get more, hard ones less), and
the slope is the largest whose mean still reaches the target. Measured on CIFAR-10 test 0-999
with the zoo base at 34 / 40 dB: 8% / 6.6% fewer bytes than every image at the target, 3.8% /
3.2% fewer than one fixed level (BENCHMARKS.md; WebP gains as much from the same allocation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .record import write_record
from .shared import SharedBase

__all__ = ["EncodeReport", "encode_learned", "allocate", "choose_on_hull", "DEFAULT_REFINE_STEPS"]

#: Refinement steps per image by default: 0, the amortised analysis alone. Measured on CIFAR-10
#: (2026-12-01): 8 steps cost 7x the encode time for 0-2.4% fewer bytes; opt in with refine_steps=.
DEFAULT_REFINE_STEPS = 0


@dataclass
class EncodeReport:
    """What an encode call measured, per image (input order)."""

    levels: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)  # indices whose target (or floor) was not reached
    mean_unreachable: list[int] = field(default_factory=list)  # indices in batches whose mean target was not reached

    def extend(self, other: "EncodeReport", offset: int) -> None:
        self.levels += other.levels
        self.psnr += other.psnr
        self.nbytes += other.nbytes
        self.unreachable += [offset + i for i in other.unreachable]
        self.mean_unreachable += [offset + i for i in other.mean_unreachable]


def psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per image of a decode rounded to 8 bits (what a PNG of it holds, and what ``ndf
    convert`` measures) against the target; identical images give 100 dB."""
    a8 = torch.round(a.clamp(0, 1) * 255) / 255
    mse = ((a8 - b) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


_psnr = psnr_8bit


def encode_learned(
    base: SharedBase,
    images: torch.Tensor,
    psnr: float | None = None,
    level: int | None = None,
    labels: list[int | None] | None = None,
    refine_steps: int = DEFAULT_REFINE_STEPS,
    device: str | torch.device = "cpu",
    mean_psnr: float | None = None,
) -> tuple[list[bytes], EncodeReport]:
    """Encode ``B x C x H x W`` float images (one size) as compact records of a learned base.

    Args:
        base: a ``hyper-field`` or ``pixel-context`` base.
        images: float in [0, 1].
        psnr: target PSNR (dB) of the decoded image; the smallest level that reaches it is used.
        level: a fixed rate level instead (``0 .. levels-1``; higher is better quality).
        mean_psnr: a target for the batch's mean PSNR, at the fewest bytes (single images may
            fall below it; see the module docstring); with ``psnr=``, no image goes below
            ``psnr`` (a floor). Refinement does not combine with it (it would move the PSNR
            the allocation measured).
        labels: per image, stored in the record.
        refine_steps: ``hyper-field`` per-image refinement steps (0 = amortised analysis only).
        device: where to run the networks.

    Returns:
        The records and an :class:`EncodeReport`.
    """
    B, C, H, W = images.shape
    labels = list(labels) if labels is not None else [None] * B
    if (H, W) != (base.arch.height, base.arch.width) and not getattr(base.arch, "any_size", True):
        raise ValueError(f"this {base.arch.name} base codes {base.arch.height}x{base.arch.width} images, not {H}x{W}")
    arch = base.arch_for(H, W)
    levels = arch.levels
    if (level is not None) == (psnr is not None or mean_psnr is not None):
        raise ValueError(
            "give level= (a rate level), or psnr= (each image's target in dB) and/or mean_psnr= (the batch's mean; "
            "psnr= is then each image's floor)"
        )
    if level is not None and not 0 <= int(level) < levels:
        raise ValueError(f"level {level} is outside this base's levels 0..{levels - 1}")
    if mean_psnr is not None and refine_steps:
        raise ValueError("mean_psnr= does not combine with refine_steps (refinement would move the PSNR it allocated)")
    coder = arch.encoder(base.weights_on(device), images.to(device))
    if level is not None:
        chosen = torch.full((B,), int(level), dtype=torch.long)
    else:
        floor = None
        if psnr is not None:
            lo = torch.zeros(B, dtype=torch.long)
            hi = torch.full((B,), levels - 1, dtype=torch.long)
            while bool((lo < hi).any()):  # smallest level reaching the target (PSNR grows with the level)
                mid = (lo + hi) // 2
                ok = _psnr(coder.reconstruct(mid), coder.target) >= psnr
                hi = torch.where(ok & (lo < hi), mid, hi)
                lo = torch.where(~ok & (lo < hi), mid + 1, lo)
            floor = coder.settle(coder.refine(lo, refine_steps), psnr)
        chosen = floor if mean_psnr is None else allocate(coder, levels, float(mean_psnr), lowest=floor)
    payloads, recon = coder.encode(chosen)
    measured = _psnr(recon, coder.target).tolist()
    size = None if (H, W) == (base.arch.height, base.arch.width) else (H, W)
    records = [write_record(base.hash, int(q), p, labels[i], size) for i, (q, p) in enumerate(zip(chosen.tolist(), payloads))]
    report = EncodeReport(chosen.tolist(), measured, [len(r) for r in records])
    if psnr is not None:  # a target, or the floor under a mean
        report.unreachable = [i for i, v in enumerate(measured) if v < psnr - 1e-6]
    if mean_psnr is not None and sum(measured) / B < mean_psnr - 1e-6:
        report.mean_unreachable = list(range(B))  # the batch's mean is short: every image is at its best PSNR
    return records, report


def allocate(coder, levels: int, target: float, rounds: int = 2, lowest: torch.Tensor | None = None, radius: int = 3) -> torch.Tensor:
    """Per image, the level of the fewest total bytes whose batch mean PSNR reaches ``target``
    (and, given ``lowest``, no level below each image's ``lowest``: a PSNR floor).

    Each image takes the level maximising ``psnr - slope * bytes``; the shared slope is bisected
    to the largest that keeps the mean at the target (the lower convex hull of the batch's
    rate-PSNR points). The points are tried, not guessed: every ~8th level, then the levels
    within ``radius`` of each image's choice on the interpolated curve, ``rounds`` times (~21
    trial passes with 64 levels and radius 3); the last choice uses tried points only, so the
    mean is what the records decode to (bytes are the estimate, which is the same for every
    level to ~2 B). An image's PSNR is not concave in its level (the rounding of its latents
    makes some levels better buys than their neighbours), so a wider neighbourhood finds more
    of the exact hull: on CIFAR test 0-999 radius 1 left 0.6% / 0.4% over the hull of all 64
    levels at a 34 / 40 dB mean, radius 3 0.2% / 0.1% (``experiments/allocation_probe.py``).
    """
    B = coder.target.shape[0]
    known = torch.zeros(B, levels, dtype=torch.bool)
    gain = torch.zeros(B, levels, dtype=torch.float64)  # PSNR
    cost = torch.zeros(B, levels, dtype=torch.float64)  # bytes
    rows = torch.arange(B)

    def tried(lv: torch.Tensor) -> None:
        if bool(known[rows, lv].all()):
            return
        recon, nbytes = coder.trial(lv)
        gain[rows, lv] = _psnr(recon, coder.target).double().cpu()
        cost[rows, lv] = nbytes.double().cpu()
        known[rows, lv] = True

    allowed = torch.ones(B, levels, dtype=torch.bool)
    if lowest is not None:
        allowed = torch.arange(levels)[None, :] >= lowest.cpu()[:, None]
        tried(lowest.cpu())
    step = max(1, round(levels / 8))
    for lv in sorted(set(range(0, levels, step)) | {levels - 1}):
        tried(torch.full((B,), lv, dtype=torch.long))
    never, free = torch.tensor(-1e9, dtype=torch.float64), torch.tensor(1e9, dtype=torch.float64)
    for _ in range(rounds):
        g, c = _interpolated(known, gain, cost)
        choice = choose_on_hull(torch.where(allowed, g, never), c, target)
        for off in range(-radius, radius + 1):
            tried((choice + off).clamp(0, levels - 1))
    # tried points only: the others can not be chosen
    usable = known & allowed
    return choose_on_hull(torch.where(usable, gain, never), torch.where(usable, cost, free), target)


def _interpolated(known: torch.Tensor, gain: torch.Tensor, cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's PSNR and bytes at every level, linear between its tried levels."""
    lv = np.arange(known.shape[1])
    g, c = gain.clone(), cost.clone()
    for i in range(known.shape[0]):
        at = np.nonzero(known[i].numpy())[0]
        g[i] = torch.from_numpy(np.interp(lv, at, gain[i, at].numpy()))
        c[i] = torch.from_numpy(np.interp(lv, at, cost[i, at].numpy()))
    return g, c


def choose_on_hull(gain: torch.Tensor, cost: torch.Tensor, target: float) -> torch.Tensor:
    """Per row (image), the column (level) maximising ``gain - slope * cost`` for the largest
    slope whose mean gain reaches ``target``; every image at its best gain when even that falls
    short. ``gain``, ``cost``: ``B x L`` (e.g. PSNR and bytes of each image at each level; the
    RD benchmark allocates Pillow qualities with it too)."""
    rows = torch.arange(gain.shape[0])

    def pick(slope: float) -> torch.Tensor:
        return (gain - slope * cost).argmax(1)

    lo, hi = 0.0, 1.0  # dB per byte; at 1 dB/B every image takes its smallest record
    if float(gain[rows, pick(lo)].mean()) < target:
        return pick(lo)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(gain[rows, pick(mid)].mean()) >= target:
            lo = mid
        else:
            hi = mid
    return pick(lo)


def warn_unreachable(report: EncodeReport, psnr: float | None, mean_psnr: float | None = None) -> None:
    """The warning ``ndf.encode`` gives when a target could not be reached (``psnr``: each
    image's target, or the floor under ``mean_psnr``)."""
    if mean_psnr is not None and report.mean_unreachable:
        got = sum(report.psnr[i] for i in report.mean_unreachable) / len(report.mean_unreachable)
        warnings.warn(
            f"{len(report.mean_unreachable)} of {len(report.psnr)} images are in batches whose mean can not reach "
            f"{mean_psnr:.1f} dB with this base: each image at its best level, {got:.2f} dB on average; "
            "use a base trained for higher rates",
            stacklevel=4,
        )
    if psnr is None or not report.unreachable:
        return
    best = max(report.psnr[i] for i in report.unreachable)
    warnings.warn(
        f"{len(report.unreachable)} of {len(report.psnr)} images can not reach {psnr:.1f} dB with this base: "
        f"encoded at its highest level, reaching {best:.2f} dB at best; use a base trained for higher rates",
        stacklevel=4,
    )
