"""The ``hyper-field`` network: transforms, hyperprior + channel-conditional entropy model, field head.

One ``torch.nn.Module`` serves training (:meth:`HyperNet.forward`: additive noise for the rate,
straight-through rounding for the synthesis) and coding (the ``exact_*`` methods, on the
fixed-point grids of :mod:`ndf_datasets.codec.exact`). Parameter names are the tensor names of
a ``hyper-field`` base file; do not rename them.

Shapes for an ``H x W`` image (``H, W`` multiples of 8): ``y`` is ``M x H/4 x W/4``, ``z`` is
``Nz x H/8 x W/8``. Rates are levels: per level, a quantisation step per latent channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..exact import SCALE_MIN, ExactConv, q_act

__all__ = [
    "HyperConfig",
    "HyperNet",
    "GDN",
    "CrossConv",
    "DiagConv",
    "DIAG_RANK",
    "anchor_mask",
    "even_row_mask",
    "pass_masks",
    "pass_context",
    "gauss_bits",
    "resample",
    "TRAINING_ONLY",
]

#: Parameters used only while training (the base stores per-level tables derived from them).
TRAINING_ONLY = ("log_dy", "log_dz", "z_mean", "z_logscale")
#: Rank of the diagonal context of the four-pass spatial context (``cb=2``): four diagonal taps
#: into this many channels, then a 1x1 layer into the entropy network's hidden width.
DIAG_RANK = 8


@dataclass(frozen=True)
class HyperConfig:
    """The integer configuration written into a ``hyper-field`` base (in this order)."""

    N: int = 64  # transform width
    M: int = 64  # latent channels
    Nz: int = 32  # hyper-latent channels
    Hf: int = 48  # hyper features per latent position
    Hc: int = 32  # width of the per-slice entropy networks
    Hl: int = 32  # width of the latent residual predictors
    kc: int = 1  # kernel of the first entropy-network layer (1 or 3)
    S: int = 4  # channel slices (channel-conditional context)
    F: int = 8  # field features at full resolution
    Hh: int = 16  # hidden units of the per-pixel head
    A: int = 6  # anchor rate levels (training)
    Q: int = 64  # rate levels stored in the base (interpolated between anchors)
    lrp: int = 1  # latent residual prediction on/off
    head: int = 1  # 1: per-pixel MLP head (continuous field); 0: the synthesis outputs colours
    kg: int = 4  # kernel of the first synthesis layer (4 or 5)
    cb: int = 0  # spatial context inside each slice: 0 none, 1 checkerboard (2 passes), 2 four passes (written when set)
    Ns: int = 0  # synthesis width (gs1, inverse GDN, gs2); 0: the transform width N (written only when set)

    def values(self) -> tuple[int, ...]:
        """The stored config: 15 values, then ``cb`` when it is set or ``Ns`` is set, then ``Ns``
        when it is set (so bases without either keep the bytes they always had)."""
        vals = tuple(getattr(self, f.name) for f in fields(self))
        return vals if self.Ns else vals[:-1] if self.cb else vals[:-2]

    @property
    def synth_width(self) -> int:
        """The width of the synthesis transform: ``Ns``, or ``N`` when ``Ns`` is 0."""
        return self.Ns or self.N

    @classmethod
    def from_values(cls, values: tuple[int, ...]) -> "HyperConfig":
        names = [f.name for f in fields(cls)]
        if len(values) not in (len(names) - 2, len(names) - 1, len(names)):
            raise ValueError(f"hyper-field needs {len(names) - 2} to {len(names)} config values ({', '.join(names)}), got {len(values)}")
        cfg = cls(*values)
        checks = (
            (1 <= cfg.N <= 256, "N must be 1..256"),
            (1 <= cfg.M <= 256, "M must be 1..256"),
            (1 <= cfg.Nz <= 128, "Nz must be 1..128"),
            (1 <= cfg.Hf <= 256 and 1 <= cfg.Hc <= 256 and 1 <= cfg.Hl <= 256, "widths must be 1..256"),
            (cfg.kc in (1, 3), "kc must be 1 or 3"),
            (1 <= cfg.S <= 16 and cfg.M % cfg.S == 0, "S must divide M (1..16 slices)"),
            (1 <= cfg.F <= 64 and 1 <= cfg.Hh <= 128, "F must be 1..64, Hh 1..128"),
            (2 <= cfg.A <= 16, "A must be 2..16"),
            (2 <= cfg.Q <= 64, "Q must be 2..64"),
            (cfg.lrp in (0, 1) and cfg.head in (0, 1), "lrp and head are 0 or 1"),
            (cfg.kg in (4, 5), "kg must be 4 or 5"),
            (cfg.cb in (0, 1, 2), "cb must be 0, 1 or 2"),
            (0 <= cfg.Ns <= 256, "Ns must be 0..256 (0: the transform width N)"),
        )
        for ok, why in checks:
            if not ok:
                raise ValueError(f"hyper-field config {values}: {why}")
        return cfg


class GDN(nn.Module):
    """Generalised divisive normalisation, ``x / sqrt(beta + gamma x^2)`` (inverse: multiply)."""

    def __init__(self, ch: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(F.conv2d(x * x, self.gamma.square()[:, :, None, None], self.beta.square() + 1e-6))
        return x * norm if self.inverse else x / norm


def anchor_mask(x: torch.Tensor) -> torch.Tensor:
    """``1 x 1 x H x W``: 1 at the checkerboard's anchor positions (``(i + j)`` even) of a latent grid."""
    h, w = x.shape[-2:]
    i = torch.arange(h, device=x.device)[:, None]
    j = torch.arange(w, device=x.device)[None, :]
    return ((i + j) % 2 == 0).to(x.dtype)[None, None]


def even_row_mask(x: torch.Tensor) -> torch.Tensor:
    """``1 x 1 x H x W``: 1 on the even rows of a latent grid (the four-pass context's first and third passes)."""
    h, w = x.shape[-2:]
    i = torch.arange(h, device=x.device)[:, None].expand(h, w)
    return (i % 2 == 0).to(x.dtype)[None, None]


def pass_masks(cb: int, h: int, w: int) -> list[torch.Tensor]:
    """The positions of each coding pass of a slice on an ``h x w`` latent grid (bool ``h x w``).

    ``cb=0``: one pass. ``cb=1``: the checkerboard, anchors (``i + j`` even) then the rest.
    ``cb=2``: four passes, (even, even), (odd, odd), (even, odd), (odd, even) positions: the
    anchors split in two so that the second half sees its four decoded diagonal neighbours,
    and the last quarter sees all eight neighbours.
    """
    z = torch.zeros(1, 1, h, w)
    a = anchor_mask(z).bool()[0, 0]
    if cb == 0:
        return [torch.ones(h, w, dtype=torch.bool)]
    if cb == 1:
        return [a, ~a]
    e = even_row_mask(z).bool()[0, 0]
    return [a & e, a & ~e, ~a & e, ~a & ~e]


def pass_context(cb: int, g: int, done: torch.Tensor) -> dict[str, torch.Tensor]:
    """The spatial context of pass ``g`` of a slice, as keyword arguments of
    :meth:`HyperNet.slice_head` / :meth:`HyperNet.exact_slice_head`: nothing for the first pass;
    for ``cb=1`` the decoded anchors; for ``cb=2`` the decoded even-row latents (pass 1), the
    anchors (pass 2), both (pass 3). ``done``: the slice's latents decoded so far, zero elsewhere."""
    if g == 0:
        return {}
    anchors = done * anchor_mask(done)
    if cb == 1:
        return {"anchors": anchors}
    diag = done * even_row_mask(done)
    return ({"diag": diag}, {"anchors": anchors}, {"anchors": anchors, "diag": diag})[g - 1]


class CrossConv(ExactConv):
    """A 3x3 exact convolution using only the four edge neighbours (the checkerboard context:
    at a non-anchor position those are exactly its anchors); the other taps are held at zero."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3)

    def masked_weight(self) -> torch.Tensor:
        cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=self.weight.dtype, device=self.weight.device)
        return self.weight * cross

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=1)


class DiagConv(ExactConv):
    """A 3x3 exact convolution using only the four diagonal neighbours (the four-pass context:
    at an odd-row position those lie on even rows, all decoded one pass before); the other
    taps are held at zero (and start at zero, so the stored weights hold only the four)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3)
        with torch.no_grad():
            self.weight.copy_(self.masked_weight())

    def masked_weight(self) -> torch.Tensor:
        diag = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=self.weight.dtype, device=self.weight.device)
        return self.weight * diag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=1)


def soft_round(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """A differentiable rounding of sharpness ``alpha`` (Agustsson & Theis 2020): the identity as
    ``alpha -> 0``, ``round`` as ``alpha -> inf``; equal to both at integers and half-integers."""
    m = torch.floor(s) + 0.5
    return m + torch.tanh(alpha * (s - m)) / (2 * math.tanh(alpha / 2))


def gauss_bits(s: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """``-log2`` of the probability of the unit bin around ``s`` under ``N(0, sig)`` (differentiable)."""
    s = s.abs()
    c = 1 / math.sqrt(2)
    p = 0.5 * (torch.erfc((s - 0.5) / sig * c) - torch.erfc((s + 0.5) / sig * c))
    return -torch.log2(p.clamp(min=1e-9))


def resample(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A feature grid at output pixel centres: box-filtered per axis that shrinks, bicubic where it grows."""
    h, w = f.shape[-2:]
    oh, ow = size
    if (oh, ow) == (h, w):
        return f
    if oh < h or ow < w:
        f = F.adaptive_avg_pool2d(f, (min(oh, h), min(ow, w)))
    if oh > h or ow > w:
        f = F.interpolate(f, size=(oh, ow), mode="bicubic", align_corners=False)
    return f


class HyperNet(nn.Module):
    """Analysis, hyper-analysis, exact entropy networks, latent residual predictors, synthesis + head."""

    def __init__(self, cfg: HyperConfig, channels: int = 3):
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        N, M, Nz, Hf, Hc, S, C = cfg.N, cfg.M, cfg.Nz, cfg.Hf, cfg.Hc, cfg.S, channels
        ms = M // S
        self.ga = nn.Sequential(nn.Conv2d(C, N, 5, 2, 2), GDN(N), nn.Conv2d(N, N, 5, 2, 2), GDN(N), nn.Conv2d(N, M, 3, 1, 1))
        self.ha = nn.Sequential(nn.Conv2d(M, N, 3, 1, 1), nn.ReLU(), nn.Conv2d(N, Nz, 5, 2, 2))
        self.hs1 = ExactConv(Nz, N, 3)
        self.hs2 = ExactConv(N, 4 * Hf, 1)
        self.cc1 = nn.ModuleList([ExactConv(Hf + k * ms, Hc, cfg.kc) for k in range(S)])
        self.cc2 = nn.ModuleList([ExactConv(Hc, Hc, 1) for _ in range(S)])
        self.cc3 = nn.ModuleList([ExactConv(Hc, 2 * ms, 1) for _ in range(S)])
        if cfg.cb:  # zero-initialised: a network started from one without it predicts the same
            self.cb = nn.ModuleList([CrossConv(ms, Hc) for _ in range(S)])
            for m in self.cb:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        if cfg.cb == 2:  # the diagonal context, its output layer zero-initialised (starts as cb=1)
            self.cd1 = nn.ModuleList([DiagConv(ms, DIAG_RANK) for _ in range(S)])
            self.cd2 = nn.ModuleList([ExactConv(DIAG_RANK, Hc, 1) for _ in range(S)])
            for m in self.cd2:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        if cfg.lrp:
            self.lrp1 = nn.ModuleList([nn.Conv2d(Hf + (k + 1) * ms, cfg.Hl, 1) for k in range(S)])
            self.lrp2 = nn.ModuleList([nn.Conv2d(cfg.Hl, ms, 1) for _ in range(S)])
        Ns = cfg.synth_width
        self.gs1 = nn.ConvTranspose2d(M, Ns, cfg.kg, 2, (cfg.kg - 1) // 2, output_padding=1 if cfg.kg == 5 else 0)
        self.igdn = GDN(Ns, inverse=True)
        self.gs2 = nn.ConvTranspose2d(Ns, cfg.F if cfg.head else C, 4, 2, 1)
        if cfg.head:
            self.head1 = nn.Conv2d(cfg.F, cfg.Hh, 1)
            self.head2 = nn.Conv2d(cfg.Hh, C, 1)
        self.log_dy = nn.Parameter(torch.linspace(math.log(2.0), math.log(0.4), cfg.A)[:, None].repeat(1, M))
        self.log_dz = nn.Parameter(torch.linspace(math.log(1.5), math.log(0.7), cfg.A)[:, None].repeat(1, Nz))
        self.z_mean = nn.Parameter(torch.zeros(Nz))
        self.z_logscale = nn.Parameter(torch.zeros(Nz))

    # ------------------------------------------------------------------ shared pieces
    @property
    def slice_channels(self) -> int:
        return self.cfg.M // self.cfg.S

    def level_to_t(self, level: torch.Tensor) -> torch.Tensor:
        """A stored level ``0..Q-1`` as a continuous anchor position ``0..A-1``."""
        return level.float() * (self.cfg.A - 1) / (self.cfg.Q - 1)

    def log_steps(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log quantisation steps of ``y`` and ``z`` at continuous levels ``t`` (shape ``B``)."""
        A = self.cfg.A
        t = t.clamp(0, A - 1)
        lo = t.floor().long().clamp(max=A - 2)
        f = (t - lo.float())[:, None]
        return (self.log_dy[lo] * (1 - f) + self.log_dy[lo + 1] * f, self.log_dz[lo] * (1 - f) + self.log_dz[lo + 1] * f)

    def hyper(self, zh: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.hs2(F.relu(self.hs1(zh))), 2)

    def slice_hidden(self, k: int, hyp: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        """The first entropy layer of slice ``k`` on hyper features and decoded slices ``< k`` (float)."""
        return self.cc1[k](torch.cat([hyp, *ctx], 1) if ctx else hyp)

    def slice_head(
        self, k: int, h: torch.Tensor, anchors: torch.Tensor | None = None, diag: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale of slice ``k`` from :meth:`slice_hidden` (float); ``anchors``: the
        slice's decoded anchor latents (zero elsewhere), the checkerboard context of the rest;
        ``diag`` (``cb=2``): its decoded even-row latents (zero elsewhere), the diagonal context
        of the odd rows."""
        if anchors is not None:
            h = h + self.cb[k](anchors) * (1 - anchor_mask(anchors))
        if diag is not None:
            h = h + self.cd2[k](self.cd1[k](diag)) * (1 - even_row_mask(diag))
        mu, log_sigma = self.cc3[k](F.relu(self.cc2[k](F.relu(h)))).chunk(2, 1)
        return mu, log_sigma

    def slice_symbols(
        self, k: int, hyp: torch.Tensor, ctx: list[torch.Tensor], yk: torch.Tensor, dk: torch.Tensor, decode
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_sigma, s, y_hat)`` of slice ``k`` with latents ``yk`` and steps ``dk`` (float
        paths): ``s = (yk - mu) / dk`` unrounded, ``y_hat = decode(mu, s)`` (the caller's
        rounding); with the checkerboard context the anchors' parameters come first and their
        ``decode`` is the context of the other positions."""
        h = self.slice_hidden(k, hyp, ctx)
        mu, log_sigma = self.slice_head(k, h)
        if self.cfg.cb:
            masks = [p.to(yk.dtype)[None, None] for p in pass_masks(self.cfg.cb, *yk.shape[-2:])]
            done = decode(mu, (yk - mu) / dk) * masks[0]  # the decoded latents so far (zero elsewhere)
            for g in range(1, len(masks)):
                mu_g, ls_g = self.slice_head(k, h, **pass_context(self.cfg.cb, g, done))
                sel = masks[g].bool()
                mu, log_sigma = torch.where(sel, mu_g, mu), torch.where(sel, ls_g, log_sigma)
                if g + 1 < len(masks):
                    done = done + decode(mu_g, (yk - mu_g) / dk) * masks[g]
        s = (yk - mu) / dk
        return log_sigma, s, decode(mu, s)

    def exact_hyper(self, zh: torch.Tensor) -> torch.Tensor:
        """Hyper features from decoded ``z`` (float64, exact)."""
        return F.pixel_shuffle(self.hs2.exact(torch.relu(self.hs1.exact(q_act(zh)))), 2)

    def exact_slice_hidden(self, k: int, hyp: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        """The first entropy layer of slice ``k`` on hyper features and decoded slices ``< k`` (exact)."""
        return self.cc1[k].exact(torch.cat([hyp, *(q_act(c) for c in ctx)], 1) if ctx else hyp)

    def exact_slice_head(
        self, k: int, h: torch.Tensor, anchors: torch.Tensor | None = None, diag: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-scale of slice ``k`` from :meth:`exact_slice_hidden` and (spatial
        context) the slice's decoded anchors and (``cb=2``) even-row latents, zero elsewhere (exact)."""
        if anchors is not None or diag is not None:
            if anchors is not None:
                h = h + self.cb[k].exact(q_act(anchors)) * (1 - anchor_mask(anchors))
            if diag is not None:
                h = h + self.cd2[k].exact(self.cd1[k].exact(q_act(diag))) * (1 - even_row_mask(diag))
            h = q_act(h)
        h = torch.relu(self.cc2[k].exact(torch.relu(h)))
        mu, log_sigma = self.cc3[k].exact(h).chunk(2, 1)
        return mu, log_sigma

    def residual(self, k: int, hyp: torch.Tensor, decoded: list[torch.Tensor], step: torch.Tensor) -> torch.Tensor:
        """Latent residual prediction added to slice ``k`` (float; only the synthesis sees it)."""
        h = F.relu(self.lrp1[k](torch.cat([hyp, *decoded], 1)))
        return 0.5 * step * torch.tanh(self.lrp2[k](h))

    def features(self, y: torch.Tensor) -> torch.Tensor:
        """The field's feature grid at the (padded) native resolution."""
        return self.gs2(self.igdn(self.gs1(y)))

    def colour(self, f: torch.Tensor) -> torch.Tensor:
        if not self.cfg.head:
            return f + 0.5
        return self.head2(F.gelu(self.head1(f))) + 0.5

    def synth(self, y: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        f = self.features(y)
        return self.colour(f if size is None else resample(f, size))

    # ------------------------------------------------------------------ training
    def forward(
        self, x: torch.Tensor, t: torch.Tensor, rate: str = "noise", soft: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: ``B x C x H x W`` in [0, 1]; ``t``: ``B`` continuous levels. Returns
        ``(x_hat, bits, bits_z)``: the synthesis of straight-through rounded latents and a rate.

        ``rate="noise"``: the rate of additive-noise latents (the usual training proxy; for the
        many symbols whose scale is near the table's floor it charges ~0.1-0.3 bit that the coder
        never pays: ~100 B per 32x32 image above the real size). ``"round"``: the code length of
        the rounded symbols themselves (what the range coder pays), the symbols held constant:
        it trains the predicted scales and the synthesis, not the analysis, the means or the
        steps (a straight-through rate there was measured to make the curve worse), so it is a
        fine-tuning stage with those frozen (see ``TrainSettings.rate``).

        ``soft > 0``: the synthesis sees soft-rounded latents of that sharpness instead of
        straight-through rounded ones (the entropy contexts stay hard: they are what the decoder
        computes); see ``TrainSettings.soft_round``.
        """
        if rate not in ("noise", "round"):
            raise ValueError(f"rate must be 'noise' or 'round', not {rate!r}")

        def rate_input(v: torch.Tensor) -> torch.Tensor:
            if rate == "noise":
                return v + torch.empty_like(v).uniform_(-0.5, 0.5)
            return torch.round(v).detach()

        cfg, ms = self.cfg, self.slice_channels
        ly, lz = self.log_steps(t)
        dy, dz = ly.exp()[:, :, None, None], lz.exp()[:, :, None, None]
        y = self.ga(x - 0.5)
        z = self.ha(y)
        zm = self.z_mean[None, :, None, None]
        sz = (z - zm) / dz
        zsig = (self.z_logscale[None, :, None, None].exp() / dz).clamp(min=SCALE_MIN)
        bits_z = gauss_bits(rate_input(sz), zsig).flatten(1).sum(1)
        # "round": the decoded latents are constants (their gradients would be rounding noise,
        # which Adam's normalisation turns into full-size random steps of the means' weights)
        fixed = (lambda v: v.detach()) if rate == "round" else (lambda v: v)
        hyp = self.hyper(fixed(zm + dz * (sz + (torch.round(sz) - sz).detach())))
        bits = bits_z
        decoded: list[torch.Tensor] = []
        synth_in: list[torch.Tensor] = []
        for k in range(cfg.S):
            dk = dy[:, k * ms : (k + 1) * ms]

            def decode(mu: torch.Tensor, s: torch.Tensor, dk: torch.Tensor = dk) -> torch.Tensor:
                return fixed(mu + dk * (s + (torch.round(s) - s).detach()))

            log_sigma, s, yh = self.slice_symbols(k, hyp, decoded, y[:, k * ms : (k + 1) * ms], dk, decode)
            sig = (log_sigma.exp() / dk).clamp(min=SCALE_MIN)
            bits = bits + gauss_bits(rate_input(s), sig).flatten(1).sum(1)
            decoded.append(yh)
            if soft > 0:  # the value mu + dk * soft_round(s); gradients through the soft rounding
                yh = yh + dk * (soft_round(s, soft) - s - (torch.round(s) - s).detach())
            synth_in.append(yh + self.residual(k, hyp, decoded, dk) if cfg.lrp else yh)
        return self.synth(torch.cat(synth_in, 1)), bits, bits_z
