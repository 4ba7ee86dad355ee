"""The one decode path: bytes -> :class:`DecodedField` -> pixels, batched.

Decoding is split in two so loaders can defer the expensive part:

* :func:`read_field` parses and entropy-decodes one ``.ndf`` (CPU, cheap, done in data-loader
  workers). It returns a :class:`DecodedField`: the architecture plus its latent (and, for a
  standalone field, weight) tensors.
* :func:`render_fields` renders any number of decoded fields in ONE batched forward pass per
  group of same-shaped fields, on any device, at any output size.

Output sizes smaller than the original are rendered by supersampling each output pixel's
footprint (a box filter over ``f x f`` field samples, ``f = min(MAX_SUPERSAMPLE, ceil(original /
output))``) so downscaled decodes do not alias. The cap keeps the cost of a small decode
independent of the size a file *declares*: a hostile 100-byte header claiming 8192 x 8192 can
not turn a 16 x 16 decode into a 67-million-sample render. This module never imports the
fitting code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import format as fmt
from .coding import decode_symbols, unpack_codes
from .errors import NDFBaseError, NDFChecksumError, NDFFormatError
from .fields import FieldArch
from .record import is_compact, parse_record, record_matches, verify_record
from .shared import SharedBase, build_arch

__all__ = [
    "BaseLookup",
    "DecodedField",
    "Size",
    "MAX_SUPERSAMPLE",
    "read_field",
    "read_fields",
    "record_label",
    "render_fields",
    "decode",
    "decode_batch",
    "resolve_size",
    "read_bytes",
]

Size = int | tuple[int, int] | None

#: At most ``MAX_SUPERSAMPLE x MAX_SUPERSAMPLE`` field samples per output pixel (FORMAT.md section 10).
MAX_SUPERSAMPLE = 8


@dataclass
class DecodedField:
    """One image's field, entropy-decoded but not rendered.

    Attributes:
        arch: architecture built for the image's original size.
        latents: per-image latent tensors (CPU float32, no batch dimension).
        weights: the image's own weights (standalone field), or ``None`` when the weights
            come from ``base``.
        base: the shared base, for records.
        label: the stored label, if any.
        source: where the bytes came from, for error messages.
    """

    arch: FieldArch
    latents: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None
    base: SharedBase | None
    label: int | None
    source: str

    @property
    def group_key(self) -> tuple:
        """Fields with equal keys can be rendered in one forward pass."""
        shared = id(self.base) if self.base is not None else None
        return (self.arch.arch_id, self.arch.config, self.arch.height, self.arch.width, self.arch.channels, shared)


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a local file, refusing files larger than the format's limit before reading them."""
    size = os.path.getsize(path)
    if size > fmt.LIMITS["max_file_bytes"]:
        raise fmt.NDFLimitError(f"file of {size} bytes exceeds max_file_bytes", source=os.fspath(path))
    with open(path, "rb") as f:
        return f.read()


def _check_count(specs, source: str) -> None:
    total = sum(s.numel for s in specs)
    if total > fmt.LIMITS["max_symbols"]:
        raise fmt.NDFLimitError(f"the field declares {total} values, over max_symbols={fmt.LIMITS['max_symbols']}", source=source)


def _to_tensors(specs, symbols, codes) -> dict[str, torch.Tensor]:
    return {
        s.name: torch.from_numpy((sym.astype(np.float32) * np.float32(c.step)).reshape(s.shape))
        for s, sym, c in zip(specs, symbols, codes)
    }


#: A base lookup: called with what a record says of its base (a version-1 file's 8-byte hash, a
#: version-1/2 compact record's 1-byte tag, ``b""`` for a version-3 compact record, which names
#: none), it returns the base, or the candidate bases whose CRC check picks the right one.
BaseLookup = Callable[[bytes], "SharedBase | Sequence[SharedBase]"]


def read_field(blob: bytes, base: SharedBase | BaseLookup | None = None, source: str = "<bytes>") -> DecodedField:
    """Parse and entropy-decode one ``.ndf`` (standalone field or record).

    Args:
        blob: the file's bytes.
        base: for records, the shared base, or a :data:`BaseLookup` (so callers can look the
            base up from the header without parsing twice). For a compact record the bases
            this process has loaded are tried first.
        source: name used in error messages.

    Raises:
        NDFError: malformed input (a subclass says what), or :class:`NDFBaseError` for a
            record given no base or the wrong one.
    """
    base = _as_base(base)
    if is_compact(blob):
        return read_fields([blob], base, [source])[0]
    c = fmt.parse(blob, source)
    if c.kind == fmt.KIND_BASE:
        raise NDFFormatError("this is a shared base, not an image; load it with ndf.load_base()", source=source)
    if c.kind == fmt.KIND_RECORD:
        if base is None:
            raise NDFBaseError(
                f"this record needs the shared base with hash {c.base_hash.hex()}; pass base=ndf.load_base(...)",
                source=source,
            )
        if not isinstance(base, SharedBase):
            found = base(c.base_hash)
            base = found if isinstance(found, SharedBase) else next((b for b in found if b.hash == c.base_hash), None)
            if base is None:
                raise NDFBaseError(f"this record needs the shared base {c.base_hash.hex()}, which the lookup did not find", source=source)
        base.check(c.base_hash, source)
        if (c.arch, c.config, c.channels) != (base.arch.arch_id, base.arch.config, base.arch.channels):
            raise NDFFormatError("record architecture does not match its base", source=source)
        arch = base.arch_for(c.height, c.width)
        specs = arch.latent_specs()
        _check_count(specs, source)
        symbols = decode_symbols(c.payload, [(s.numel, code) for s, code in zip(specs, base.latent_codes)], source)
        return DecodedField(arch, _to_tensors(specs, symbols, base.latent_codes), None, base, c.label, source)
    arch = build_arch(c.arch, c.config, c.height, c.width, c.channels, source)
    if not arch.standalone:
        raise NDFFormatError(
            f"a standalone (kind 1) {arch.name} file is not supported: {arch.name} is stored only as a shared base "
            "and its records",
            source=source,
            offset=4,
        )
    specs = arch.tensor_specs()
    _check_count(specs, source)
    codes, used = unpack_codes(c.payload, len(specs), source)
    symbols = decode_symbols(c.payload[used:], [(s.numel, code) for s, code in zip(specs, codes)], source)
    tensors = _to_tensors(specs, symbols, codes)
    latents = {s.name: tensors[s.name] for s in specs if s.role == "latent"}
    weights = {s.name: tensors[s.name] for s in specs if s.role != "latent"}
    return DecodedField(arch, latents, weights, None, c.label, source)


BaseArg = SharedBase | BaseLookup | str | os.PathLike | None


def _as_base(base):
    """A zoo name or a path -> the (cached) base; anything else unchanged."""
    if isinstance(base, (str, os.PathLike)):
        from .zoo import ZOO, load_base

        if isinstance(base, str) and base in ZOO and not os.path.exists(base):
            return load_base(base)
        from .bases import load_base_cached

        return load_base_cached(base)
    return base


def _compact_base(rec, base: BaseArg, source: str) -> SharedBase:
    """The base a compact record checks with (:func:`~ndf_datasets.codec.record.verify_record`):
    the given base or an error, or what :func:`_look_up_compact_base` finds with a lookup."""
    if base is None:
        named = "" if rec.base_tag is None else f" whose hash starts with {rec.base_tag:02x}"
        raise NDFBaseError(f"this record needs the shared base{named}; pass base=ndf.load_base(...)", source=source)
    if isinstance(base, SharedBase):
        verify_record(rec, base.hash)
    else:
        base = _look_up_compact_base(rec, base, source)
    if not getattr(base.arch, "learned", False):
        raise NDFFormatError(f"a compact record needs a learned base; {base.arch.name} bases take full records", source=source)
    return base


def _look_up_compact_base(rec, lookup: BaseLookup, source: str) -> SharedBase:
    """First the bases this process has already loaded (no I/O; a version-3 record does not name
    its base, so it is the CRC that picks one), then what ``lookup`` returns for the record's
    base-tag prefix (``b""`` for version 3, the tag byte for versions 1-2): one base, or a
    sequence of candidates to try."""
    from .bases import cached_bases

    for b in cached_bases():
        if record_matches(rec, b.hash):
            return b
    looked = lookup(b"" if rec.base_tag is None else bytes([rec.base_tag]))
    candidates = [looked] if isinstance(looked, SharedBase) else list(looked)
    if not candidates:
        raise NDFBaseError("this record needs a shared base, and the base lookup found none", source=source)
    if len(candidates) == 1:
        verify_record(rec, candidates[0].hash)  # the precise error: another base, or damaged
        return candidates[0]
    for b in candidates:
        if record_matches(rec, b.hash):
            return b
    raise NDFChecksumError(
        f"the record checks with none of the {len(candidates)} candidate bases "
        f"({', '.join(b.hash.hex() for b in candidates)}): it is damaged, or needs another base",
        source=source,
        offset=len(rec.body),
    )


def record_label(blob: bytes, base: BaseArg = None, source: str = "<bytes>") -> int | None:
    """The label a file stores, with its integrity checked, without decoding the image.

    A version-1 file is checked by its own CRC-32; a compact record by its CRC with the base
    (``base`` or a lookup callable, as for :func:`read_field`), which is cheap: no entropy
    decoding happens.

    Raises:
        NDFError: the file is damaged, or a compact record was given no base or the wrong one.
    """
    if not is_compact(blob):
        return fmt.parse(blob, source).label
    rec = parse_record(blob, source)
    _compact_base(rec, _as_base(base), source)
    return rec.label


def read_fields(blobs: Sequence[bytes], base: BaseArg = None, sources: Sequence[str] | None = None) -> list[DecodedField]:
    """:func:`read_field` for many files; compact records of one base and size are decoded together.

    A learned base's entropy model runs once per group of records (batched networks, one
    stream per record), which is much faster than one call per record.
    """
    base = _as_base(base)
    sources = list(sources) if sources is not None else [f"<item {i}>" for i in range(len(blobs))]
    if len(sources) != len(blobs):
        raise ValueError("sources must have one entry per blob")
    out: list[DecodedField | None] = [None] * len(blobs)
    groups: dict[tuple, list[tuple[int, object, SharedBase]]] = {}
    for i, (blob, source) in enumerate(zip(blobs, sources)):
        if not is_compact(blob):
            out[i] = read_field(blob, base, source)
            continue
        rec = parse_record(blob, source)
        b = _compact_base(rec, base, source)
        size = rec.size or (b.arch.height, b.arch.width)
        groups.setdefault((id(b), size), []).append((i, rec, b))
    for (_, size), members in groups.items():
        b = members[0][2]
        if size != (b.arch.height, b.arch.width) and not getattr(b.arch, "any_size", True):
            raise NDFFormatError(f"{b.arch.name} records have their base's size ({b.arch.height}x{b.arch.width}), not {size[0]}x{size[1]}",
                                 source=members[0][1].source, offset=members[0][1].flags_offset + 1)
        try:
            arch = b.arch_for(*size)
        except ValueError as exc:
            raise NDFFormatError(str(exc), source=members[0][1].source, offset=members[0][1].flags_offset + 1) from None
        for _, rec, _ in members:
            if rec.level >= arch.levels:
                raise NDFFormatError(f"rate level {rec.level} is not one of the base's {arch.levels} levels", source=rec.source, offset=rec.flags_offset)
        if arch.symbol_count() > fmt.LIMITS["max_symbols"]:
            raise fmt.NDFLimitError(
                f"a {size[0]}x{size[1]} record declares {arch.symbol_count()} symbols, over max_symbols", source=members[0][1].source
            )
        latents = arch.decode_streams(
            b.weights_on("cpu"), [rec.level for _, rec, _ in members], [rec.payload for _, rec, _ in members], [rec.source for _, rec, _ in members]
        )
        for j, (i, rec, _) in enumerate(members):
            out[i] = DecodedField(arch, {k: v[j] for k, v in latents.items()}, None, b, rec.label, rec.source)
    return out  # type: ignore[return-value]


def resolve_size(size: Size, height: int, width: int) -> tuple[int, int]:
    """``None`` -> the original size; ``int`` -> square; ``(h, w)`` as given. Validated."""
    if size is None:
        h, w = height, width
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, (int, np.integer)) for v in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size must be None, an int or an (height, width) pair of ints, got {size!r}")
    if not (1 <= h <= fmt.LIMITS["max_side"] * 4 and 1 <= w <= fmt.LIMITS["max_side"] * 4):
        raise ValueError(f"output size {h}x{w} is outside 1..{fmt.LIMITS['max_side'] * 4}")
    return h, w


def _supersample(arch: FieldArch, height: int, width: int) -> int:
    if getattr(arch, "resamples", False):
        return 1  # the architecture filters its own features to the output size
    return min(MAX_SUPERSAMPLE, max(1, math.ceil(arch.height / height), math.ceil(arch.width / width)))


def _chunks(fields: Sequence[DecodedField], idx: list[int], height: int, width: int) -> list[list[int]]:
    """Split one render group so no forward pass exceeds ``LIMITS['max_render_values']``.

    Raises:
        NDFLimitError: ONE image of the group alone exceeds it (its header declares a field
            too expensive to render at this size).
    """
    limit = fmt.LIMITS["max_render_values"]
    per_image = fields[idx[0]].arch.peak_values(height, width)
    if per_image > limit:
        raise fmt.NDFLimitError(
            f"rendering at {height}x{width} field samples needs a {per_image}-element intermediate tensor, "
            f"over max_render_values={limit}; decode at a smaller size",
            source=", ".join(sorted({fields[i].source for i in idx})),
        )
    step = max(1, limit // max(1, per_image))
    return [idx[i : i + step] for i in range(0, len(idx), step)]


def render_fields(
    fields: Sequence[DecodedField], size: Size = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Render decoded fields to a ``B x C x H x W`` float tensor in [0, 1] on ``device``.

    Same-shaped fields (one dataset) are rendered in a single forward pass.

    Raises:
        ValueError: an empty list, mixed channel counts, no common size, or an output larger
            than ``LIMITS['max_decode_pixels']``.
        NDFLimitError: one field is too expensive to render at this size
            (``LIMITS['max_render_values']``); larger batches are rendered in chunks instead.
        NDFFormatError: a field renders non-finite values.
    """
    if not fields:
        raise ValueError("nothing to render: the list of fields is empty")
    if size is None and len({(f.arch.height, f.arch.width) for f in fields}) > 1:
        raise ValueError("fields of different original sizes need an explicit size= to be batched")
    if len({f.arch.channels for f in fields}) > 1:
        raise ValueError("fields with different channel counts can not be stacked in one batch")
    h, w = resolve_size(size, fields[0].arch.height, fields[0].arch.width)
    f_max = max(_supersample(f.arch, h, w) for f in fields)
    if len(fields) * h * w * f_max * f_max > fmt.LIMITS["max_decode_pixels"]:
        raise ValueError(
            f"decoding {len(fields)} images at {h}x{w} (x{f_max}^2 supersampling) exceeds "
            f"max_decode_pixels={fmt.LIMITS['max_decode_pixels']}; decode in smaller batches"
        )
    device = torch.device(device)
    groups: dict[tuple, list[int]] = {}
    for i, f in enumerate(fields):
        groups.setdefault(f.group_key, []).append(i)
    out = torch.empty((len(fields), fields[0].arch.channels, h, w), device=device)
    with torch.inference_mode():
        for group in groups.values():
            ss = _supersample(fields[group[0]].arch, h, w)
            for idx in _chunks(fields, group, h * ss, w * ss):
                out[idx] = _render_group([fields[i] for i in idx], h, w, ss, device)
    return out


def _render_group(fields: Sequence[DecodedField], h: int, w: int, ss: int, device: torch.device) -> torch.Tensor:
    """One forward pass for same-shaped fields, box-filtered by ``ss`` and clamped."""
    first = fields[0]
    arch = first.arch
    params = {k: torch.stack([f.latents[k] for f in fields]).to(device) for k in first.latents}
    if first.base is not None:
        params.update(first.base.weights_on(device))
    else:
        params.update({k: torch.stack([f.weights[k] for f in fields]).to(device) for k in first.weights})
    img = arch.render(params, h * ss, w * ss)
    if ss > 1:
        img = F.avg_pool2d(img, ss)
    if not bool(torch.isfinite(img).all()):
        bad = [f.source for f, ok in zip(fields, torch.isfinite(img).flatten(1).all(1).tolist()) if not ok]
        raise NDFFormatError("the field renders non-finite values (hostile or corrupted weights)", source=", ".join(bad))
    return img.clamp_(0.0, 1.0)


def decode(blob: bytes, size: Size = None, base: SharedBase | None = None, device: str | torch.device = "cpu", source: str = "<bytes>") -> torch.Tensor:
    """Decode one ``.ndf`` to a ``C x H x W`` float32 tensor in [0, 1] at any size.

    Args:
        blob: the file's bytes.
        size: ``None`` (original size), an int (square) or ``(height, width)``.
        base: the shared base, required for records (a :class:`SharedBase`, a path or a zoo name).
        device: where to render.
        source: name used in error messages.
    """
    return render_fields([read_field(blob, base, source)], size, device)[0]


def decode_batch(
    blobs: Iterable[bytes], size: Size = None, base: SharedBase | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Decode many ``.ndf`` files in one batched forward pass to ``B x C x H x W``."""
    return render_fields(read_fields(list(blobs), base), size, device)
