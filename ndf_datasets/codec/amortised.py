"""Training a shared base with an amortised encoder (architectures with an ``analysis``).

The base's synthesis, its analysis (encoder) and a per-channel Laplace entropy model are
trained jointly on a dataset's training split, minimising ``MSE + lmbda * bits_per_pixel``
(a compressive autoencoder whose decoder is a neural field). Quantisation is simulated with
additive uniform noise for the rate term and, after a warm-up, straight-through rounding for
the distortion term, so the decoder learns on the values it will really see. Encoding a new
image is then one analysis pass plus a few refinement steps (:func:`fitting.fit_fields`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .coding import TensorCode
from .fields import FieldArch
from .fitting import _batched_weights, channel_bits, psnr
from .shared import SharedBase

__all__ = ["fit_amortised_base"]


def fit_amortised_base(
    images: torch.Tensor,
    arch: FieldArch,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    lmbda: float = 2e-3,
    lr: float = 2e-3,
    latent_bound: int = 127,
    warmup: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
    metadata: dict[str, Any] | None = None,
) -> SharedBase:
    """Train synthesis + analysis + entropy model on ``N x C x H x W`` images (float [0,1] or uint8).

    Returns:
        The quantised :class:`SharedBase` (decoder, encoder and latent quantisation table).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, _, height, width = images.shape
    pixels = height * width
    weights = {k: v[0].to(device).requires_grad_(True) for k, v in _batched_weights(arch, 1, gen).items()}
    lspecs = arch.latent_specs()
    log_scales = {s.name: torch.full((), math.log(4.0), device=device, requires_grad=True) for s in lspecs}
    means = {s.name: torch.zeros((), device=device, requires_grad=True) for s in lspecs}
    opt = torch.optim.Adam(list(weights.values()) + list(log_scales.values()) + list(means.values()), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="fitting base", unit="step")
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            step += 1
            frac = step / total
            for g in opt.param_groups:
                g["lr"] = lr * (0.5 * (1 + math.cos(math.pi * frac)) * 0.97 + 0.03)
            x = images[order[i : i + batch_size]].to(device)
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            y = arch.analysis(weights, x)
            noisy = {k: v + torch.rand(v.shape, generator=gen).to(device) - 0.5 for k, v in y.items()}
            if frac < warmup:
                ydec = noisy
            else:
                ydec = {k: v + (torch.round(v) - v).detach() for k, v in y.items()}
            out = arch.render({**ydec, **weights}, height, width)
            mse = ((out - x) ** 2).flatten(1).mean(1)
            scales = {k: torch.exp(v).clamp(0.05, 1e4) for k, v in log_scales.items()}
            bits = channel_bits(noisy, means, scales)
            loss = (mse + lmbda * bits / pixels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
                if step % 20 == 0:
                    with torch.no_grad():
                        p = float(psnr(out.detach(), x).mean())
                    bar.set_postfix(epoch=epoch, psnr=f"{p:.2f}", bytes=f"{float(bits.mean()) / 8:.0f}")
    if bar is not None:
        bar.close()
    latent_codes = [
        TensorCode(1.0, float(means[s.name].detach()), float(torch.exp(log_scales[s.name].detach())), -latent_bound, latent_bound)
        for s in lspecs
    ]
    meta = {"train_images": int(n), "epochs": epochs, "lmbda": lmbda, "seed": seed, "trainer": "amortised"}
    meta.update(metadata or {})
    return SharedBase.from_float_weights(arch, {k: v.detach() for k, v in weights.items()}, latent_codes, metadata=meta)
