"""Batched, deterministic fitting of neural fields: standalone fields, shared bases, records.

All fitting is rate-distortion optimisation of ``MSE + lambda * bits_per_pixel``:

* latents are learned in *symbol units* (the stored integer is ``round(z)``); during fitting
  they see additive uniform noise (a differentiable stand-in for rounding), and in the last
  part of the schedule the exact rounding with a straight-through gradient;
* their rate is the ideal code length under the same quantised Laplace model the entropy
  coder uses, so the estimate matches the file size;
* with a PSNR target, each image's ``lambda`` is steered by a feedback loop towards the
  target, and an image stops counting once its *quantised* field reaches it (early stop).

Everything runs on batches: one step updates hundreds of different images at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from .coding import TensorCode
from .fields import FieldArch
from .shared import SharedBase

__all__ = ["FitSettings", "FitResult", "fit_fields", "fit_base", "psnr", "laplace_bits", "channel_bits", "quantize_weights"]

LATENT_BOUND = 255.0  # |latent symbol| limit used while fitting


@dataclass
class FitSettings:
    """Knobs of one fitting run. Defaults are the codec's standard operating behaviour.

    Attributes:
        psnr: target PSNR in dB (None: no target, run ``steps`` at fixed ``lmbda``).
        lmbda: rate weight when ``psnr`` is None (loss = MSE + lmbda * bits per pixel).
        steps: maximum optimisation steps.
        min_steps: an image can not stop before this many steps.
        lr: Adam learning rate of the network weights.
        latent_lr: Adam learning rate of the latents (symbol units).
        eval_every: steps between quantised evaluations (early stop, lambda control).
        early_stop: with a target, stop an image as soon as it reaches it (fast). If False,
            keep optimising to the step budget and keep the smallest estimated rate that
            still meets the target (better compression, slower).
        hard_from: fraction of ``steps`` after which rounding replaces noise.
        seed: seed of every random choice; same seed, same bytes.
        progress: show a progress bar.
    """

    psnr: float | None = 35.0
    lmbda: float = 1e-3
    steps: int = 1500
    min_steps: int = 200
    lr: float = 1e-2
    latent_lr: float = 0.2
    eval_every: int = 50
    early_stop: bool = True
    hard_from: float = 0.7
    seed: int = 0
    progress: bool = False
    desc: str = "fitting"


@dataclass
class FitResult:
    """Quantised result of fitting a batch.

    Attributes:
        latent_symbols: per latent tensor name, int32 array ``B x shape``.
        weights: per weight name, float tensors ``B x shape`` (standalone) or None (base).
        psnr: per image PSNR of the quantised field vs the target image.
        steps: steps actually run.
    """

    latent_symbols: dict[str, np.ndarray]
    weights: dict[str, torch.Tensor] | None
    psnr: np.ndarray
    steps: int
    history: list[dict] = field(default_factory=list)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of ``B x C x H x W`` tensors in [0, 1], after 8-bit rounding of x."""
    xq = torch.round(x.clamp(0, 1) * 255) / 255
    mse = ((xq - y) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10 * torch.log10(mse)


def laplace_bits(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Ideal code length (bits) of ``z`` under a unit-bin quantised Laplace(0, scale).

    ``z`` is noisy or rounded latents in symbol units; ``scale`` broadcasts against it.
    Summed over every dim but the first (returns one value per image).
    """

    def cdf(v: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * torch.sign(v) * (1 - torch.exp(-v.abs() / scale))

    p = (cdf(z + 0.5) - cdf(z - 0.5)).clamp_min(2.0**-24)
    return -torch.log2(p).flatten(1).sum(1)


def channel_bits(
    latents: dict[str, torch.Tensor], means: dict[str, torch.Tensor] | None, scales: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Bits per image of (noisy or rounded) latents under per-tensor Laplace models (means 0 if None)."""
    if means is None:
        return sum(laplace_bits(z, scales[k]) for k, z in latents.items())
    return sum(laplace_bits(z - means[k], scales[k]) for k, z in latents.items())


def _quantize_noise(z: torch.Tensor, hard: bool, gen: torch.Generator) -> torch.Tensor:
    if hard:
        return z + (torch.round(z) - z).detach()
    noise = torch.rand(z.shape, generator=gen, device="cpu").to(z.device) - 0.5
    return z + noise


def _batched_weights(arch: FieldArch, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Initial weights, ``batch`` copies: uniform fan-in init for matrices and kernels (the
    decoder's output layer small, so fitting starts from a flat grey image), zero biases."""
    specs = arch.weight_specs()
    out_layer = [s.name for s in specs if s.role == "weight" and len(s.shape) >= 2][-1]
    out = {}
    for s in specs:
        if len(s.shape) >= 2:
            fan_in = math.prod(s.shape[1:])
            bound = 0.1 / math.sqrt(fan_in) if s.name == out_layer else math.sqrt(6.0 / fan_in)
            out[s.name] = (torch.rand((batch, *s.shape), generator=gen) * 2 - 1) * bound
        else:
            out[s.name] = torch.zeros((batch, *s.shape))
    return out


def quantize_weights(w: torch.Tensor, step: float) -> torch.Tensor:
    return torch.round(w / step) * step


def fit_fields(
    images: torch.Tensor,
    arch: FieldArch,
    settings: FitSettings,
    base: SharedBase | None = None,
    device: str | torch.device = "cpu",
    init_latents: dict[str, torch.Tensor] | None = None,
) -> FitResult:
    """Fit ``B`` images of one size in one batched optimisation.

    Args:
        images: ``B x C x H x W`` float tensor in [0, 1].
        arch: architecture built for ``H x W``.
        settings: see :class:`FitSettings`.
        base: fit latents only, against this frozen shared base (records); else standalone.
        device: where to fit.
        init_latents: starting latents (``B x shape`` per name); zeros if None.

    Returns:
        A :class:`FitResult` with quantised latents (and per-image weights, standalone).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(settings.seed)
    target = images.to(device)
    batch, _, height, width = target.shape
    pixels = height * width
    lspecs = arch.latent_specs()
    latents = {}
    for s in lspecs:
        z = init_latents[s.name].clone() if init_latents is not None else torch.zeros((batch, *s.shape))
        latents[s.name] = z.to(device).requires_grad_(True)
    if base is None:
        weights = {k: v.to(device).requires_grad_(True) for k, v in _batched_weights(arch, batch, gen).items()}
        log_scales = {s.name: torch.zeros(batch, device=device, requires_grad=True) for s in lspecs}
        groups = [
            {"params": list(latents.values()), "lr": settings.latent_lr},
            {"params": list(weights.values()) + list(log_scales.values()), "lr": settings.lr},
        ]
        fixed_scales = fixed_means = None
        bounds = {s.name: (-LATENT_BOUND, LATENT_BOUND) for s in lspecs}
    else:
        weights = base.weights_on(device)
        log_scales = {}
        fixed_scales = {s.name: torch.tensor(c.scale, device=device) for s, c in zip(lspecs, base.latent_codes)}
        fixed_means = {s.name: torch.tensor(c.mean, device=device) for s, c in zip(lspecs, base.latent_codes)}
        bounds = {s.name: (c.lo, c.hi) for s, c in zip(lspecs, base.latent_codes)}
        groups = [{"params": list(latents.values()), "lr": settings.latent_lr}]
    opt = torch.optim.Adam(groups)
    base_lrs = [g["lr"] for g in opt.param_groups]

    if settings.psnr is not None:
        lam = torch.full((batch,), 10 ** (-settings.psnr / 10), device=device)
    else:
        lam = torch.full((batch,), float(settings.lmbda), device=device)
    done = torch.zeros(batch, dtype=torch.bool)
    best_psnr = torch.full((batch,), -1.0)
    best_rate = torch.full((batch,), float("inf"))
    ever_reached = torch.zeros(batch, dtype=torch.bool)
    snap_latents = {k: torch.zeros((batch, *s.shape), device=device) for k, s in zip(latents, lspecs)}
    snap_weights = {k: torch.zeros_like(v) for k, v in weights.items()} if base is None else None
    history: list[dict] = []

    def bits_of(z: dict[str, torch.Tensor]) -> torch.Tensor:
        return channel_bits(z, fixed_means, {k: scales_of(k) for k in z})

    def scales_of(name: str) -> torch.Tensor:
        if fixed_scales is not None:
            return fixed_scales[name]
        return torch.exp(log_scales[name]).clamp(0.05, 1e4).view(batch, *([1] * len(lspecs[0].shape)))

    bar = None
    if settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, desc=settings.desc, unit="step", leave=False)
    hard_step = int(settings.hard_from * settings.steps)
    step = 0
    for step in range(1, settings.steps + 1):
        frac = step / settings.steps
        for g, lr0 in zip(opt.param_groups, base_lrs):
            g["lr"] = lr0 * (0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05)
        hard = step > hard_step
        zq = {k: _quantize_noise(z, hard, gen) for k, z in latents.items()}
        out = arch.render({**zq, **weights}, height, width)
        mse = ((out - target) ** 2).flatten(1).mean(1)
        bits = bits_of(zq)
        loss = (mse + lam * bits / pixels).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for k, z in latents.items():
                z.clamp_(*bounds[k])

        if step % settings.eval_every == 0 or step == settings.steps:
            with torch.no_grad():
                zr = {k: torch.round(z) for k, z in latents.items()}
                wq = weights if base is not None else {k: quantize_weights(v, 2.0**-10) for k, v in weights.items()}
                p = psnr(arch.render({**zr, **wq}, height, width), target).cpu()
                rate = (bits_of(zr) / pixels).cpu()
                if settings.psnr is None:
                    better = torch.ones(batch, dtype=torch.bool) if step >= settings.min_steps else torch.zeros(batch, dtype=torch.bool)
                    better = better & ~done
                else:
                    reached = p >= settings.psnr
                    if settings.early_stop:
                        # keep the snapshot with target reached; before that, the best PSNR so far
                        better = (~done) & (reached | (p > best_psnr))
                        finished = reached & (step >= settings.min_steps)
                    else:
                        # the cheapest snapshot that meets the target; before any, the best PSNR
                        better = (reached & (rate < best_rate)) | (~ever_reached & ~reached & (p > best_psnr))
                        finished = torch.zeros(batch, dtype=torch.bool)
                        best_rate = torch.where(reached & better, rate, best_rate)
                        ever_reached = ever_reached | reached
                    # lambda control: too good -> spend fewer bits, too poor -> more bits,
                    # in proportion to the PSNR gap (a factor 10**(gap/10), clamped)
                    gap = (p - settings.psnr).clamp(-6.0, 3.0).to(device)
                    lam = lam * torch.pow(10.0, gap / 10.0) * torch.where(reached.to(device), 1.1, 0.9)
                    done = done | finished
                for k in latents:
                    snap_latents[k][better.to(device)] = zr[k][better.to(device)]
                if snap_weights is not None:
                    for k in weights:
                        snap_weights[k][better.to(device)] = weights[k].detach()[better.to(device)]
                best_psnr = torch.where(better, p, best_psnr)
                history.append({"step": step, "psnr": float(p.mean()), "bpp": float(rate.mean()), "done": int(done.sum())})
                if bar is not None:
                    bar.set_postfix(psnr=f"{float(p.mean()):.2f}", bpp=f"{float(rate.mean()):.3f}", done=f"{int(done.sum())}/{batch}")
            if settings.psnr is not None and bool(done.all()):
                if bar is not None:
                    bar.update(step - bar.n)
                break
        if bar is not None and step % 10 == 0:
            bar.update(step - bar.n)
    if bar is not None:
        bar.close()
    return FitResult(
        latent_symbols={k: v.detach().cpu().numpy().astype(np.int32) for k, v in snap_latents.items()},
        weights={k: v.detach().cpu() for k, v in snap_weights.items()} if snap_weights is not None else None,
        psnr=best_psnr.numpy(),
        steps=step,
        history=history,
    )


def _iterate_batches(images: Sequence[torch.Tensor], batch_size: int, gen: torch.Generator) -> Iterable[torch.Tensor]:
    order = torch.randperm(len(images), generator=gen)
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def fit_base(
    images: torch.Tensor,
    arch: FieldArch,
    *,
    epochs: int = 20,
    batch_size: int = 256,
    lmbda: float = 2e-4,
    lr: float = 5e-3,
    latent_lr: float = 0.2,
    latent_bound: int = 127,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
    metadata: dict | None = None,
) -> SharedBase:
    """Fit a shared base by auto-decoding: one network + one latent set per training image.

    Network weights, per-level Laplace scales and every image's latents are optimised jointly
    (noisy latents, rate term ``lmbda * bpp``); latents of images outside the current batch
    are untouched (lazy Adam). The learned scales become the base's quantisation table.

    Args:
        images: ``N x C x H x W`` training images in [0, 1].
        arch: the architecture, built for ``H x W``.

    Returns:
        The quantised :class:`SharedBase`.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    n, _, height, width = images.shape
    pixels = height * width
    lspecs = arch.latent_specs()
    torch.manual_seed(seed)
    weights = {k: v[0].to(device).requires_grad_(True) for k, v in _batched_weights(arch, 1, gen).items()}
    log_scales = {s.name: torch.zeros((), device=device, requires_grad=True) for s in lspecs}
    table = {s.name: torch.zeros((n, *s.shape)) for s in lspecs}
    moments = {s.name: (torch.zeros((n, *s.shape)), torch.zeros((n, *s.shape))) for s in lspecs}
    counts = torch.zeros(n)
    opt = torch.optim.Adam(list(weights.values()) + list(log_scales.values()), lr=lr)
    total_steps = epochs * math.ceil(n / batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc="fitting base", unit="step")
    step = 0
    last_psnr = float("nan")
    b1, b2, eps = 0.9, 0.999, 1e-8
    for epoch in range(epochs):
        for idx in _iterate_batches(images, batch_size, gen):
            step += 1
            frac = step / total_steps
            cos = 0.5 * (1 + math.cos(math.pi * frac)) * 0.95 + 0.05
            for g in opt.param_groups:
                g["lr"] = lr * cos
            target = images[idx].to(device)
            z = {k: table[k][idx].to(device).requires_grad_(True) for k in table}
            zq = {k: _quantize_noise(v, frac > 0.8, gen) for k, v in z.items()}
            out = arch.render({**zq, **weights}, height, width)
            mse = ((out - target) ** 2).flatten(1).mean(1)
            bits = sum(laplace_bits(zq[k], torch.exp(log_scales[k]).clamp(0.05, 1e4)) for k in zq)
            loss = (mse + lmbda * bits / pixels).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # lazy Adam on the touched rows only
                counts[idx] += 1
                t = counts[idx].view(-1, *([1] * len(lspecs[0].shape)))
                for k in table:
                    g = z[k].grad.cpu() * len(idx)
                    m, v = moments[k]
                    m[idx] = b1 * m[idx] + (1 - b1) * g
                    v[idx] = b2 * v[idx] + (1 - b2) * g * g
                    mhat = m[idx] / (1 - b1**t)
                    vhat = v[idx] / (1 - b2**t)
                    table[k][idx] = (table[k][idx] - latent_lr * cos * mhat / (vhat.sqrt() + eps)).clamp(-latent_bound, latent_bound)
            if bar is not None:
                if step % 10 == 0:
                    with torch.no_grad():
                        last_psnr = float(psnr(out.detach(), target).mean())
                    bar.set_postfix(epoch=epoch, psnr=f"{last_psnr:.2f}", bpp=f"{float(bits.mean()) / pixels:.3f}")
                bar.update(1)
    if bar is not None:
        bar.close()
    latent_codes = [
        TensorCode(1.0, 0.0, float(torch.exp(log_scales[s.name].detach()).clamp(0.05, 1e4)), -latent_bound, latent_bound)
        for s in lspecs
    ]
    meta = {"train_images": int(n), "epochs": epochs, "lmbda": lmbda, "seed": seed}
    meta.update(metadata or {})
    return SharedBase.from_float_weights(arch, {k: v.detach() for k, v in weights.items()}, latent_codes, metadata=meta)
