"""``conv-field``: a small latent grid expanded by a shared conv synthesis into a feature field.

Meant for shared bases (MNIST / CIFAR size images). Per image, only the latent ``y`` (``C``
channels at ``1/2**down`` of the image size) is stored. The dataset's base holds:

* the synthesis: ``conv3x3(C->W)``, then ``down-1`` times (bilinear x2 upsampling,
  ``conv3x3(W->W)``), then ``conv1x1(W->F*S*S)`` and a pixel shuffle by ``S``: a feature grid
  ``F x S*h*2**(down-1) x ...`` (``S = 2`` gives full-resolution features for ``down = 2``);
* the field head: the feature grid is interpolated (bilinear, cell centres) at the output
  pixel centres, and a per-pixel MLP ``F -> hidden -> channels`` gives the colour.

Every output size samples the same continuous function of the coordinates. The base also
stores an *analysis* network (two stride-2 5x5 convs and a 3x3 conv) that predicts the latent
of a new image in one pass (amortised encoding); the decoder never runs it.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from .base import FieldArch, TensorSpec
from .registry import register_arch

__all__ = ["ConvField"]


@register_arch(2, "conv-field")
class ConvField(FieldArch):
    """Config: ``(C, down, W, F, hidden, E[, S])``: latent channels, log2 downsampling,
    synthesis width, field channels, MLP hidden units, analysis width, and the optional
    sub-pixel factor of the feature grid (default 1)."""

    standalone = False  # the synthesis convolves with ONE network shared by the batch

    def parse_config(self, config: tuple[int, ...]) -> None:
        if len(config) not in (6, 7):
            raise ValueError(f"conv-field needs 6 or 7 config values (C, down, W, F, hidden, E[, S]), got {config}")
        self.c, self.down, self.w, self.f, self.hidden, self.e = config[:6]
        self.s = config[6] if len(config) == 7 else 1
        checks = (
            (1 <= self.c <= 64, "C must be 1..64"),
            (1 <= self.down <= 4, "down must be 1..4"),
            (1 <= self.w <= 128, "W must be 1..128"),
            (1 <= self.f <= 64, "F must be 1..64"),
            (1 <= self.hidden <= 128, "hidden must be 1..128"),
            (1 <= self.e <= 256, "E must be 1..256"),
            (self.s in (1, 2, 4), "S must be 1, 2 or 4"),
        )
        for ok, why in checks:
            if not ok:
                raise ValueError(f"conv-field config {config}: {why}")

    @property
    def latent_hw(self) -> tuple[int, int]:
        div = 2**self.down
        return math.ceil(self.height / div), math.ceil(self.width / div)

    def tensor_specs(self) -> list[TensorSpec]:
        h, w = self.latent_hw
        specs = [TensorSpec(f"y{c}", (1, h, w), "latent") for c in range(self.c)]
        specs += [TensorSpec("s0.w", (self.w, self.c, 3, 3), "weight"), TensorSpec("s0.b", (self.w,), "weight")]
        for i in range(1, self.down):
            specs += [TensorSpec(f"s{i}.w", (self.w, self.w, 3, 3), "weight"), TensorSpec(f"s{i}.b", (self.w,), "weight")]
        fs = self.f * self.s * self.s
        specs += [TensorSpec("feat.w", (fs, self.w, 1, 1), "weight"), TensorSpec("feat.b", (fs,), "weight")]
        specs += [TensorSpec("m0.w", (self.hidden, self.f), "weight"), TensorSpec("m0.b", (self.hidden,), "weight")]
        specs += [TensorSpec("m1.w", (self.channels, self.hidden), "weight"), TensorSpec("m1.b", (self.channels,), "weight")]
        specs += [
            TensorSpec("a0.w", (self.e, self.channels, 5, 5), "encoder"),
            TensorSpec("a0.b", (self.e,), "encoder"),
            TensorSpec("a1.w", (self.e, self.e, 5, 5), "encoder"),
            TensorSpec("a1.b", (self.e,), "encoder"),
        ]
        for i in range(2, self.down):
            specs += [TensorSpec(f"a{i}.w", (self.e, self.e, 5, 5), "encoder"), TensorSpec(f"a{i}.b", (self.e,), "encoder")]
        specs += [TensorSpec("ay.w", (self.c, self.e, 3, 3), "encoder"), TensorSpec("ay.b", (self.c,), "encoder")]
        return specs

    def features(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The synthesis: latents -> feature grid ``B x F x h' x w'`` (independent of output size)."""
        y = torch.cat([params[f"y{c}"] for c in range(self.c)], dim=1)
        t = torch.relu(F.conv2d(y, params["s0.w"], params["s0.b"], padding=1))
        for i in range(1, self.down):
            t = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
            t = torch.relu(F.conv2d(t, params[f"s{i}.w"], params[f"s{i}.b"], padding=1))
        feat = F.conv2d(t, params["feat.w"], params["feat.b"])
        return F.pixel_shuffle(feat, self.s) if self.s > 1 else feat

    def render(self, params: Mapping[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
        feat = self.features(params)
        batch = feat.shape[0]
        if feat.shape[-2:] != (height, width):
            feat = F.interpolate(feat, size=(height, width), mode="bilinear", align_corners=False)
        x = feat.flatten(2)  # B x F x HW
        x = torch.relu(torch.matmul(params["m0.w"], x) + params["m0.b"].unsqueeze(-1))
        x = torch.matmul(params["m1.w"], x) + params["m1.b"].unsqueeze(-1)
        return x.view(batch, self.channels, height, width) + 0.5

    def analysis(self, params: Mapping[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict latents (symbol units) for ``B x C x H x W`` images in one pass."""
        t = F.gelu(F.conv2d(images - 0.5, params["a0.w"], params["a0.b"], stride=2, padding=2))
        t = F.gelu(F.conv2d(t, params["a1.w"], params["a1.b"], stride=2 if self.down >= 2 else 1, padding=2))
        for i in range(2, self.down):
            t = F.gelu(F.conv2d(t, params[f"a{i}.w"], params[f"a{i}.b"], stride=2, padding=2))
        y = F.conv2d(t, params["ay.w"], params["ay.b"], padding=1)
        h, w = self.latent_hw
        y = y[:, :, :h, :w]
        return {f"y{c}": y[:, c : c + 1] for c in range(self.c)}

    def peak_values(self, height: int, width: int) -> int:
        """The larger of the synthesis (at the record's own latent size) and the field head."""
        h, w = self.latent_hw
        k = 2 ** (self.down - 1)
        synthesis = h * k * w * k * max(self.w, self.f * self.s * self.s)
        return max(synthesis, height * width * max(self.f, self.hidden, self.channels))

    def macs_per_pixel(self) -> int:
        h, w = self.latent_hw
        pixels = self.height * self.width
        macs = h * w * 9 * self.c * self.w
        gh, gw = h, w
        for _ in range(1, self.down):
            gh, gw = gh * 2, gw * 2
            macs += gh * gw * (9 * self.w * self.w + 4 * self.w)
        macs += gh * gw * self.w * self.f * self.s * self.s
        per_pixel = macs / pixels
        return int(round(per_pixel + 4 * self.f + self.f * self.hidden + self.hidden * self.channels))
