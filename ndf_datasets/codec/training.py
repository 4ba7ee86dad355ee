"""Training a learned base (``hyper-field``, ``pixel-context``) for hours: checkpoints, exact resume.

:func:`train_base` runs the training loop behind ``ndf train-base`` and
``ndf.fit_base(arch="hyper-field" | "pixel-context")``. It is deterministic given the seed: the
batch of step ``s`` depends only on ``(seed, s)`` (an epoch permutation seeded by
``(seed, epoch)``, flips by ``(seed, s)``), and everything else random comes from torch's global
generator, whose state the checkpoint stores. So a run killed at any moment and resumed from
its last checkpoint continues bit for bit as if it had never stopped (on the same machine and
thread count).

Checkpoints (``<dir>/ckpt.pt``, written atomically every ``checkpoint_minutes``) hold tensors,
numbers and strings only and are read back with ``torch.load(weights_only=True)``: resuming
executes nothing from the file. ``<dir>/log.jsonl`` receives the periodic evaluations.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .exact import SCALE_MIN, ExactConv
from .fields.hyper import HyperField, export_tables
from .fields.hyper_net import TRAINING_ONLY, HyperConfig, HyperNet, gauss_bits
from .fields.pixel import PixelContext
from .fields.pixel_net import LEVEL_K, PixelConfig, PixelNet, dequantise, level_k, quantise, training_bits
from .shared import SharedBase
from .warmstart import init_weights as _init_weights

__all__ = ["TrainSettings", "train_base", "base_from_checkpoint"]

ARCHS = ("hyper-field", "pixel-context")


@dataclass
class TrainSettings:
    """What a training run is (its checkpoint must match these to be resumed).

    Attributes:
        arch: ``"hyper-field"`` (natural images) or ``"pixel-context"`` (near-binary, e.g. MNIST).
        config: the architecture's config values (default: its dataclass defaults).
        steps: optimiser steps in total (the cosine schedule spans them).
        batch_size: images per step.
        lr: peak learning rate (500 warm-up steps, cosine decay to 1% of it).
        lmbda: ``(low, high)`` rate-distortion weights of the lowest and highest anchor level
            (``hyper-field``; log-spaced in between).
        seed: the run's seed.
        flips: random horizontal flips (natural images).
        rate: ``hyper-field``: ``"noise"`` trains on the additive-noise rate proxy; ``"round"``
            fine-tunes on the code length of the rounded symbols (what the coder pays) with
            everything the symbols depend on frozen (analysis, steps, the hyper synthesis and
            the entropy networks but their output layers, whose mean rows get no gradient): the
            predicted scales, the residual predictors and the synthesis adapt to the symbols
            the base already gives. (Training the hyper synthesis through the residual
            predictors moved the means and raised the rate 12% in 2k steps.)
        distortion: ``hyper-field``: ``"mse"`` weighs each image's mean squared error by the
            level's lambda (the usual loss: every image at one level gets the same MSE slope);
            ``"psnr"`` weighs its log instead, scaled by the level's typical MSE so the levels
            keep their rates: the loss then follows the benchmark's metric, mean PSNR at mean
            bytes, which rewards a bit spent on an easy image more than one on a hard image.
            (Measured fine-tuning the zoo's cifar10: BD-rate +0.1%, the curve turns towards the
            high rates; BENCHMARKS.md, probe ps.)
        soft_round: ``hyper-field``: 0 (default) feeds the synthesis straight-through rounded
            latents; ``a > 0`` soft-rounds them instead, the sharpness annealed geometrically
            from ``a`` to 64 (practically hard rounding, as the decoder has) over the run.
            (Measured fine-tuning the zoo's cifar10 with ``a = 4``: 6-8% worse; probe sr.)
    """

    arch: str = "hyper-field"
    config: tuple[int, ...] | None = None
    steps: int = 200_000
    batch_size: int = 32
    lr: float = 1e-3
    lmbda: tuple[float, float] = (0.007, 1.0)
    seed: int = 0
    flips: bool = True
    warmup: int = 500
    rate: str = "noise"
    distortion: str = "mse"
    soft_round: float = 0.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown learned architecture {self.arch!r}; use one of {ARCHS}")
        self.config = tuple(int(v) for v in self.config) if self.config is not None else None
        self.lmbda = (float(self.lmbda[0]), float(self.lmbda[1]))
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("steps, batch_size and lr must be positive")
        if self.rate not in ("noise", "round"):
            raise ValueError(f"rate must be 'noise' or 'round', not {self.rate!r}")
        if not 0 <= self.soft_round <= 64:
            raise ValueError(f"soft_round must be 0 (off) or a sharpness up to 64, not {self.soft_round}")
        if self.distortion not in ("mse", "psnr"):
            raise ValueError(f"distortion must be 'mse' or 'psnr', not {self.distortion!r}")

    @classmethod
    def from_key(cls, key: dict[str, Any]) -> "TrainSettings":
        """Settings from a checkpoint's :meth:`key` (fields added since it was written take their defaults).

        Raises:
            ValueError: the key names settings this version does not know (a newer checkpoint).
        """
        unknown = sorted(set(key) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"training settings {unknown} are unknown to this version of ndf-datasets")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in key.items()})

    def key(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class _Run:
    settings: TrainSettings
    net: torch.nn.Module
    anchors: list[float] = field(default_factory=list)


def _build(settings: TrainSettings, channels: int, height: int, width: int) -> _Run:
    if settings.arch == "hyper-field":
        cfg = HyperConfig.from_values(settings.config) if settings.config else HyperConfig()
        settings.config = cfg.values()
        anchors = list(np.geomspace(settings.lmbda[0], settings.lmbda[1], cfg.A))
        return _Run(settings, HyperNet(cfg, channels), anchors)
    cfg = PixelConfig.from_values(settings.config) if settings.config else PixelConfig()
    settings.config = cfg.values()
    return _Run(settings, PixelNet(cfg, channels, height, width))


def batch_at(images: torch.Tensor, step: int, settings: TrainSettings) -> torch.Tensor:
    """The training batch of ``step`` (uint8), a function of ``(seed, step)`` only."""
    n, bs = images.shape[0], settings.batch_size
    per_epoch = max(1, n // bs)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed * 100003 + epoch))
    x = images[perm[i * bs : (i + 1) * bs]]
    if settings.flips:
        flip = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(settings.seed * 7919 + step)) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def _sharpness(settings: TrainSettings, step: int) -> float:
    """The soft-rounding sharpness at ``step`` (0: off)."""
    a = settings.soft_round
    return a * (64.0 / a) ** (step / settings.steps) if a > 0 else 0.0


def _loss(run: _Run, x8: torch.Tensor, device: torch.device, soft: float = 0.0) -> tuple[torch.Tensor, float, float]:
    """One step's loss, bits per pixel and PSNR (consumes torch's global RNG in a fixed order)."""
    net, s = run.net, run.settings
    if s.arch == "hyper-field":
        cfg = net.cfg
        x = x8.to(device).float() / 255
        t = torch.rand(x.shape[0]) * (cfg.A - 1)
        lo = t.floor().long().clamp(max=cfg.A - 2)
        f = t - lo.float()
        lam = torch.tensor(run.anchors, dtype=torch.float32).log()
        lmb = (lam[lo] * (1 - f) + lam[lo + 1] * f).exp().to(device)
        x_hat, bits, _ = net(x, t.to(device), rate=s.rate, soft=soft)
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        bpp = bits / (x.shape[-1] * x.shape[-2])
        dist = mse if s.distortion == "mse" else _typical_mse(mse, t / (cfg.A - 1)) * mse.clamp(min=1e-10).log()
        loss = (bpp + lmb * 255**2 * dist).mean()
        return loss, float(bpp.detach().mean()), float(10 * torch.log10(1 / mse.detach().mean()))
    levels = torch.randint(0, len(LEVEL_K), (x8.shape[0],))
    bits = training_bits(net, x8.to(device), levels.to(device))
    bpp = bits / (x8.shape[-1] * x8.shape[-2])
    return bpp.mean(), float(bpp.detach().mean()), float("nan")


def _typical_mse(mse: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The batch's typical MSE at each image's level ``u`` in [0, 1] (a constant): a least-squares
    quadratic of log-MSE in the level over the batch. ``typical * log(mse)`` has the gradient of
    ``mse`` weighted by ``typical / mse``: lambda in PSNR terms, at the level's usual scale."""
    u = u.to(mse.device, mse.dtype)
    v = torch.stack([torch.ones_like(u), u, u * u], 1)
    logm = mse.detach().clamp(min=1e-10).log()[:, None]
    coef = torch.linalg.lstsq(v.cpu().double(), logm.cpu().double()).solution.to(v)
    return (v @ coef).squeeze(1).exp()


def _save(path: Path, run: _Run, opt: torch.optim.Optimizer, step: int, meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    state = {
        "model": run.net.state_dict(),
        "opt": opt.state_dict(),
        "step": step,
        "rng": torch.get_rng_state(),
        "settings": json.dumps(run.settings.key()),
        "meta": json.dumps(meta),
    }
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def export(run: _Run, height: int, width: int, channels: int, metadata: dict[str, Any]) -> SharedBase:
    """The base file of a (trained) run: decoder + encoder weights and the integer tables."""
    net = run.net.cpu()
    weights = {k: v for k, v in net.state_dict().items() if k not in TRAINING_ONLY}
    # masked layers store the taps they compute with (the others are zero), whatever a warm start left there
    weights.update({f"{n}.weight": m.masked_weight().detach() for n, m in net.named_modules() if isinstance(m, ExactConv)})
    if run.settings.arch == "hyper-field":
        weights.update(export_tables(net, run.anchors))
        arch = HyperField(net.cfg.values(), height, width, channels)
        metadata = {**metadata, "lmbda_anchors": [float(a) for a in run.anchors]}
    else:
        arch = PixelContext(net.cfg.values(), height, width, channels)
    return SharedBase.from_float_weights(arch, weights, [], metadata=metadata)


def base_from_checkpoint(path: str | os.PathLike, height: int, width: int, channels: int, metadata: dict[str, Any] | None = None) -> SharedBase:
    """Export the base of a checkpoint written by :func:`train_base` (any step)."""
    state = _load(Path(path))
    settings = TrainSettings.from_key(json.loads(state["settings"]))
    run = _build(settings, channels, height, width)
    run.net.load_state_dict(state["model"])
    meta = {**json.loads(state.get("meta", "{}")), "train_steps_done": int(state["step"]), **(metadata or {})}
    return export(run, height, width, channels, meta)


def train_base(
    images: torch.Tensor,
    settings: TrainSettings,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_minutes: float = 5.0,
    eval_images: torch.Tensor | None = None,
    eval_every: int = 10_000,
    device: str | torch.device = "cpu",
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    on_eval: Callable[[int, dict[str, Any]], None] | None = None,
    init_checkpoint: str | os.PathLike | None = None,
) -> SharedBase:
    """Train a learned base on ``N x C x H x W`` uint8 images; resume from ``checkpoint_dir`` if it holds one.

    ``init_checkpoint``: start a new run from another run's weights (fine-tuning; the optimiser
    and the schedule start afresh). Ignored when resuming.

    Raises:
        ValueError: images of the wrong type, or a checkpoint written for other settings.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("train_base takes an N x C x H x W uint8 tensor of training images")
    n, channels, height, width = images.shape
    if settings.arch == "hyper-field" and (height % 8 or width % 8):
        raise ValueError(f"hyper-field trains on crops whose sides are multiples of 8, not {height}x{width}")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    run = _build(settings, channels, height, width)
    run.net.to(device)
    if settings.rate == "round":
        if settings.arch != "hyper-field":
            raise ValueError("rate='round' applies to hyper-field")
        net = run.net  # everything the quantisation (steps, means) depends on stays as it is
        for m in (net.ga, net.ha, net.hs1, net.hs2, net.cc1, net.cc2):
            m.requires_grad_(False)
        for p in (net.log_dy, net.log_dz, net.z_mean):
            p.requires_grad_(False)
    opt = torch.optim.Adam(run.net.parameters(), lr=settings.lr)
    step = 0
    ckpt = None
    init_from = init_checkpoint
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir) / "ckpt.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if ckpt.exists():
            state = _load(ckpt)
            if TrainSettings.from_key(json.loads(state["settings"])).key() != settings.key():
                raise ValueError(
                    f"{ckpt} was written for other settings ({state['settings']}); use another checkpoint directory"
                )
            run.net.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step = int(state["step"])
            torch.set_rng_state(state["rng"])
            init_checkpoint = None
    if init_checkpoint is not None:
        _init_weights(run.net, Path(init_checkpoint))
    meta = {"train_images": int(n), "size": [height, width], "arch": settings.arch, **(metadata or {}), "settings": settings.key()}
    if init_from is not None:
        meta["init_checkpoint"] = os.fspath(init_from)
    log = open(Path(checkpoint_dir) / "log.jsonl", "a") if checkpoint_dir is not None else None
    bar = _progress(progress, settings.steps, step)
    last_ckpt = time.time()
    run.net.train()
    try:
        while step < settings.steps:
            lr = settings.lr * min(1.0, (step + 1) / settings.warmup) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / settings.steps)))
            for g in opt.param_groups:
                g["lr"] = lr
            loss, bpp, psnr = _loss(run, batch_at(images, step, settings), device, _sharpness(settings, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.net.parameters(), 1.0)
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(bpp=f"{bpp:.3f}", **({} if math.isnan(psnr) else {"psnr": f"{psnr:.2f}"}), refresh=False)
            if eval_images is not None and (step % eval_every == 0 or step == settings.steps):
                rows = evaluate(run, eval_images, device)
                if log is not None:
                    log.write(json.dumps({"step": step, "eval": rows, "time": time.time()}) + "\n")
                    log.flush()
                if on_eval is not None:
                    on_eval(step, {"eval": rows})
            if ckpt is not None and (time.time() - last_ckpt > checkpoint_minutes * 60 or step == settings.steps):
                _save(ckpt, run, opt, step, meta)
                last_ckpt = time.time()
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    run.net.eval()
    return export(run, height, width, channels, {**meta, "train_steps_done": step})


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train-base", unit="step", dynamic_ncols=True)


@torch.no_grad()
def evaluate(run: _Run, images: torch.Tensor, device: torch.device) -> list[dict[str, float]]:
    """Estimated bytes (+8 container) and PSNR at each anchor level on ``images`` (uint8)."""
    net = run.net
    was = net.training
    net.eval()
    rows = []
    x8 = images.to(device)
    if run.settings.arch == "pixel-context":
        for lv in range(len(LEVEL_K)):
            levels = torch.full((x8.shape[0],), lv, device=device)
            bits = training_bits(net, x8, levels)
            k = level_k(levels).to(device)
            mse = ((dequantise(quantise(x8, k), k).float() - x8.float()) ** 2).flatten(1).mean(1).clamp(min=1e-12)
            rows.append({"level": lv, "bytes": float(bits.mean()) / 8 + 8, "psnr": float((10 * torch.log10(255**2 / mse)).clamp(max=120).mean())})
    else:
        x = x8.float() / 255
        cfg = net.cfg
        for a in range(cfg.A):
            bits, x_hat = _rounded(net, x, torch.full((x.shape[0],), float(a), device=device))
            xh = (x_hat.clamp(0, 1) * 255).round() / 255
            mse = ((xh - x) ** 2).flatten(1).mean(1).clamp(min=1e-12)
            rows.append({"anchor": a, "bytes": float(bits.mean()) / 8 + 8, "psnr": float((10 * torch.log10(1 / mse)).mean())})
    net.train(was)
    return rows


def _rounded(net: HyperNet, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rate and reconstruction of rounded latents (float entropy model: an estimate of the coded size)."""
    ms = net.slice_channels
    ly, lz = net.log_steps(t)
    dy, dz = ly.exp()[:, :, None, None], lz.exp()[:, :, None, None]
    y = net.ga(x - 0.5)
    z = net.ha(y)
    zm = net.z_mean[None, :, None, None]
    sz = torch.round((z - zm) / dz)
    bits = gauss_bits(sz, (net.z_logscale[None, :, None, None].exp() / dz).clamp(min=SCALE_MIN)).flatten(1).sum(1)
    hyp = net.hyper(zm + dz * sz)
    decoded, synth_in = [], []
    for k in range(net.cfg.S):
        dk = dy[:, k * ms : (k + 1) * ms]
        log_sigma, s, yh = net.slice_symbols(
            k, hyp, decoded, y[:, k * ms : (k + 1) * ms], dk, lambda mu, s, dk=dk: mu + dk * torch.round(s)
        )
        bits = bits + gauss_bits(torch.round(s), (log_sigma.exp() / dk).clamp(min=SCALE_MIN)).flatten(1).sum(1)
        decoded.append(yh)
        synth_in.append(yh + net.residual(k, hyp, decoded, dk) if net.cfg.lrp else yh)
    return bits, net.synth(torch.cat(synth_in, 1))
