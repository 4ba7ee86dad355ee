"""The ``.ndf`` container: a declared header, optional sections, a payload and a CRC-32.

This module imports only the standard library. It knows nothing about neural fields: it
reads and writes the byte layout that ``docs/FORMAT.md`` specifies, checks every declared
length against :data:`LIMITS` *before* anything is allocated, and never executes data.

Layout (all integers little-endian)::

    fixed header   (HEADER table below, 16 bytes)
    varint         config_len, meta_len, payload_len
    base_hash      8 bytes            if kind == RECORD
    label          zigzag varint      if flags & FLAG_LABEL
    config         config_len bytes   (architecture parameters, a list of varints)
    metadata       meta_len bytes     (UTF-8 JSON object)
    payload        payload_len bytes  (entropy-coded tensors, see ``coding.py``)
    crc32          uint32 over every byte before it

The header is *declared* once as a table of :class:`Field`; :func:`pack_header`,
:func:`parse`, :func:`pretty` and :func:`header_table_markdown` (which generates the table in
``docs/FORMAT.md``) all walk that same table, so code and documentation cannot drift.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from .errors import NDFChecksumError, NDFFormatError, NDFLimitError, NDFVersionError  # noqa: F401 (re-exported)

__all__ = [
    "MAGIC",
    "VERSION",
    "KIND_FIELD",
    "KIND_RECORD",
    "KIND_BASE",
    "KIND_NAMES",
    "FLAG_LABEL",
    "COLORSPACES",
    "LIMITS",
    "HEADER",
    "Field",
    "Container",
    "write",
    "parse",
    "pretty",
    "header_table_markdown",
    "encode_varints",
    "decode_varints",
]

MAGIC = b"NDF"
VERSION = 1

KIND_FIELD = 1  # standalone field: every tensor is in the file
KIND_RECORD = 2  # per-image latents for a shared base referenced by content hash
KIND_BASE = 3  # the shared base itself (a dataset's network and quantisation tables)
KIND_NAMES = {KIND_FIELD: "field", KIND_RECORD: "record", KIND_BASE: "base"}

FLAG_LABEL = 0x01
_KNOWN_FLAGS = FLAG_LABEL

COLORSPACES = {0: "gray", 1: "rgb", 2: "rgba"}
CHANNELS_OF = {"gray": 1, "rgb": 3, "rgba": 4}

#: Hard limits checked before any allocation. A file that declares more is refused with
#: :class:`NDFLimitError`; they bound the memory a hostile file can make a reader take.
LIMITS: dict[str, int] = {
    "max_file_bytes": 256 * 1024 * 1024,
    "max_config_bytes": 1024,
    "max_config_values": 64,
    "max_meta_bytes": 64 * 1024,
    "max_payload_bytes": 255 * 1024 * 1024,
    "max_side": 16384,  # original height/width of the image
    "max_pixels": 64 * 1024 * 1024,  # original height*width
    "max_symbols": 32 * 1024 * 1024,  # quantised values in one payload
    "max_decode_pixels": 256 * 1024 * 1024,  # output B*H*W of one decode call
    "max_render_values": 1024 * 1024 * 1024,  # largest intermediate of rendering ONE image
}

BASE_HASH_BYTES = 8
CRC_BYTES = 4


@dataclass(frozen=True)
class Field:
    """One fixed header field: its name, ``struct`` format, allowed range and meaning."""

    name: str
    fmt: str
    lo: int
    hi: int
    doc: str


#: The fixed header, in file order. Values are range-checked on write and on read.
HEADER: tuple[Field, ...] = (
    Field("magic", "3s", 0, 0, 'bytes `NDF` (0x4E 0x44 0x46)'),
    Field("version", "B", 1, 255, "format version; this spec is version 1"),
    Field("kind", "B", 1, 3, "1 = standalone field, 2 = record for a shared base, 3 = shared base"),
    Field("arch", "B", 1, 255, "registered architecture id (stable, never reused)"),
    Field("flags", "B", 0, _KNOWN_FLAGS, "bit 0: a label follows; other bits must be 0"),
    Field("colorspace", "B", 0, 2, "0 = gray (1 channel), 1 = RGB (3), 2 = RGBA (4)"),
    Field("height", "H", 1, 16384, "original image height in pixels"),
    Field("width", "H", 1, 16384, "original image width in pixels"),
    Field("fit_psnr_cdb", "H", 0, 65535, "PSNR of the stored field vs the original, in 0.01 dB; 0 = unknown"),
    Field("reserved", "H", 0, 0, "must be 0"),
)
_HEADER_STRUCT = struct.Struct("<" + "".join(f.fmt for f in HEADER))
HEADER_BYTES = _HEADER_STRUCT.size


@dataclass
class Container:
    """The parsed (or to-be-written) content of one ``.ndf`` file.

    ``config`` is the architecture's parameter list, ``payload`` the entropy-coded tensor
    bytes; interpreting both is the job of :mod:`ndf_datasets.codec.fields` and
    :mod:`ndf_datasets.codec.coding`.
    """

    kind: int
    arch: int
    colorspace: int
    height: int
    width: int
    config: tuple[int, ...] = ()
    payload: bytes = b""
    fit_psnr: float | None = None
    label: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    base_hash: bytes | None = None
    version: int = VERSION
    source: str = "<bytes>"
    nbytes: int = 0

    @property
    def channels(self) -> int:
        return CHANNELS_OF[COLORSPACES[self.colorspace]]


# ----------------------------------------------------------------------------- varints


def _uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint must be non-negative, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(data: bytes | memoryview, pos: int, source: str, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise NDFFormatError(f"truncated varint for {what}", source=source, offset=start)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 56:
            raise NDFFormatError(f"varint for {what} is longer than 9 bytes", source=source, offset=start)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def encode_varints(values: tuple[int, ...] | list[int]) -> bytes:
    """Encode signed integers as zigzag LEB128 varints (the config block's encoding)."""
    return b"".join(_uvarint(_zigzag(int(v))) for v in values)


def decode_varints(data: bytes, source: str = "<bytes>", offset: int = 0) -> tuple[int, ...]:
    """Decode a block of zigzag varints written by :func:`encode_varints`."""
    out = []
    pos = 0
    while pos < len(data):
        if len(out) >= LIMITS["max_config_values"]:
            raise NDFLimitError(
                f"config holds more than {LIMITS['max_config_values']} values", source=source, offset=offset + pos
            )
        value, pos = _read_uvarint(data, pos, source, "config value")
        out.append(_unzigzag(value))
    return tuple(out)


# ----------------------------------------------------------------------------- write


def _check_range(f: Field, value: int) -> None:
    if not f.lo <= value <= f.hi:
        raise ValueError(f"header field {f.name}={value} is outside [{f.lo}, {f.hi}]")


def write(c: Container) -> bytes:
    """Serialise a :class:`Container` to ``.ndf`` bytes (header, sections, payload, CRC-32).

    Raises:
        ValueError: a value does not fit its declared field or exceeds :data:`LIMITS`.
    """
    if c.kind not in KIND_NAMES:
        raise ValueError(f"unknown kind {c.kind}")
    if (c.kind == KIND_RECORD) != (c.base_hash is not None):
        raise ValueError("a base hash is required for records and only for records")
    if c.base_hash is not None and len(c.base_hash) != BASE_HASH_BYTES:
        raise ValueError(f"base hash must be {BASE_HASH_BYTES} bytes")
    if c.height * c.width > LIMITS["max_pixels"]:
        raise ValueError(f"image of {c.height}x{c.width} exceeds max_pixels={LIMITS['max_pixels']}")
    if c.label is not None and not -(2**31) <= int(c.label) < 2**31:
        raise ValueError(f"label {c.label} does not fit in 32 bits")
    psnr_cdb = 0 if c.fit_psnr is None else int(round(min(max(c.fit_psnr, 0.01), 655.35) * 100))
    flags = FLAG_LABEL if c.label is not None else 0
    values = {
        "magic": MAGIC,
        "version": c.version,
        "kind": c.kind,
        "arch": c.arch,
        "flags": flags,
        "colorspace": c.colorspace,
        "height": c.height,
        "width": c.width,
        "fit_psnr_cdb": psnr_cdb,
        "reserved": 0,
    }
    for f in HEADER:
        if f.name != "magic":
            _check_range(f, values[f.name])
    config = encode_varints(c.config)
    meta = b""
    if c.metadata:
        meta = json.dumps(c.metadata, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("utf-8")
    for name, blob, limit in (
        ("config", config, "max_config_bytes"),
        ("metadata", meta, "max_meta_bytes"),
        ("payload", c.payload, "max_payload_bytes"),
    ):
        if len(blob) > LIMITS[limit]:
            raise ValueError(f"{name} of {len(blob)} bytes exceeds {limit}={LIMITS[limit]}")
    parts = [
        _HEADER_STRUCT.pack(*(values[f.name] for f in HEADER)),
        _uvarint(len(config)),
        _uvarint(len(meta)),
        _uvarint(len(c.payload)),
    ]
    if c.base_hash is not None:
        parts.append(c.base_hash)
    if c.label is not None:
        parts.append(_uvarint(_zigzag(int(c.label))))
    parts += [config, meta, bytes(c.payload)]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


# ----------------------------------------------------------------------------- read


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in NDF metadata")


def _looks_like(data: bytes) -> str:
    """Name a few common non-NDF formats, so the error says what the file really is."""
    if data[:1] == b"\x80" and len(data) > 1 and data[1] <= 5:
        return " (it looks like a Python pickle; NDF never unpickles data)"
    if data[:4] == b"PK\x03\x04":
        return " (it looks like a zip archive, e.g. a torch.save checkpoint; NDF never loads those)"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return " (it is a PNG image)"
    if data[:3] == b"\xff\xd8\xff":
        return " (it is a JPEG image)"
    return ""


def parse(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> Container:
    """Parse and validate ``.ndf`` bytes. Never allocates more than the declared, limited sizes.

    Args:
        data: the whole file.
        source: a name for error messages (path or URL).

    Raises:
        NDFFormatError: not an NDF file, or malformed.
        NDFVersionError: a newer format version.
        NDFChecksumError: corrupted or truncated.
        NDFLimitError: a declared size exceeds :data:`LIMITS`.
    """
    data = bytes(data)
    n = len(data)
    if n > LIMITS["max_file_bytes"]:
        raise NDFLimitError(f"file of {n} bytes exceeds max_file_bytes={LIMITS['max_file_bytes']}", source=source)
    if n < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NDFFormatError(f"not an NDF file: bad magic bytes {data[:4]!r}{_looks_like(data)}", source=source, offset=0)
    if n < HEADER_BYTES + 3 + CRC_BYTES:
        raise NDFChecksumError(f"truncated: {n} bytes is shorter than the smallest NDF file", source=source)
    version = data[3]
    if version != VERSION:
        raise NDFVersionError(
            f"format version {version} is not supported (this library reads version {VERSION}); "
            "upgrade ndf-datasets",
            source=source,
            offset=3,
        )
    stored = struct.unpack_from("<I", data, n - CRC_BYTES)[0]
    actual = zlib.crc32(memoryview(data)[: n - CRC_BYTES])
    if stored != actual:
        raise NDFChecksumError(
            f"CRC-32 mismatch (stored {stored:08x}, computed {actual:08x}): the file is corrupted or truncated",
            source=source,
            offset=n - CRC_BYTES,
        )
    values = dict(zip((f.name for f in HEADER), _HEADER_STRUCT.unpack_from(data, 0)))
    pos = 0
    for f in HEADER:
        if f.name != "magic" and not f.lo <= values[f.name] <= f.hi:
            err = NDFVersionError if f.name in ("kind", "flags") else NDFFormatError
            raise err(f"header field {f.name}={values[f.name]} is outside [{f.lo}, {f.hi}]", source=source, offset=pos)
        pos += struct.calcsize("<" + f.fmt)
    if values["height"] * values["width"] > LIMITS["max_pixels"]:
        raise NDFLimitError(f"image of {values['height']}x{values['width']} exceeds max_pixels", source=source, offset=8)
    end = n - CRC_BYTES
    pos = HEADER_BYTES
    lengths = {}
    for name, limit in (("config", "max_config_bytes"), ("metadata", "max_meta_bytes"), ("payload", "max_payload_bytes")):
        start = pos
        lengths[name], pos = _read_uvarint(data[:end], pos, source, f"{name} length")
        if lengths[name] > LIMITS[limit]:
            raise NDFLimitError(f"{name} length {lengths[name]} exceeds {limit}={LIMITS[limit]}", source=source, offset=start)
    base_hash = None
    if values["kind"] == KIND_RECORD:
        if pos + BASE_HASH_BYTES > end:
            raise NDFFormatError("truncated inside the base hash", source=source, offset=pos)
        base_hash = data[pos : pos + BASE_HASH_BYTES]
        pos += BASE_HASH_BYTES
    label = None
    if values["flags"] & FLAG_LABEL:
        raw, pos = _read_uvarint(data[:end], pos, source, "label")
        label = _unzigzag(raw)
    declared = lengths["config"] + lengths["metadata"] + lengths["payload"]
    if pos + declared != end:
        raise NDFFormatError(
            f"section lengths add up to {pos + declared + CRC_BYTES} bytes but the file has {n}", source=source, offset=pos
        )
    config_at = pos
    config = decode_varints(data[pos : pos + lengths["config"]], source, config_at)
    pos += lengths["config"]
    metadata: dict[str, Any] = {}
    if lengths["metadata"]:
        try:
            metadata = json.loads(data[pos : pos + lengths["metadata"]].decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise NDFFormatError(f"metadata is not valid UTF-8 JSON: {exc}", source=source, offset=pos) from None
        if not isinstance(metadata, dict):
            raise NDFFormatError("metadata must be a JSON object", source=source, offset=pos)
    pos += lengths["metadata"]
    payload = data[pos : pos + lengths["payload"]]
    return Container(
        kind=values["kind"],
        arch=values["arch"],
        colorspace=values["colorspace"],
        height=values["height"],
        width=values["width"],
        config=config,
        payload=payload,
        fit_psnr=values["fit_psnr_cdb"] / 100 if values["fit_psnr_cdb"] else None,
        label=label,
        metadata=metadata,
        base_hash=base_hash,
        version=version,
        source=source,
        nbytes=n,
    )


def pretty(c: Container) -> str:
    """A human-readable dump of a container's header (what ``ndf info`` prints)."""
    lines = [f"{c.source}: {c.nbytes} bytes"]
    shown = {
        "version": c.version,
        "kind": f"{c.kind} ({KIND_NAMES[c.kind]})",
        "arch": c.arch,
        "colorspace": f"{c.colorspace} ({COLORSPACES[c.colorspace]})",
        "height": c.height,
        "width": c.width,
        "fit_psnr_cdb": "unknown" if c.fit_psnr is None else f"{c.fit_psnr:.2f} dB",
    }
    for f in HEADER:
        if f.name in shown:
            lines.append(f"  {f.name:<13} {shown[f.name]}")
    lines.append(f"  config        {list(c.config)}")
    if c.base_hash is not None:
        lines.append(f"  base_hash     {c.base_hash.hex()}")
    if c.label is not None:
        lines.append(f"  label         {c.label}")
    if c.metadata:
        lines.append(f"  metadata      {json.dumps(c.metadata, sort_keys=True)}")
    lines.append(f"  payload       {len(c.payload)} bytes")
    return "\n".join(lines)


def header_table_markdown() -> str:
    """The fixed-header table of ``docs/FORMAT.md``, generated from :data:`HEADER`."""
    rows = ["| offset | field | type | range | meaning |", "|---|---|---|---|---|"]
    offset = 0
    names = {"3s": "3 bytes", "B": "uint8", "H": "uint16"}
    for f in HEADER:
        size = struct.calcsize("<" + f.fmt)
        rng = "-" if f.fmt == "3s" else f"{f.lo}..{f.hi}"
        rows.append(f"| {offset} | `{f.name}` | {names[f.fmt]} | {rng} | {f.doc} |")
        offset += size
    return "\n".join(rows)
