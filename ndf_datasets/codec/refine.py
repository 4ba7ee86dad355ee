"""Per-image latent refinement for ``hyper-field`` records (encoder side only; decoders never import it).

The base's analysis transform predicts latents in one pass; a few gradient steps on each image's
own ``y`` and ``z`` then lower ``bits + lambda * 255^2 * MSE`` at the chosen rate level (rounding
is straight-through for both terms, so the loss tracked is the one of the coded latents; the
best iterate per image is kept, so refinement never makes an image's loss worse).
"""

from __future__ import annotations

import numpy as np
import torch

from .exact import SCALE_MIN, SCALES, STEP_BITS
from .fields.hyper_net import HyperNet, gauss_bits

__all__ = ["refine_latents", "level_lambdas"]


def level_lambdas(net: HyperNet, anchors: list[float], levels: torch.Tensor) -> torch.Tensor:
    """The rate-distortion weight of each level: log-linear between the training anchors."""
    t = net.level_to_t(levels).numpy()
    return torch.tensor(np.exp(np.interp(t, np.arange(len(anchors)), np.log(anchors))), dtype=torch.float32)


def _ste(v: torch.Tensor) -> torch.Tensor:
    """Rounding with a straight-through gradient."""
    return v + (torch.round(v) - v).detach()


def _loss(net: HyperNet, x, y, z, dy, dz, zm, zsig, lmbda):
    ms = net.slice_channels
    sz = (z - zm) / dz
    szr = _ste(sz)
    bits = gauss_bits(szr, zsig).flatten(1).sum(1)
    hyp = net.hyper(zm + dz * szr)
    decoded, synth_in = [], []
    for k in range(net.cfg.S):
        dk = dy[:, k * ms : (k + 1) * ms]
        log_sigma, s, yh = net.slice_symbols(k, hyp, decoded, y[:, k * ms : (k + 1) * ms], dk, lambda mu, s, dk=dk: mu + dk * _ste(s))
        bits = bits + gauss_bits(_ste(s), (log_sigma.exp() / dk).clamp(min=SCALE_MIN)).flatten(1).sum(1)
        decoded.append(yh)
        synth_in.append(yh + net.residual(k, hyp, decoded, dk) if net.cfg.lrp else yh)
    xh = net.synth(torch.cat(synth_in, 1))[..., : x.shape[-2], : x.shape[-1]]
    mse = ((xh - x) ** 2).flatten(1).mean(1)
    return bits / (x.shape[-1] * x.shape[-2]) + lmbda * 255**2 * mse


def refine_latents(
    net: HyperNet,
    x: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    levels: torch.Tensor,
    lmbda: torch.Tensor,
    steps: int = 8,
    lr: float = 5e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine latents ``y, z`` of images ``x`` (unpadded ``B x C x H x W``) at ``levels``.

    Returns:
        The refined ``(y, z)`` (the best iterate per image, the initial one included).
    """
    if steps <= 0:
        return y, z
    tab = net.tables  # type: ignore[attr-defined]
    lv = levels.long().cpu()
    dev = y.device
    dy = (tab["table.dy"].cpu()[lv] / 2**STEP_BITS)[:, :, None, None].to(dev)
    dz = (tab["table.dz"].cpu()[lv] / 2**STEP_BITS)[:, :, None, None].to(dev)
    zm = (tab["table.zm"].cpu() / 2**10)[None, :, None, None].to(dev)
    zsig = torch.tensor(SCALES, dtype=torch.float32)[tab["table.jz"].cpu()[lv].long()][:, :, None, None].to(dev)
    lmbda = lmbda.to(dev)
    with torch.inference_mode(False), torch.enable_grad():
        yv = y.detach().clone().requires_grad_(True)
        zv = z.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([yv, zv], lr=lr)
        best_loss = best_y = best_z = None
        for it in range(steps + 1):
            loss = _loss(net, x, yv, zv, dy, dz, zm, zsig, lmbda)
            with torch.no_grad():
                if best_loss is None:
                    best_loss, best_y, best_z = loss.clone(), yv.detach().clone(), zv.detach().clone()
                else:
                    better = loss < best_loss
                    best_loss = torch.where(better, loss, best_loss)
                    best_y[better] = yv.detach()[better]
                    best_z[better] = zv.detach()[better]
            if it == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    return best_y, best_z
