"""``pixel-context`` (id 4): near-lossless coding of small images under a learned context model.

Meant for near-binary data such as MNIST, where a transform codec wastes bits on what a context
model predicts for free (black background, saturated strokes). A record's stream holds the
quantised pixels of the five passes of :mod:`.pixel_net`, each coded under Gaussians whose means
and scales the base's exact networks predict from the passes before (black and white are
always exact; the error is at most ``255 / 2K`` for the level's ``K``; the top level is lossless).

Decoding gives the quantised raster itself; other output sizes are resampled from it by the
same rule as ``hyper-field`` features (box filter when shrinking, bicubic when growing): this
architecture stores pixels, not a continuous field, and says so. Images must have the base's
size (the context model has learned position maps).
"""

from __future__ import annotations

import threading
from typing import Mapping, Sequence

import numpy as np
import torch

from ..exact import scale_index
from ..gaussian import StreamDecoder, StreamEncoder
from .base import FieldArch, TensorSpec
from .hyper_net import resample
from .pixel_net import LEVEL_K, PixelConfig, PixelNet, assemble, dequantise, lattices, level_k, quantise
from .registry import register_arch

__all__ = ["PixelContext", "LEVEL_LNK"]

#: ``round(2**10 * ln K)`` for every level's ``K`` (the scale index of ``sigma K`` is computed from it).
LEVEL_LNK: tuple[int, ...] = (2129, 2358, 2545, 2773, 2901, 3118, 3296, 3516, 3670, 3827, 4026, 4243, 4549, 4960, 5674)

_lock = threading.Lock()
_nets: list[tuple[torch.Tensor, PixelNet]] = []


@register_arch(4, "pixel-context")
class PixelContext(FieldArch):
    """Config: ``(W, E)``: network width and position-map channels."""

    standalone = False
    learned = True
    resamples = True
    any_size = False  # records have the base's size (learned position maps)

    def parse_config(self, config: tuple[int, ...]) -> None:
        self.cfg = PixelConfig.from_values(config)
        if self.height % 4 or self.width % 4:
            raise ValueError(f"pixel-context codes images whose sides are multiples of 4, not {self.height}x{self.width}")

    @property
    def levels(self) -> int:
        return len(LEVEL_K)

    def tensor_specs(self) -> list[TensorSpec]:
        if "_specs" not in self.__dict__:
            with torch.device("meta"):
                net = PixelNet(self.cfg, self.channels, self.height, self.width)
            self._specs = [TensorSpec(n, tuple(t.shape), "weight") for n, t in net.state_dict().items()]
        return self._specs

    def net(self, weights: Mapping[str, torch.Tensor]) -> PixelNet:
        key = weights["p0.c1.weight"]
        with _lock:
            for t, net in _nets:
                if t is key and net.pos4.shape[-2:] == (self.height // 4, self.width // 4):
                    return net
        with torch.inference_mode(False):
            net = PixelNet(self.cfg, self.channels, self.height, self.width)
            net.load_state_dict({k: v.clone() for k, v in weights.items()})
        net = net.to(key.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        with _lock:
            _nets.insert(0, (key, net))
            del _nets[8:]
        return net

    def symbol_count(self) -> int:
        return self.channels * self.height * self.width

    def macs_per_pixel(self) -> int:
        c, C, W = self.cfg, self.channels, self.cfg.W
        n4, n2 = (self.height // 4) * (self.width // 4), (self.height // 2) * (self.width // 2)

        def pass_macs(cin: int, cout: int) -> int:
            return cin * W * 9 + W * W * 9 + W * W + W * cout

        macs = n4 * (pass_macs(c.E + 1, 2 * C) + pass_macs(C + c.E + 1, 2 * C) + pass_macs(2 * C + c.E + 1, 4 * C))
        macs += n2 * (pass_macs(C + c.E + 1, 2 * C) + pass_macs(2 * C + c.E + 1, 4 * C))
        return int(round(macs / (self.height * self.width)))

    def peak_values(self, height: int, width: int) -> int:
        return max(self.cfg.W * self.height * self.width // 4, self.channels * max(height * width, self.height * self.width) * 4)

    # ------------------------------------------------------------------ coding
    def code(
        self,
        net: PixelNet,
        levels: torch.Tensor,
        *,
        x255: torch.Tensor | None = None,
        payloads: Sequence[bytes] | None = None,
        sources: Sequence[str] | None = None,
        dry: bool = False,
    ) -> tuple[list[bytes] | None, torch.Tensor]:
        """Encode integer images ``x255`` (``B x C x H x W``) or decode ``payloads``; one walk both ways.

        Returns:
            ``(payloads, pixels)``: the streams (``None`` when decoding or ``dry``) and the
            decoded pixels as float in [0, 1].
        """
        encoding = payloads is None
        write = encoding and not dry
        B = len(levels)
        k = level_k(levels)
        lnk = torch.tensor(LEVEL_LNK, dtype=torch.long)[levels.long().cpu()][:, None, None, None]
        cond = k.double() / 255
        streams = [StreamEncoder() for _ in range(B)] if encoding else [
            StreamDecoder(p, s) for p, s in zip(payloads, sources or [f"<item {i}>" for i in range(B)])
        ]
        targets = lattices(quantise(x255.cpu(), k)) if encoding else None
        shapes = [t.shape[1:] for t in lattices(torch.zeros(1, self.channels, self.height, self.width))]
        known: list[torch.Tensor] = []
        symbols: list[torch.Tensor] = []
        for i, shape in enumerate(shapes):
            mu, log_sigma = net.pass_params(i, known, cond, exact=True)
            mean = (mu * k.double()[:, None, None, None]).numpy()
            j = scale_index(log_sigma, -lnk).numpy()
            if encoding:
                v = targets[i]
                for b in range(B if write else 0):
                    streams[b].encode(v[b].numpy(), j[b], 0, int(k[b]), mean[b])
            else:
                v = torch.from_numpy(np.stack([streams[b].decode(j[b], 0, int(k[b]), mean[b]) for b in range(B)]))
                v = v.long().reshape(B, *shape)
            symbols.append(v)
            known.append(dequantise(v, k).double() / 255)
        pixels = dequantise(assemble(symbols, self.channels), k).float() / 255
        return ([s.finish() for s in streams] if write else None), pixels

    def decode_streams(
        self, weights: Mapping[str, torch.Tensor], levels: Sequence[int], payloads: Sequence[bytes], sources: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        _, pixels = self.code(self.net(weights), torch.tensor(list(levels)), payloads=payloads, sources=sources)
        return {"x": pixels}

    def exact_latents(self, weights: Mapping[str, torch.Tensor], levels: Sequence[int], payloads: Sequence[bytes]) -> torch.Tensor:
        """The decoded pixels (exact: integers / 255)."""
        return self.decode_streams(weights, levels, payloads, [f"<item {i}>" for i in range(len(payloads))])["x"]

    def encoder(self, weights: Mapping[str, torch.Tensor], images: torch.Tensor) -> "PixelEncoder":
        return PixelEncoder(self, weights, images)

    def render(self, params: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        return resample(params["x"], (height, width))


class PixelEncoder:
    """Rate control's view of a batch (see :mod:`ndf_datasets.codec.learned`)."""

    def __init__(self, arch: PixelContext, weights: Mapping[str, torch.Tensor], images: torch.Tensor):
        self.arch = arch
        self.net = arch.net(weights)
        self.target = images
        self.x255 = torch.round(images.cpu() * 255).clamp(0, 255).long()

    def reconstruct(self, levels: torch.Tensor) -> torch.Tensor:
        k = level_k(levels)
        return (dequantise(quantise(self.x255, k), k).float() / 255).to(self.target.device)

    def refine(self, levels: torch.Tensor, steps: int) -> torch.Tensor:
        return levels

    def settle(self, levels: torch.Tensor, psnr: float) -> torch.Tensor:
        return levels

    def trial(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded images at ``levels`` and each record's payload bytes (coded: exact)."""
        payloads, pixels = self.encode(levels)
        return pixels, torch.tensor([len(p) for p in payloads], dtype=torch.float64)

    def encode(self, levels: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
        payloads, pixels = self.arch.code(self.net, levels, x255=self.x255)
        return payloads, pixels.to(self.target.device)
