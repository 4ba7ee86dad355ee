"""``grid-mlp``: multi-resolution latent grids + a tiny per-pixel MLP (C3 / Cool-chic class).

An image is a stack of ``levels`` latent grids; level ``k`` has ``ceil(H / 2**(shift+k)) x
ceil(W / 2**(shift+k))`` cells of ``cpl`` channels. To evaluate the field at a point, every
grid is interpolated there (bilinear or bicubic, cell centres at ``(i + 0.5) / n``), the
values are concatenated and mapped to colour by an MLP with ``layers`` hidden layers of
``hidden`` units (ReLU). Interpolation is continuous in the coordinates, so every output size
samples the same function. The latents are the image-specific part; the MLP is either stored
with them (standalone field) or shared by a dataset (shared base).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from .base import FieldArch, TensorSpec
from .registry import register_arch

__all__ = ["GridMLP"]

_MODES = {0: "bilinear", 1: "bicubic"}
_INTERP_MACS = {0: 4, 1: 16}


@register_arch(1, "grid-mlp")
class GridMLP(FieldArch):
    """Config: ``(levels, cpl, shift, hidden, layers, interp)``; interp 0 = bilinear, 1 = bicubic."""

    def parse_config(self, config: tuple[int, ...]) -> None:
        if len(config) != 6:
            raise ValueError(f"grid-mlp needs 6 config values (levels, cpl, shift, hidden, layers, interp), got {config}")
        self.levels, self.cpl, self.shift, self.hidden, self.layers, self.interp = config
        checks = (
            (1 <= self.levels <= 12, "levels must be 1..12"),
            (1 <= self.cpl <= 16, "cpl must be 1..16"),
            (0 <= self.shift <= 8, "shift must be 0..8"),
            (1 <= self.hidden <= 256, "hidden must be 1..256"),
            (0 <= self.layers <= 6, "layers must be 0..6"),
            (self.interp in _MODES, "interp must be 0 (bilinear) or 1 (bicubic)"),
        )
        for ok, why in checks:
            if not ok:
                raise ValueError(f"grid-mlp config {config}: {why}")

    def grid_shape(self, k: int) -> tuple[int, int]:
        div = 2 ** (self.shift + k)
        return max(1, math.ceil(self.height / div)), max(1, math.ceil(self.width / div))

    def tensor_specs(self) -> list[TensorSpec]:
        specs = [TensorSpec(f"latent{k}", (self.cpl, *self.grid_shape(k)), "latent") for k in range(self.levels)]
        width_in = self.levels * self.cpl
        for i in range(self.layers + 1):
            width_out = self.channels if i == self.layers else self.hidden
            specs.append(TensorSpec(f"w{i}", (width_out, width_in), "weight"))
            specs.append(TensorSpec(f"b{i}", (width_out,), "weight"))
            width_in = width_out
        return specs

    def render(self, params: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        mode = _MODES[self.interp]
        grids = [params[f"latent{k}"] for k in range(self.levels)]
        batch = grids[0].shape[0]
        feats = [F.interpolate(g, size=(height, width), mode=mode, align_corners=False) for g in grids]
        x = torch.cat(feats, dim=1).flatten(2)  # B x (levels*cpl) x HW
        for i in range(self.layers + 1):
            w, b = params[f"w{i}"], params[f"b{i}"]
            x = torch.matmul(w, x) + b.unsqueeze(-1)
            if i < self.layers:
                x = torch.relu(x)
        return x.view(batch, self.channels, height, width) + 0.5

    def macs_per_pixel(self) -> int:
        interp = self.levels * self.cpl * _INTERP_MACS[self.interp]
        mlp = 0
        width_in = self.levels * self.cpl
        for i in range(self.layers + 1):
            width_out = self.channels if i == self.layers else self.hidden
            mlp += width_in * width_out
            width_in = width_out
        return interp + mlp
