"""Encoding: ``encode`` / ``encode_batch`` (images -> ``.ndf`` bytes), ``fit_base``, ``inspect``.

``decode``/``decode_batch`` live in :mod:`ndf_datasets.codec.decoding` (the one decode path) and
``load_base`` in :mod:`ndf_datasets.codec.shared`; all are re-exported by the package.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from . import format as fmt
from .coding import encode_symbols, fit_code, pack_codes, unpack_codes
from .decoding import read_field, render_fields
from .fields import get_arch
from .fields.conv import ConvField
from .fields.grid import GridMLP
from .fitting import FitSettings, fit_fields, quantize_weights
from .fitting import fit_base as _fit_base
from .fitting import psnr as psnr_of
from .images import COLORSPACE_OF_CHANNELS, to_tensor
from .shared import SharedBase, build_arch

__all__ = ["encode", "encode_batch", "inspect", "fit_base", "default_config", "default_base_config"]

#: candidate quantisation steps for a standalone field's MLP weights (coarsest first)
WEIGHT_STEPS = tuple(2.0**-k for k in range(5, 13))


def default_config(height: int, width: int) -> tuple[int, ...]:
    """Standalone ``grid-mlp`` config for an image size: levels down to ~1 cell, 1 channel each."""
    levels = max(1, min(7, int(math.log2(max(1, min(height, width)))) + 1))
    return (levels, 1, 0, 16, 2, 0)


def default_base_config(height: int, width: int) -> tuple[int, ...]:
    """Shared-base ``grid-mlp`` config for small dataset images (MNIST / CIFAR size)."""
    levels = max(1, min(4, int(math.log2(max(1, min(height, width)))) - 1))
    return (levels, 2, 1, 32, 2, 0)


def default_conv_config(channels: int) -> tuple[int, ...]:
    """``conv-field`` config (C, down, W, F, hidden, E) for small dataset images."""
    return (16, 2, 24, 16, 24, 64)


def _settings(psnr: float | None, steps: int | None, seed: int, progress: bool, kw: dict) -> FitSettings:
    s = FitSettings(psnr=psnr, seed=seed, progress=progress, **kw)
    if steps is not None:
        s.steps = int(steps)
        s.min_steps = min(s.min_steps, s.steps)
    return s


def _choose_weight_steps(arch, latents, weights, target, floor_psnr) -> tuple[list[float], torch.Tensor]:
    """Per image, the coarsest weight step whose decoded PSNR stays within 0.05 dB of the finest."""
    batch = target.shape[0]
    with torch.no_grad():
        results = []
        for step in WEIGHT_STEPS:
            wq = {k: quantize_weights(v, step) for k, v in weights.items()}
            results.append(psnr_of(arch.render({**latents, **wq}, target.shape[2], target.shape[3]), target))
        finest = results[-1]
        chosen = []
        for i in range(batch):
            need = min(float(finest[i]) - 0.05, max(float(floor_psnr), float(finest[i]) - 0.3))
            pick = next(s for s, r in zip(WEIGHT_STEPS, results) if float(r[i]) >= need)
            chosen.append(pick)
    return chosen, finest


def _container(kind, arch, payload, height, width, channels, label, metadata, base_hash, fit_psnr=None) -> fmt.Container:
    return fmt.Container(
        kind=kind,
        arch=arch.arch_id,
        colorspace=COLORSPACE_OF_CHANNELS[channels],
        height=height,
        width=width,
        config=arch.config,
        payload=payload,
        fit_psnr=fit_psnr,
        label=label,
        metadata=metadata or {},
        base_hash=base_hash,
    )


def encode_batch(
    images: Sequence[Any],
    psnr: float | None = 35.0,
    base: SharedBase | None = None,
    *,
    labels: Sequence[int | None] | None = None,
    metadata: Sequence[dict | None] | None = None,
    steps: int | None = None,
    lmbda: float | None = None,
    config: tuple[int, ...] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    level: int | None = None,
    refine_steps: int | None = None,
    return_report: bool = False,
    mean_psnr: float | None = None,
    min_psnr: float | None = None,
    **fit_kw: Any,
) -> list[bytes]:
    """Encode many images; same-sized images are fitted together in batches.

    With a *learned* base (``hyper-field``, ``pixel-context``; e.g. ``base="cifar10"`` from the
    zoo) nothing is fitted: each image gets the smallest rate level whose decode reaches
    ``psnr`` (or the given ``level``), in a compact record. Images the base can not bring to
    ``psnr`` are encoded at its best level and a :class:`UserWarning` names the PSNR reached.

    Args:
        images: PIL images, ``H x W x C`` uint8 arrays or ``C x H x W`` float tensors.
        psnr: target PSNR in dB of the decoded field (rate is minimised subject to it);
            ``None`` to use a fixed rate weight ``lmbda`` instead.
        base: encode per-image records for this shared base (a :class:`SharedBase`, a path
            or a zoo name such as ``"cifar10"``) instead of standalone fields.
        labels, metadata: per image, stored in the header.
        steps: maximum fitting steps (default: :class:`FitSettings`).
        config: architecture config for standalone fields (default :func:`default_config`).
        batch_size: images per batched fitting step.
        seed: same seed and inputs, same bytes.
        device: where to fit (``"cpu"``, ``"cuda"``).
        progress: show a progress bar.
        level: learned bases: a fixed rate level instead of a PSNR target.
        mean_psnr: learned bases: instead of ``psnr`` for every image, a target for the mean
            PSNR of each batch of ``batch_size`` images (so of the whole call), met at the
            fewest bytes: bits go to the images where they buy the most decibels, so single
            images may fall below it (CIFAR-10 with the zoo base: 6-8% fewer bytes than
            ``psnr=`` at the same mean; see ``EncodeReport.psnr`` for each image).
        min_psnr: with ``mean_psnr``: no image below this PSNR (a floor; it costs bytes).
        refine_steps: learned ``hyper-field`` bases: per-image latent refinement steps
            (default :data:`~ndf_datasets.codec.learned.DEFAULT_REFINE_STEPS`; 0 is fastest).
        return_report: also return the :class:`~ndf_datasets.codec.learned.EncodeReport`
            (learned bases: per-image level, PSNR, bytes, unreachable targets).
        **fit_kw: further :class:`~ndf_datasets.codec.fitting.FitSettings` fields, e.g.
            ``early_stop=False`` (smaller files, slower), ``min_steps``, ``lr``, ``latent_lr``.

    Raises:
        TypeError, ValueError: an unsupported image, or labels/metadata of the wrong length.

    Returns:
        One ``bytes`` per image, in input order.
    """
    tensors = [to_tensor(im) for im in images]
    n = len(tensors)
    labels = list(labels) if labels is not None else [None] * n
    metadata = list(metadata) if metadata is not None else [None] * n
    if len(labels) != n or len(metadata) != n:
        raise ValueError("labels and metadata must have one entry per image")
    if isinstance(base, (str, os.PathLike)):
        from .zoo import load_base

        base = load_base(base)
    if base is not None and getattr(base.arch, "learned", False):
        if any(m for m in metadata):
            raise ValueError("compact records of a learned base carry a label but no metadata; keep metadata beside them")
        return _encode_with_learned(
            tensors, base, psnr, level, labels, refine_steps, batch_size, device, progress, return_report, mean_psnr,
            min_psnr,
        )
    if level is not None or return_report or mean_psnr is not None or min_psnr is not None:
        raise ValueError("level=, mean_psnr=, min_psnr= and return_report= need a learned base (hyper-field or pixel-context)")
    kw = dict(fit_kw)
    if lmbda is not None:
        kw["lmbda"] = lmbda
    settings = _settings(psnr, steps, seed, progress, kw)
    if base is not None and any(t.shape[0] != base.arch.channels for t in tensors):
        raise ValueError(f"the base decodes {base.arch.channels}-channel images; got another channel count")
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    out: list[bytes | None] = [None] * n
    for (channels, height, width), members in groups.items():
        if base is not None:
            arch = base.arch_for(height, width)
        else:
            arch = GridMLP(config or default_config(height, width), height, width, channels)
        for start in range(0, len(members), batch_size):
            idx = members[start : start + batch_size]
            target = torch.stack([tensors[i] for i in idx])
            blobs = _encode_group(target, arch, settings, base, device, [labels[i] for i in idx], [metadata[i] for i in idx])
            for i, b in zip(idx, blobs):
                out[i] = b
    return out  # type: ignore[return-value]


def _encode_with_learned(
    tensors, base, psnr, level, labels, refine_steps, batch_size, device, progress, return_report, mean_psnr=None, min_psnr=None
):
    from .learned import DEFAULT_REFINE_STEPS, EncodeReport, encode_learned, warn_unreachable

    if any(t.shape[0] != base.arch.channels for t in tensors):
        raise ValueError(f"the base decodes {base.arch.channels}-channel images; got another channel count")
    steps = DEFAULT_REFINE_STEPS if refine_steps is None else int(refine_steps)
    if min_psnr is not None and mean_psnr is None:
        raise ValueError("min_psnr= is a floor under mean_psnr=; for each image's own target use psnr=")
    psnr = None if level is not None else (min_psnr if mean_psnr is not None else psnr)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    out: list[bytes | None] = [None] * len(tensors)
    parts: list[tuple[list[int], Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tensors), desc="encode", unit="img")
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            idx = members[start : start + batch_size]
            recs, rep = encode_learned(
                base, torch.stack([tensors[i] for i in idx]), psnr, level, [labels[i] for i in idx], steps, device, mean_psnr
            )
            for i, r in zip(idx, recs):
                out[i] = r
            parts.append((idx, rep))
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    report = EncodeReport([0] * len(tensors), [0.0] * len(tensors), [0] * len(tensors))
    for idx, rep in parts:
        for j, i in enumerate(idx):
            report.levels[i], report.psnr[i], report.nbytes[i] = rep.levels[j], rep.psnr[j], rep.nbytes[j]
        report.unreachable += [idx[j] for j in rep.unreachable]
        report.mean_unreachable += [idx[j] for j in rep.mean_unreachable]
    report.unreachable.sort()
    report.mean_unreachable.sort()
    warn_unreachable(report, psnr, mean_psnr)  # psnr: each image's target, or the floor under the mean
    return (out, report) if return_report else out


def _encode_group(target, arch, settings, base, device, labels, metadata) -> list[bytes]:
    batch, channels, height, width = target.shape
    init = None
    if base is not None:
        with torch.no_grad():
            init = arch.analysis(base.weights_on(device), target.to(device))
        init = {k: v.cpu() for k, v in init.items()} if init is not None else None
    result = fit_fields(target, arch, settings, base=base, device=device, init_latents=init)
    lspecs = arch.latent_specs()
    payloads = []
    if base is None:
        latents_t = {k: torch.from_numpy(v.astype(np.float32)) for k, v in result.latent_symbols.items()}
        steps, _ = _choose_weight_steps(arch, latents_t, result.weights, target, settings.psnr or 0.0)
        for i in range(batch):
            streams = [fit_code(result.latent_symbols[s.name][i], 1.0) for s in lspecs]
            streams += [fit_code(result.weights[s.name][i].numpy(), steps[i]) for s in arch.weight_specs()]
            codes = [c for c, _ in streams]
            payloads.append(pack_codes(codes) + encode_symbols([(sym, c) for c, sym in streams]))
        kind, base_hash = fmt.KIND_FIELD, None
    else:
        for i in range(batch):
            streams = [
                (np.clip(result.latent_symbols[s.name][i], c.lo, c.hi), c) for s, c in zip(lspecs, base.latent_codes)
            ]
            payloads.append(encode_symbols(streams))
        kind, base_hash = fmt.KIND_RECORD, base.hash
    # the PSNR in the header is measured on what the real decoder produces from these bytes
    drafts = [
        fmt.write(_container(kind, arch, p, height, width, channels, labels[i], metadata[i], base_hash))
        for i, p in enumerate(payloads)
    ]
    decoded = render_fields([read_field(d, base) for d in drafts], None, device)
    measured = psnr_of(decoded, target.to(decoded.device)).cpu().numpy()
    return [
        fmt.write(_container(kind, arch, p, height, width, channels, labels[i], metadata[i], base_hash, float(measured[i])))
        for i, p in enumerate(payloads)
    ]


def encode(
    image: Any,
    psnr: float | None = 35.0,
    base: SharedBase | None = None,
    *,
    label: int | None = None,
    metadata: dict | None = None,
    **kw: Any,
) -> bytes:
    """Encode one image to ``.ndf`` bytes. See :func:`encode_batch` for the options.

    Example::

        blob = ndf.encode(image, psnr=35.0)
        x = ndf.decode(blob, size=(64, 96))
    """
    if kw.get("return_report"):
        records, report = encode_batch([image], psnr, base, labels=[label], metadata=[metadata], **kw)
        return records[0], report
    return encode_batch([image], psnr, base, labels=[label], metadata=[metadata], **kw)[0]


def _inspect_compact(blob: bytes, source: str, base: SharedBase | None) -> dict[str, Any]:
    from .record import parse_record, verify_record

    rec = parse_record(blob, source)
    info: dict[str, Any] = {
        "version": 1,
        "kind": "record",
        "compact": True,
        "record_version": blob[0] & 0x0F,  # the tag's low nibble (parse_record read only versions 1-3)
        "base_tag": None if rec.base_tag is None else f"{rec.base_tag:02x}",
        "level": rec.level,
        "label": rec.label,
        "bytes": rec.nbytes,
        "payload_bytes": len(rec.payload),
        "verified": False,
    }
    if base is not None:
        verify_record(rec, base.hash)
        h, w = rec.size or (base.arch.height, base.arch.width)
        arch = base.arch_for(h, w)
        info.update(
            verified=True, arch=arch.name, config=list(arch.config), channels=arch.channels, height=h, width=w,
            bpp=8.0 * rec.nbytes / (h * w), base_hash=base.hash.hex(), macs_per_pixel=arch.macs_per_pixel(), levels=arch.levels,
        )
    elif rec.size is not None:
        info.update(height=rec.size[0], width=rec.size[1])
    return info


def inspect(blob: bytes, source: str = "<bytes>", base: SharedBase | None = None) -> dict[str, Any]:
    """Describe an ``.ndf`` file without rendering it.

    A compact record (of a learned base) says little on its own: pass its ``base`` to check its
    CRC and learn its architecture, size and bits per pixel (``verified`` tells which).

    Returns:
        A dict with ``version, kind, arch, config, channels, colorspace, height, width,
        bytes, bpp, fit_psnr, label, metadata, base_hash, macs_per_pixel, tensors``.
    """
    from .record import is_compact

    if is_compact(blob):
        return _inspect_compact(blob, source, base)
    c = fmt.parse(blob, source)
    arch = build_arch(c.arch, c.config, c.height, c.width, c.channels, source)
    info: dict[str, Any] = {
        "version": c.version,
        "kind": fmt.KIND_NAMES[c.kind],
        "arch": get_arch(c.arch).name,
        "config": list(c.config),
        "channels": c.channels,
        "colorspace": fmt.COLORSPACES[c.colorspace],
        "height": c.height,
        "width": c.width,
        "bytes": c.nbytes,
        "bpp": 8.0 * c.nbytes / (c.height * c.width),
        "fit_psnr": c.fit_psnr,
        "label": c.label,
        "metadata": c.metadata,
        "base_hash": c.base_hash.hex() if c.base_hash is not None else None,
        "macs_per_pixel": arch.macs_per_pixel(),
    }
    if c.kind in (fmt.KIND_FIELD, fmt.KIND_BASE):
        specs = arch.tensor_specs() if c.kind == fmt.KIND_FIELD else arch.weight_specs() + arch.latent_specs()
        codes, _ = unpack_codes(c.payload, len(specs), source)
        info["tensors"] = [
            {"name": s.name, "role": s.role, "shape": list(s.shape), "step": code.step, "bits": code.bits}
            for s, code in zip(specs, codes)
        ]
    return info


def fit_base(
    images: Iterable[Any],
    config: tuple[int, ...] | None = None,
    *,
    arch: str = "grid-mlp",
    epochs: int = 20,
    batch_size: int = 256,
    lmbda: float = 2e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **kw: Any,
) -> SharedBase:
    """Fit a shared base (network + latent quantisation table) on a dataset's training images.

    Args:
        images: an iterable of same-sized images (PIL, ndarray or tensor), or an
            ``N x C x H x W`` tensor (uint8, or float in [0, 1]).
        config: the architecture's config (default :func:`default_base_config`).
        arch: ``"grid-mlp"`` (auto-decoded latent grids, shared MLP), ``"conv-field"``
            (amortised encoder + conv synthesis; see :mod:`ndf_datasets.codec.fields.conv`), or a
            learned codec trained for many steps (:mod:`ndf_datasets.codec.training`):
            ``"hyper-field"`` (natural images) or ``"pixel-context"`` (near-binary, e.g. MNIST),
            which take ``steps``, ``batch_size``, ``lr``, ``lmbda_range``, ``checkpoint_dir``
            (exact resume), ``eval_images`` instead of ``epochs``/``lmbda``.
        epochs, batch_size, lmbda, seed, device, progress: training knobs.

    Returns:
        A :class:`SharedBase`; ``save()`` it and pass it as ``base=`` to encode/decode.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.dtype == torch.uint8:
            stack = images.float() / 255.0
        elif images.is_floating_point() and bool(images.min() >= 0) and bool(images.max() <= 1):
            stack = images.float()
        else:
            raise ValueError("an image tensor for fit_base must be uint8 or float in [0, 1] (N x C x H x W)")
    else:
        tensors = [to_tensor(im) for im in images]
        if not tensors:
            raise ValueError("fit_base needs at least one image")
        if len({tuple(t.shape) for t in tensors}) > 1:
            raise ValueError("fit_base needs images of one size and channel count")
        stack = torch.stack(tensors)
    _, channels, height, width = stack.shape
    if arch in ("hyper-field", "pixel-context"):
        from .training import TrainSettings, train_base

        known = {"steps", "batch_size", "lr", "lmbda_range", "flips", "checkpoint_dir", "checkpoint_minutes", "eval_images", "eval_every"}
        if set(kw) - known:
            raise TypeError(f"fit_base(arch={arch!r}) got unexpected options {sorted(set(kw) - known)}")
        settings = TrainSettings(
            arch=arch, config=config, steps=int(kw.get("steps", 200_000)), batch_size=int(kw.get("batch_size", 32)),
            lr=float(kw.get("lr", 1e-3)), lmbda=tuple(kw.get("lmbda_range", (0.007, 1.0))), seed=seed,
            flips=bool(kw.get("flips", arch == "hyper-field")),
        )
        images8 = torch.round(stack * 255).clamp(0, 255).to(torch.uint8)
        return train_base(
            images8, settings, checkpoint_dir=kw.get("checkpoint_dir"), checkpoint_minutes=float(kw.get("checkpoint_minutes", 5.0)),
            eval_images=kw.get("eval_images"), eval_every=int(kw.get("eval_every", 10_000)), device=device, progress=progress,
        )
    common = dict(epochs=epochs, batch_size=batch_size, lmbda=lmbda, seed=seed, device=device, progress=progress, **kw)
    if arch == "conv-field":
        from .amortised import fit_amortised_base

        field = ConvField(config or default_conv_config(channels), height, width, channels)
        return fit_amortised_base(stack, field, **common)
    if arch != "grid-mlp":
        raise ValueError(f"unknown base architecture {arch!r}; use 'grid-mlp', 'conv-field', 'hyper-field' or 'pixel-context'")
    field = GridMLP(config or default_base_config(height, width), height, width, channels)
    return _fit_base(stack, field, **common)
