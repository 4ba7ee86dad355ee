"""The ``pixel-context`` network: a multi-pass context model over near-losslessly quantised pixels.

An ``H x W`` image (``H, W`` multiples of 4) is coded in five passes, each predicting a mean and a
log-scale per pixel of one lattice from the pixels already decoded:

1. the 1/4 lattice (pixels ``(4i, 4j)``), from a learned position map only;
2. the ``(1, 1)`` phase of the 1/2 lattice, from the 1/4 lattice;
3. the ``(0, 1)`` and ``(1, 0)`` phases of the 1/2 lattice, from both;
4. and 5. the same two steps from the 1/2 lattice to the full image.

Each pass is a small exact convolutional network (:class:`~ndf_datasets.codec.exact.ExactConv`)
running at the coarse lattice of its step. Rate levels are quantiser sizes ``K``: a pixel
``x`` becomes ``v = round(x K / 255)`` and is decoded as ``round(v 255 / K)``, so black and white
are always exact and the error is at most ``255 / 2K``; ``K = 255`` is lossless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..exact import SCALE_MIN, ExactConv, q_act

__all__ = ["PixelConfig", "PixelNet", "LEVEL_K", "quantise", "dequantise", "level_k"]

#: Quantiser sizes of the rate levels, coarsest first (level 14 is lossless).
LEVEL_K: tuple[int, ...] = (8, 10, 12, 15, 17, 21, 25, 31, 36, 42, 51, 63, 85, 127, 255)


@dataclass(frozen=True)
class PixelConfig:
    """The integer configuration written into a ``pixel-context`` base (in this order)."""

    W: int = 32  # network width
    E: int = 4  # position-map channels

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_values(cls, values: tuple[int, ...]) -> "PixelConfig":
        if len(values) != 2:
            raise ValueError(f"pixel-context needs 2 config values (W, E), got {len(values)}")
        cfg = cls(*values)
        if not (1 <= cfg.W <= 128 and 1 <= cfg.E <= 16):
            raise ValueError(f"pixel-context config {values}: W must be 1..128 and E 1..16")
        return cfg


def level_k(levels: torch.Tensor) -> torch.Tensor:
    return torch.tensor(LEVEL_K, dtype=torch.long)[levels.long().cpu()]


def quantise(x255: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Integer pixels ``0..255`` -> symbols ``round(x K / 255)`` (integer arithmetic)."""
    kk = k.view(-1, *([1] * (x255.dim() - 1)))
    return torch.div(x255.long() * kk + 127, 255, rounding_mode="floor")


def dequantise(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Symbols -> integer pixels ``round(v 255 / K)`` (integer arithmetic)."""
    kk = k.view(-1, *([1] * (v.dim() - 1)))
    return torch.div(v.long() * 255 + kk // 2, kk, rounding_mode="floor")


class _Pass(nn.Module):
    def __init__(self, cin: int, cout: int, w: int):
        super().__init__()
        self.c1 = ExactConv(cin, w, 3)
        self.c2 = ExactConv(w, w, 3)
        self.c3 = ExactConv(w, w, 1)
        self.c4 = ExactConv(w, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c4(F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x)))))))

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2.exact(torch.relu(self.c1.exact(x))))
        return self.c4.exact(torch.relu(self.c3.exact(h)))


def phases(x: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    return {(a, b): x[..., a::2, b::2] for a in (0, 1) for b in (0, 1)}


def lattices(x: torch.Tensor) -> list[torch.Tensor]:
    """The five pixel sets of the passes, in coding order (each ``B x C' x h x w``)."""
    fine = phases(x)
    mid = phases(fine[(0, 0)])
    return [
        mid[(0, 0)],
        mid[(1, 1)],
        torch.cat([mid[(0, 1)], mid[(1, 0)]], 1),
        fine[(1, 1)],
        torch.cat([fine[(0, 1)], fine[(1, 0)]], 1),
    ]


def assemble(parts: list[torch.Tensor], channels: int) -> torch.Tensor:
    """Inverse of :func:`lattices`."""
    c = channels
    mid = assemble_mid(parts[:3], c)
    f11, f_b = parts[3], parts[4]
    B, _, h2, w2 = mid.shape
    full = mid.new_zeros((B, c, 2 * h2, 2 * w2))
    full[..., 0::2, 0::2], full[..., 1::2, 1::2] = mid, f11
    full[..., 0::2, 1::2], full[..., 1::2, 0::2] = f_b[:, :c], f_b[:, c:]
    return full


class PixelNet(nn.Module):
    """The five pass networks and the position maps of a ``pixel-context`` base."""

    def __init__(self, cfg: PixelConfig, channels: int, height: int, width: int):
        super().__init__()
        if height % 4 or width % 4:
            raise ValueError(f"pixel-context codes images whose sides are multiples of 4, not {height}x{width}")
        self.cfg, self.channels = cfg, channels
        C, E, W = channels, cfg.E, cfg.W
        self.pos4 = nn.Parameter(0.1 * torch.randn(E, height // 4, width // 4))
        self.pos2 = nn.Parameter(0.1 * torch.randn(E, height // 2, width // 2))
        self.p0 = _Pass(E + 1, 2 * C, W)
        self.pa = nn.ModuleList([_Pass(C + E + 1, 2 * C, W) for _ in range(2)])
        self.pb = nn.ModuleList([_Pass(2 * C + E + 1, 4 * C, W) for _ in range(2)])

    def pass_params(self, i: int, known: list[torch.Tensor], cond: torch.Tensor, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale (pixel units in [0, 1]) of pass ``i`` given the decoded lattices ``known``
        (pixels in [0, 1]) and the per-image level condition ``cond`` (``B``)."""
        q = q_act if exact else (lambda v: v)
        dt = torch.float64 if exact else torch.float32
        B = cond.shape[0]
        lv, pos = (0, self.pos4) if i <= 2 else (1, self.pos2)
        pos = q(pos.to(dt))[None].expand(B, -1, -1, -1)
        h, w = pos.shape[-2:]
        parts = [pos, q(cond.to(dt))[:, None, None, None].expand(B, 1, h, w)]
        if i == 0:
            net = self.p0
        else:
            grid = known[0] if i in (1, 2) else assemble_mid(known[:3], self.channels)
            if i in (2, 4):
                other = known[1] if i == 2 else known[3]
                net = self.pb[lv]
                parts = [q(grid.to(dt)), q(other.to(dt))] + parts
            else:
                net = self.pa[lv]
                parts = [q(grid.to(dt))] + parts
        out = net.exact(torch.cat(parts, 1)) if exact else net(torch.cat(parts, 1))
        return out.chunk(2, 1) if i in (0, 1, 3) else _split_b(out, self.channels)


def _split_b(out: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    m01, l01, m10, l10 = out.split(c, 1)
    return torch.cat([m01, m10], 1), torch.cat([l01, l10], 1)


def assemble_mid(parts: list[torch.Tensor], c: int) -> torch.Tensor:
    q4, m11, m_b = parts
    B, _, h4, w4 = q4.shape
    mid = q4.new_zeros((B, c, 2 * h4, 2 * w4))
    mid[..., 0::2, 0::2], mid[..., 1::2, 1::2] = q4, m11
    mid[..., 0::2, 1::2], mid[..., 1::2, 0::2] = m_b[:, :c], m_b[:, c:]
    return mid


def sym_bits(v: torch.Tensor, mu: torch.Tensor, sig: torch.Tensor, kmax: torch.Tensor) -> torch.Tensor:
    """``-log2 p(v)`` for a Gaussian quantised to ``0..kmax`` whose tails go to the end bins."""
    c = 1 / math.sqrt(2)
    up = torch.where(v >= kmax, torch.ones_like(mu), 0.5 * torch.erfc(-(v + 0.5 - mu) / sig * c))
    lo = torch.where(v <= 0, torch.zeros_like(mu), 0.5 * torch.erfc(-(v - 0.5 - mu) / sig * c))
    return -torch.log2((up - lo).clamp(min=1e-9))


def training_bits(net: PixelNet, x255: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Bits per image at ``levels`` (teacher forcing: every pass sees the true decoded lattices)."""
    k = level_k(levels).to(x255.device)
    v = quantise(x255, k)
    xr = dequantise(v, k).float() / 255
    known = lattices(xr)
    targets = lattices(v.float())
    kf = k.float().view(-1, 1, 1, 1)
    cond = k.float() / 255
    total = x255.new_zeros(x255.shape[0], dtype=torch.float32)
    for i, tv in enumerate(targets):
        mu, log_sigma = net.pass_params(i, known, cond, exact=False)
        sig = (log_sigma.exp() * kf).clamp(min=SCALE_MIN)
        total = total + sym_bits(tv, mu * kf, sig, kf).flatten(1).sum(1)
    return total
