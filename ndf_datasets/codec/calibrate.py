"""Scale calibration of a trained ``hyper-field`` base: its coded Gaussians fitted to rounded symbols.

A base is trained with additive uniform noise standing in for rounding, so the scales its
entropy networks predict fit noisy latents, not the rounded symbols a record codes: at low
rates the rounded symbols are wider than predicted (on the zoo's CIFAR-10 base, coding every
latent with 1.1x its predicted scale takes ~1% fewer bits at 34 dB). The scale a record codes
with is ``SCALES[j]``, ``j`` chosen by comparing the predicted log-scale with a per-level,
per-channel integer ``table.ldy`` (``table.jz`` directly for the hyper-latents), so the fit can
be corrected in the tables alone: :func:`calibrate_scales` shifts each level's and channel's
entry to the value that codes the symbols of some (training) images in the fewest bits.

What it changes: only the scales; every symbol, every decoded latent and pixel of a record at
a given level stays what it was (the means and steps are untouched), and decoders read the
tables like any other. The base is a new file with a new hash, so records of the old base are
refused by the new one as always.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from .exact import SCALES, THRESHOLDS
from .fields.hyper import STEP_CAP, HyperField
from .shared import SharedBase

__all__ = ["calibrate_scales", "Y_OFFSETS", "Z_SHIFTS"]

#: Shifts of ``table.ldy`` tried, in ``2**-10`` nats: the coded scale times ``exp(-d / 1024)``,
#: about 0.83x to 1.21x in 1.6% steps.
Y_OFFSETS = tuple(range(-192, 193, 16))
#: Shifts of ``table.jz`` tried, in scale-table entries (each ~10.6%).
Z_SHIFTS = tuple(range(-3, 4))
_MIN_P = 2.0**-24  # about the least probability the range coder gives a symbol of [lo, hi]


def _bits(s: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Bits of integer symbols ``s`` under zero-mean Gaussians of ``sd`` quantised to unit bins
    (the tails computed from the far side, so they stay accurate). Unlike the training's
    :func:`~ndf_datasets.codec.fields.hyper_net.gauss_bits` (floor ``1e-9``) the floor is the
    range coder's own, so the fit counts what records pay; the zoo bases were calibrated with it."""
    a = s.abs()
    r = 1 / (sd * math.sqrt(2))
    p = torch.where(a == 0, torch.erf(0.5 * r), 0.5 * (torch.erfc((a - 0.5) * r) - torch.erfc((a + 0.5) * r)))
    return -torch.log2(p.clamp(min=_MIN_P))


def _level_symbols(arch: HyperField, coder, level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The symbols the encoder codes at ``level``: ``z`` (``B x Nz x n``), ``y`` and the predicted
    log-scales of ``y`` (``B x M x n``, integers of ``2**-10`` nats), channels in table order."""
    trace: list = []
    levels = torch.full((coder.target.shape[0],), level, dtype=torch.long)
    with torch.no_grad():
        arch.code(coder.net, levels, y=coder.y, z=coder.z, dry=True, residuals=False, trace=trace)
    z = trace[0][1].flatten(2)
    S = arch.cfg.S
    ys: list[list[torch.Tensor]] = [[] for _ in range(S)]
    ls: list[list[torch.Tensor]] = [[] for _ in range(S)]
    for _, k, sym, lu in trace[1:]:
        ys[k].append(sym)
        ls[k].append(lu)
    y = torch.cat([torch.cat(parts, 2) for parts in ys], 1)
    lu = torch.cat([torch.cat(parts, 2) for parts in ls], 1)
    return z, y, lu


def calibrate_scales(
    base: SharedBase,
    images: torch.Tensor,
    levels: Iterable[int] | None = None,
    batch_size: int = 250,
    progress: bool = True,
    metadata: dict | None = None,
) -> SharedBase:
    """A copy of ``base`` whose scale tables fit the rounded symbols of ``images``.

    Args:
        base: a ``hyper-field`` base.
        images: ``N x C x H x W`` float images in [0, 1] of the base's size, from its training
            data (calibrating on the images you measure with would flatter the figures).
        levels: the levels to calibrate (default: all); the others keep their entries.
        batch_size: images per encoder pass.
        progress: a progress bar over the levels.
        metadata: merged into the new base's metadata (a ``scale_calibration`` entry with the
            image count is always added).

    Returns:
        The calibrated base. For each level and channel, the ``table.ldy`` shift of
        :data:`Y_OFFSETS` (``table.jz`` shift of :data:`Z_SHIFTS`) with the fewest bits over
        the images' symbols; channels the base switched off at a level are left alone.

    Raises:
        ValueError: not a ``hyper-field`` base, or images of another size.
    """
    arch = base.arch
    if not isinstance(arch, HyperField):
        raise ValueError(f"scale calibration needs a hyper-field base, not {arch.name}")
    if not images.is_floating_point():
        raise ValueError(f"calibration images must be float in [0, 1], not {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (arch.channels, arch.height, arch.width):
        raise ValueError(
            f"calibration images must be N x {arch.channels} x {arch.height} x {arch.width}, got {tuple(images.shape)}"
        )
    weights = base.weights_on("cpu")
    tables = {k: v.clone() for k, v in weights.items() if k.startswith("table.")}
    ldy, jz = tables["table.ldy"], tables["table.jz"]
    on_y, on_z = tables["table.dy"] < STEP_CAP, tables["table.dz"] < STEP_CAP
    scales = torch.tensor(SCALES, dtype=torch.float64)
    thresholds = torch.tensor(THRESHOLDS, dtype=torch.long)
    todo = list(range(arch.levels)) if levels is None else sorted(set(int(v) for v in levels))
    coders = [arch.encoder(weights, images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    bar = _progress(todo, progress)
    for lv in bar:
        ybits = torch.zeros(len(Y_OFFSETS), arch.cfg.M, dtype=torch.float64)
        zbits = torch.zeros(len(Z_SHIFTS), arch.cfg.Nz, dtype=torch.float64)
        L = ldy[lv].long()[None, :, None]
        for coder in coders:
            z, y, lu = _level_symbols(arch, coder, lv)
            z, y = z.double(), y.double()
            for i, d in enumerate(Y_OFFSETS):
                j = torch.searchsorted(thresholds, (lu - (L + d)).contiguous(), right=True)
                ybits[i] += _bits(y, scales[j]).sum((0, 2))
            for i, d in enumerate(Z_SHIFTS):
                j = (jz[lv].long() + d).clamp(0, len(SCALES) - 1)[None, :, None]
                zbits[i] += _bits(z, scales[j].expand_as(z)).sum((0, 2))
        best_y = torch.tensor(Y_OFFSETS)[ybits.argmin(0)]
        best_z = torch.tensor(Z_SHIFTS)[zbits.argmin(0)]
        ldy[lv] = torch.where(on_y[lv], ldy[lv] + best_y.float(), ldy[lv])
        jz[lv] = torch.where(on_z[lv], (jz[lv] + best_z.float()).clamp(0, len(SCALES) - 1), jz[lv])
    meta = {
        **base.metadata,
        "scale_calibration": {"images": int(images.shape[0]), "levels": len(todo)},
        **(metadata or {}),
    }
    new_weights = {**weights, **tables}
    return SharedBase.from_float_weights(arch, new_weights, [], metadata=meta)


def _progress(items: list[int], show: bool):
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="calibrating scales", unit="level")
