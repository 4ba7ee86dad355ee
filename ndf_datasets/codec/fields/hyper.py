"""``hyper-field`` (id 3): a learned transform codec whose decoder is a continuous field.

Records hold one range-coded stream (see :mod:`ndf_datasets.codec.record`): the hyper-latent
``z`` (``Nz x H/8 x W/8``), then ``S`` slices of the latent ``y`` (``M x H/4 x W/4``), each slice
coded under Gaussians whose means and scales the base's exact entropy networks predict from
``z`` and the slices before it (config ``cb=1``: each slice in two halves of a checkerboard,
the anchors first, the other positions also under the context of their four decoded anchor
neighbours; ``cb=2``: four passes, the anchors split by row so that the odd-row ones and the
last quarter also see their decoded diagonal neighbours). The base also stores, per rate level ``0..Q-1``, a quantisation
step per channel of ``y`` and ``z`` (``table.*`` tensors, integers).

Decoding: the symbols give ``y``; the synthesis (two 4x4 stride-2 transposed convolutions with
an inverse GDN) turns it into ``F`` feature channels at the native resolution; at any output
size the features are box-filtered (shrinking) or bicubic-interpolated (growing) at the output
pixel centres, and a per-pixel MLP ``F -> Hh -> C`` gives the colour. So a 1/2-size decode
does not alias and its head costs a quarter. Images whose sides are not multiples of 8 are
coded edge-padded and cropped before resampling.

This module holds both directions of the symbol coding (:meth:`HyperField.code`), so the
encoder and the decoder walk the same code; fitting the latents lives in
:mod:`ndf_datasets.codec.refine` and training in :mod:`ndf_datasets.codec.training`.
"""

from __future__ import annotations

import math
import threading
from typing import Mapping, Sequence

import numpy as np
import torch

from ..exact import L_BITS, STEP_BITS, log_units, scale_index
from ..gaussian import SCALE_TABLE, StreamDecoder, StreamEncoder
from .base import FieldArch, TensorSpec
from .hyper_net import (
    DIAG_RANK,
    TRAINING_ONLY,
    HyperConfig,
    HyperNet,
    gauss_bits,
    pass_context,
    pass_masks,
    resample,
)
from .registry import register_arch

__all__ = ["HyperField", "STEP_BITS", "SYMBOL_LIMIT", "export_tables"]

SYMBOL_LIMIT = 1023  # latent symbols are clipped to [-1023, 1023]
#: The largest step the tables hold (``2**15 - 1`` units of ``2**-STEP_BITS``: just under 8; the
#: tables are int16 tensor codes). A channel the network switched off at a level learns a much
#: larger step; its table entry sits at this cap, and the encoder codes its symbols as 0 (what
#: rounding with the learned step gives) instead of rounding with the capped step, which made
#: them non-zero under a tiny scale and cost up to 40 B per record (see :meth:`HyperField.code`).
STEP_CAP = 2**15 - 1
_TABLES = ("table.dy", "table.ldy", "table.dz", "table.jz", "table.zm", "table.llam")


def export_tables(net: HyperNet, lmbdas: Sequence[float]) -> dict[str, torch.Tensor]:
    """The per-level integer tables a base stores, from a trained network's float parameters
    and the rate-distortion weights of its ``A`` training anchors (used by the encoder)."""
    cfg = net.cfg
    with torch.no_grad():
        ly, lz = net.log_steps(torch.linspace(0, cfg.A - 1, cfg.Q))
        dy = torch.round(ly.double().exp() * 2**STEP_BITS).clamp(1, STEP_CAP)
        dz = torch.round(lz.double().exp() * 2**STEP_BITS).clamp(1, STEP_CAP)
        ldz = torch.round(torch.log(dz / 2**STEP_BITS) * 2**L_BITS)
        zl = torch.round(net.z_logscale.double() * 2**L_BITS)
        jz = scale_index(zl[None].expand(cfg.Q, -1) / 2**L_BITS, ldz.long())
        zm = torch.round(net.z_mean.double() * 2**L_BITS).clamp(-(2**15) + 1, 2**15 - 1)
    return {
        "table.dy": dy.float(),
        "table.ldy": torch.round(torch.log(dy / 2**STEP_BITS) * 2**L_BITS).float(),
        "table.dz": dz.float(),
        "table.jz": jz.float(),
        "table.zm": zm.float(),
        "table.llam": torch.round(torch.log(torch.tensor(list(lmbdas), dtype=torch.float64)) * 2**L_BITS).float(),
    }


class _NetCache:
    """One network per weights dict (a base's weights on one device), kept while they live."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: list[tuple[torch.Tensor, HyperNet]] = []
        self.lock = threading.Lock()

    def get(self, arch: "HyperField", weights: Mapping[str, torch.Tensor]) -> HyperNet:
        key = weights["gs1.weight"]
        with self.lock:
            for t, net in self.items:
                if t is key and net.cfg == arch.cfg and net.channels == arch.channels:
                    return net
        with torch.inference_mode(False):  # the encoder back-propagates through it
            net = HyperNet(arch.cfg, arch.channels)
            state = {k: v.clone() for k, v in weights.items() if not k.startswith("table.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if m not in TRAINING_ONLY]:
            raise ValueError(f"hyper-field weights do not match the config (missing {missing}, unexpected {unexpected})")
        net = net.to(key.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        net.tables = {k: weights[k] for k in _TABLES}  # type: ignore[attr-defined]
        with self.lock:
            self.items = [(key, net)] + self.items[: self.size - 1]
        return net


_NETS = _NetCache()


@register_arch(3, "hyper-field")
class HyperField(FieldArch):
    """Config: the values of :class:`~ndf_datasets.codec.fields.hyper_net.HyperConfig`, in order."""

    standalone = False
    learned = True  # records are coded by the base's own entropy model (no per-tensor codes)
    resamples = True  # render() handles any output size itself (no supersampling)

    def parse_config(self, config: tuple[int, ...]) -> None:
        self.cfg = HyperConfig.from_values(config)
        self.padded = (8 * math.ceil(self.height / 8), 8 * math.ceil(self.width / 8))

    @property
    def levels(self) -> int:
        return self.cfg.Q

    def tensor_specs(self) -> list[TensorSpec]:
        if "_specs" not in self.__dict__:
            with torch.device("meta"):
                net = HyperNet(self.cfg, self.channels)
            specs = []
            for name, t in net.state_dict().items():
                if name in TRAINING_ONLY:
                    continue
                role = "encoder" if name.startswith(("ga.", "ha.")) else "weight"
                specs.append(TensorSpec(name, tuple(t.shape), role))
            Q, M, Nz = self.cfg.Q, self.cfg.M, self.cfg.Nz
            for name, shape in zip(_TABLES, ((Q, M), (Q, M), (Q, Nz), (Q, Nz), (Nz,), (self.cfg.A,))):
                specs.append(TensorSpec(name, shape, "weight", step=1.0))
            self._specs = specs
        return self._specs

    def net(self, weights: Mapping[str, torch.Tensor]) -> HyperNet:
        """The network for a base's weights (built once per weights dict)."""
        return _NETS.get(self, weights)

    # ------------------------------------------------------------------ geometry and cost
    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.padded[0] // 4, self.padded[1] // 4

    def symbol_count(self) -> int:
        h4, w4 = self.latent_hw
        return self.cfg.M * h4 * w4 + self.cfg.Nz * (h4 // 2) * (w4 // 2)

    def macs_per_pixel(self) -> int:
        c, C = self.cfg, self.channels
        h4, w4 = self.latent_hw
        n4, n8 = h4 * w4, (h4 // 2) * (w4 // 2)
        ms = c.M // c.S
        macs = n8 * c.Nz * c.N * 9 + n8 * c.N * 4 * c.Hf  # hyper synthesis
        for k in range(c.S):
            macs += n4 * ((c.Hf + k * ms) * c.Hc * c.kc * c.kc + c.Hc * c.Hc + c.Hc * 2 * ms)
            if c.lrp:
                macs += n4 * ((c.Hf + (k + 1) * ms) * c.Hl + c.Hl * ms)
            if c.cb:  # the anchors' context: 4 taps at the other half of the positions
                macs += (n4 - (n4 + 1) // 2) * ms * c.Hc * 4
            if c.cb == 2:  # the diagonal context at the odd rows: 4 taps into DIAG_RANK, then 1x1
                macs += (h4 // 2) * w4 * (ms * DIAG_RANK * 4 + DIAG_RANK * c.Hc)
        ns = c.synth_width
        macs += n4 * c.M * ns * c.kg * c.kg + 4 * n4 * ns * ns  # gs1 + inverse GDN
        macs += 4 * n4 * ns * (c.F if c.head else C) * 16  # gs2
        if c.head:
            macs += 16 * n4 * (c.F * c.Hh + c.Hh * C)
        return int(round(macs / (self.padded[0] * self.padded[1])))

    def peak_values(self, height: int, width: int) -> int:
        ph, pw = self.padded
        c = self.cfg
        return max(max(c.N, c.synth_width) * ph * pw // 4, c.F * ph * pw, max(c.F, c.Hh) * height * width, c.M * ph * pw // 16 * 4)

    # ------------------------------------------------------------------ coding
    def code(
        self,
        net: HyperNet,
        levels: torch.Tensor,
        *,
        y: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        payloads: Sequence[bytes] | None = None,
        sources: Sequence[str] | None = None,
        dry: bool = False,
        residuals: bool = True,
        bits: torch.Tensor | None = None,
        trace: list | None = None,
    ) -> tuple[list[bytes] | None, torch.Tensor]:
        """Encode latents ``y, z`` (given) or decode ``payloads``; the same walk both ways.

        Args:
            net: :meth:`net` of the base's weights.
            levels: ``B`` rate levels (int).
            y, z: encoder side: float latents ``B x M x H/4 x W/4`` and ``B x Nz x H/8 x W/8``.
            payloads, sources: decoder side: one stream per image, names for errors.
            dry: encoder side: quantise only, write no stream (rate control's trial levels).
            residuals: ``False`` returns the exactly decoded latents (float64, the same bits on
                every platform and batch) instead of the synthesis input.
            bits: encoder side: a ``B`` float64 tensor to which each image's estimated code
                length (bits, the symbols' information under their coded Gaussians) is added,
                for rate allocation without running the range coder.
            trace: encoder side: a list to which the coded symbols are appended, for
                calibrating the tables (:mod:`~ndf_datasets.codec.calibrate`): ``("z", symbols)``,
                then per slice ``k`` and pass ``("y", k, symbols, log_units)`` (``B x ms x n``: the
                pass's positions, and the predicted log-scales as integers of ``2**-L_BITS``).

        Returns:
            ``(payloads, y_hat)``: the streams (encoder side; ``None`` when decoding) and the
            latents the synthesis takes (float32, residual prediction applied).
        """
        encoding = payloads is None
        cfg, ms = self.cfg, net.slice_channels
        tab = net.tables  # type: ignore[attr-defined]
        lv = levels.long().cpu()
        B = len(lv)
        h4, w4 = self.latent_hw
        dy = tab["table.dy"].double().cpu()[lv] / 2**STEP_BITS
        dz = tab["table.dz"].double().cpu()[lv][:, :, None, None] / 2**STEP_BITS
        ldy = tab["table.ldy"].cpu()[lv].long()
        jz = tab["table.jz"].cpu()[lv].long()
        zm = tab["table.zm"].double().cpu()[None, :, None, None] / 2**L_BITS
        write = encoding and not dry
        streams = [StreamEncoder() for _ in range(B)] if encoding else [
            StreamDecoder(p, s) for p, s in zip(payloads, sources or [f"<item {i}>" for i in range(B)])
        ]
        lim = SYMBOL_LIMIT
        zshape = (cfg.Nz, h4 // 2, w4 // 2)
        jz_map = jz[:, :, None, None].expand(B, *zshape)
        if encoding:  # a channel at the step cap is switched off: its symbols are 0 (see STEP_CAP)
            off_z = (tab["table.dz"].cpu()[lv] >= STEP_CAP)[:, :, None, None]
            sz = torch.round((z.double().cpu() - zm) / dz).clamp(-lim, lim).masked_fill(off_z, 0)
            off_y = (tab["table.dy"].cpu()[lv] >= STEP_CAP)[:, :, None, None]
            for i in range(B if write else 0):
                streams[i].encode(sz[i].numpy(), jz_map[i].numpy(), -lim, lim)
            if bits is not None:
                bits += _information(sz, jz_map)
            if trace is not None:
                trace.append(("z", sz))
        else:
            sz = torch.from_numpy(np.stack([streams[i].decode(jz_map[i].numpy(), -lim, lim) for i in range(B)]))
            sz = sz.double().reshape(B, *zshape)
        hyp = net.exact_hyper(zm + dz * sz)
        decoded: list[torch.Tensor] = []
        groups = pass_masks(cfg.cb, h4, w4)  # checkerboard: anchors, then the rest; cb=2: four passes
        for k in range(cfg.S):
            h1 = net.exact_slice_hidden(k, hyp, decoded)
            dk = dy[:, k * ms : (k + 1) * ms, None, None]
            ldk = ldy[:, k * ms : (k + 1) * ms, None, None]
            done = torch.zeros(B, ms, h4, w4, dtype=torch.float64)  # decoded latents so far, zero elsewhere
            for g, sel in enumerate(groups):
                mu, log_sigma = net.exact_slice_head(k, h1, **pass_context(cfg.cb, g, done))
                j = scale_index(log_sigma, ldk)
                if encoding:
                    sk = torch.round((y[:, k * ms : (k + 1) * ms].double().cpu() - mu) / dk).clamp(-lim, lim)
                    sk = sk.masked_fill(off_y[:, k * ms : (k + 1) * ms], 0)
                    if bits is not None:
                        bits += _information(sk[:, :, sel], j[:, :, sel])
                    if trace is not None:
                        trace.append(("y", k, sk[:, :, sel], log_units(log_sigma)[:, :, sel]))
                    for i in range(B if write else 0):  # channel-major, row-major positions within
                        streams[i].encode(sk[i][:, sel].numpy(), j[i][:, sel].numpy(), -lim, lim)
                else:
                    got = np.stack([streams[i].decode(j[i][:, sel].numpy(), -lim, lim) for i in range(B)])
                    sk = torch.zeros(B, ms, h4, w4, dtype=torch.float64)
                    sk[:, :, sel] = torch.from_numpy(got).double().reshape(B, ms, -1)
                done = torch.where(sel, mu + dk * sk, done)
            decoded.append(done)
        if not residuals:
            return ([st.finish() for st in streams] if write else None), torch.cat(decoded, 1)
        y_hat = self._residuals(net, hyp, decoded, dy)
        return ([st.finish() for st in streams] if write else None), y_hat

    def decode_streams(
        self, weights: Mapping[str, torch.Tensor], levels: Sequence[int], payloads: Sequence[bytes], sources: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Entropy-decode records of this size in one batch: ``{"y": B x M x H/4 x W/4}``, the
        synthesis input (exact latents plus the floating-point residual prediction)."""
        net = self.net(weights)
        _, y_hat = self.code(net, torch.tensor(list(levels)), payloads=payloads, sources=sources)
        return {"y": y_hat.cpu()}

    def exact_latents(self, weights: Mapping[str, torch.Tensor], levels: Sequence[int], payloads: Sequence[bytes]) -> torch.Tensor:
        """The exactly decoded latents of records (float64; what golden tests and audits compare)."""
        return self.code(self.net(weights), torch.tensor(list(levels)), payloads=payloads, residuals=False)[1]

    def _residuals(self, net: HyperNet, hyp: torch.Tensor, decoded: list[torch.Tensor], dy: torch.Tensor) -> torch.Tensor:
        ms = net.slice_channels
        dev = next(net.parameters()).device
        hyp32 = hyp.float().to(dev)
        dec32 = [d.float().to(dev) for d in decoded]
        out = []
        for k, yh in enumerate(dec32):
            if net.cfg.lrp:
                yh = yh + net.residual(k, hyp32, dec32[: k + 1], dy[:, k * ms : (k + 1) * ms, None, None].float().to(dev))
            out.append(yh)
        return torch.cat(out, 1)

    def encoder(self, weights: Mapping[str, torch.Tensor], images: torch.Tensor) -> "HyperEncoder":
        """An encoding session for ``B x C x H x W`` images of this size (see :mod:`..learned`)."""
        return HyperEncoder(self, weights, images)

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Edge-pad ``B x C x H x W`` images to the coded size (multiples of 8)."""
        ph, pw = self.padded
        if images.shape[-2:] == (ph, pw):
            return images
        return torch.nn.functional.pad(images, (0, pw - images.shape[-1], 0, ph - images.shape[-2]), mode="replicate")

    # ------------------------------------------------------------------ rendering
    def render(self, params: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        net = self.net({k: v for k, v in params.items() if k != "y"})  # the base's weights, not the latents
        f = net.features(params["y"])
        f = f[..., : self.height, : self.width]
        return net.colour(resample(f, (height, width)))


def _information(symbols: torch.Tensor, scale_idx: torch.Tensor) -> torch.Tensor:
    """Bits per image (first dimension) of ``symbols`` under zero-mean Gaussians of stds
    ``SCALES[scale_idx]`` on unit bins: the range coder's cost to within its tails' leakage."""
    std = torch.from_numpy(SCALE_TABLE)[scale_idx.long()]
    return gauss_bits(symbols.double(), std).flatten(1).sum(1)


class HyperEncoder:
    """Latents of a batch of images, quantised and coded at any levels (rate control uses it)."""

    def __init__(self, arch: HyperField, weights: Mapping[str, torch.Tensor], images: torch.Tensor):
        self.arch = arch
        self.net = arch.net(weights)
        self.target = images
        with torch.no_grad():
            self.y = self.net.ga(arch.pad(images) - 0.5)
            self.z = self.net.ha(self.y)

    def reconstruct(self, levels: torch.Tensor) -> torch.Tensor:
        """The decoded images at ``levels`` (no stream is written)."""
        with torch.no_grad():
            _, y_hat = self.arch.code(self.net, levels, y=self.y, z=self.z, dry=True)
            return self._synth(y_hat)

    def trial(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded images at ``levels`` and each record's estimated payload bytes (no
        stream is written: rate allocation tries many levels)."""
        bits = torch.zeros(len(levels), dtype=torch.float64)
        with torch.no_grad():
            _, y_hat = self.arch.code(self.net, levels, y=self.y, z=self.z, dry=True, bits=bits)
            return self._synth(y_hat), bits / 8

    def _synth(self, y_hat: torch.Tensor) -> torch.Tensor:
        f = self.net.features(y_hat.to(self.y.device))[..., : self.arch.height, : self.arch.width]
        return self.net.colour(f).clamp(0, 1)

    def refine(self, levels: torch.Tensor, steps: int) -> torch.Tensor:
        """Refine the latents for ``levels`` (the levels are kept)."""
        if steps > 0:
            from ..refine import refine_latents

            tab = self.net.tables  # type: ignore[attr-defined]
            t = self.net.level_to_t(levels).numpy()
            llam = tab["table.llam"].double().cpu().numpy() / 2**L_BITS
            lmbda = torch.tensor(np.exp(np.interp(t, np.arange(len(llam)), llam)), dtype=torch.float32)
            self.y, self.z = refine_latents(self.net, self.target, self.y, self.z, levels, lmbda, steps)
        return levels

    def settle(self, levels: torch.Tensor, psnr: float) -> torch.Tensor:
        """The smallest level near ``levels`` whose decode reaches ``psnr`` with the current latents."""
        top = self.arch.levels - 1

        def ok(lv: torch.Tensor) -> torch.Tensor:
            x8 = torch.round(self.reconstruct(lv) * 255) / 255  # measured as ndf convert does: 8-bit pixels
            mse = ((x8 - self.target) ** 2).flatten(1).mean(1).clamp(min=1e-10)
            return (10 * torch.log10(1 / mse)) >= psnr

        down = (levels - 1).clamp(min=0)
        levels = torch.where(ok(down), down, levels)
        for _ in range(top + 1):  # climb where the target is missed (at most to the top level)
            miss = ~ok(levels) & (levels < top)
            if not bool(miss.any()):
                break
            levels = torch.where(miss, levels + 1, levels)
        return levels

    def encode(self, levels: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
        """The streams at ``levels`` and the decoded images they give."""
        with torch.no_grad():
            payloads, y_hat = self.arch.code(self.net, levels, y=self.y, z=self.z)
            return payloads, self._synth(y_hat)
