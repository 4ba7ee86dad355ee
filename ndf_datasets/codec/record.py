"""The compact record: 6-7 bytes of container around a learned codec's stream (``docs/FORMAT.md``).

Records of a learned base (``hyper-field``, ``pixel-context``) carry only what the base does
not fix. The layout is declared once in :data:`RECORD_FIELDS` (like the container's header
table) and every byte is checked:

    byte 0        tag: 0xC3 (compact record, version 3; versions 1 and 2, 0xC1 and 0xC2, are still read)
    byte 1        bits 0-5 rate level, bit 6 a label follows, bit 7 an explicit size follows
    varint        label (zigzag)                     if bit 6
    varint x 2    height, width                       if bit 7 (otherwise the base's size)
    ...           the entropy-coded stream
    4 bytes       CRC-32 of (the base's full 8-byte hash + every byte above), little-endian

The record does not name its base: the CRC, which covers the base's hash, is what ties the
two together, so a record decoded with any other base fails its check (an error, never wrong
pixels) and a reader that has several candidate bases finds the right one by trying the CRC
(:func:`record_matches`). Versions 1 and 2 had a base-tag byte after the tag (the first byte of
the base's hash), and version 1 another stream termination (:mod:`~ndf_datasets.codec.gaussian`);
:func:`parse_record` reads all three and hands the decoder the stream in the current layout.
The integrity of a record can therefore be checked only together with a base.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import NDFBaseError, NDFChecksumError, NDFFormatError, NDFLimitError, NDFVersionError
from .format import LIMITS, _read_uvarint, _unzigzag, _uvarint, _zigzag
from .gaussian import stream_from_v1

__all__ = [
    "RECORD_TAG",
    "RECORD_FIELDS",
    "CompactRecord",
    "is_compact",
    "write_record",
    "parse_record",
    "record_matches",
    "verify_record",
    "record_table_markdown",
]

RECORD_TAG = 0xC3
RECORD_TAG_V2 = 0xC2  # read, never written: a base-tag byte after the tag
RECORD_TAG_V1 = 0xC1  # read, never written: a base-tag byte, and the stream in the layout of stream_from_v1
_READ_TAGS = (RECORD_TAG, RECORD_TAG_V2, RECORD_TAG_V1)
_TAG_FAMILY = 0xC0  # 0xC0..0xCF: compact records, low nibble = version
FLAG_LABEL = 0x40
FLAG_SIZE = 0x80
LEVEL_MASK = 0x3F
MIN_BYTES = 2 + 4  # tag, level byte, CRC (versions 1 and 2: one more, the base tag)

#: The compact record, in file order: (name, size, meaning). ``record_table_markdown`` renders it.
RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("tag", "uint8", "0xC3: compact record, version 3 (0xC1, 0xC2: versions 1 and 2, still read; 0xC4..0xCF: later versions, refused)"),
    ("level_flags", "uint8", "bits 0-5: rate level (< the base's level count); bit 6: label follows; bit 7: size follows"),
    ("label", "zigzag varint", "the class label, if bit 6"),
    ("height, width", "2 varints", "image size, if bit 7 (1..max_side; otherwise the base's size)"),
    ("stream", "bytes", "the architecture's entropy-coded symbols (to the CRC; zero bytes implied after it)"),
    ("crc32", "uint32", "CRC-32 of the base's 8-byte hash followed by every byte above"),
)


@dataclass
class CompactRecord:
    """A parsed compact record (not yet checked against a base: see :func:`verify_record`)."""

    base_tag: int | None  # versions 1 and 2: the first byte of the base's hash; version 3: None
    level: int
    label: int | None
    size: tuple[int, int] | None
    payload: bytes  # the stream in the current layout (a version-1 stream is converted)
    crc: int
    body: bytes  # every byte before the CRC
    source: str = "<bytes>"

    @property
    def nbytes(self) -> int:
        return len(self.body) + 4

    @property
    def flags_offset(self) -> int:
        """The byte offset of the level byte (for error messages)."""
        return 1 if self.base_tag is None else 2


def is_compact(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a compact record (any version)."""
    return len(data) > 0 and data[0] & 0xF0 == _TAG_FAMILY


def write_record(base_hash: bytes, level: int, payload: bytes, label: int | None = None, size: tuple[int, int] | None = None) -> bytes:
    """Serialise a compact record.

    Args:
        base_hash: the base's 8-byte hash (it is not stored: the CRC covers it).
        level: rate level, ``0..63``.
        payload: the entropy-coded stream.
        label: class label, or ``None``.
        size: ``(height, width)`` when it differs from the base's size.

    Raises:
        ValueError: a value out of range.
    """
    if len(base_hash) != 8:
        raise ValueError("base hash must be 8 bytes")
    if not 0 <= int(level) <= LEVEL_MASK:
        raise ValueError(f"rate level {level} is outside 0..{LEVEL_MASK}")
    flags = int(level)
    parts = [b""]
    if label is not None:
        if not -(2**31) <= int(label) < 2**31:
            raise ValueError(f"label {label} does not fit in 32 bits")
        flags |= FLAG_LABEL
        parts.append(_uvarint(_zigzag(int(label))))
    if size is not None:
        h, w = (int(v) for v in size)
        if not (1 <= h <= LIMITS["max_side"] and 1 <= w <= LIMITS["max_side"]) or h * w > LIMITS["max_pixels"]:
            raise ValueError(f"image size {h}x{w} is outside the format's limits")
        flags |= FLAG_SIZE
        parts.append(_uvarint(h) + _uvarint(w))
    parts[0] = bytes((RECORD_TAG, flags))
    body = b"".join(parts) + bytes(payload)
    if len(body) + 4 > LIMITS["max_file_bytes"]:
        raise ValueError("record exceeds max_file_bytes")
    return body + struct.pack("<I", zlib.crc32(body, zlib.crc32(base_hash)))


def parse_record(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> CompactRecord:
    """Parse a compact record's fields (checking lengths and limits, not yet the CRC).

    Raises:
        NDFVersionError: a later compact-record version.
        NDFFormatError, NDFLimitError, NDFChecksumError: malformed, over the limits, truncated.
    """
    data = bytes(data)
    n = len(data)
    if n > LIMITS["max_file_bytes"]:
        raise NDFLimitError(f"record of {n} bytes exceeds max_file_bytes", source=source)
    if not is_compact(data):
        raise NDFFormatError(f"not a compact NDF record: first byte {data[:1]!r}", source=source, offset=0)
    if data[0] not in _READ_TAGS:
        raise NDFVersionError(
            f"compact record version {data[0] & 0x0F} is not supported (this library reads versions 1 to 3); upgrade ndf-datasets",
            source=source,
            offset=0,
        )
    tagged = data[0] != RECORD_TAG  # versions 1 and 2 store a base tag after the tag
    if n < MIN_BYTES + tagged:
        raise NDFChecksumError(f"truncated: {n} bytes is shorter than the smallest compact record", source=source)
    end = n - 4
    pos = 2 + tagged
    flags = data[pos - 1]
    label = size = None
    if flags & FLAG_LABEL:
        raw, pos = _read_uvarint(data[:end], pos, source, "label")
        label = _unzigzag(raw)
        if not -(2**31) <= label < 2**31:
            raise NDFFormatError(f"label {label} does not fit in 32 bits", source=source, offset=2 + tagged)
    if flags & FLAG_SIZE:
        at = pos
        h, pos = _read_uvarint(data[:end], pos, source, "height")
        w, pos = _read_uvarint(data[:end], pos, source, "width")
        if not (1 <= h <= LIMITS["max_side"] and 1 <= w <= LIMITS["max_side"]):
            raise NDFLimitError(f"image size {h}x{w} is outside 1..max_side={LIMITS['max_side']}", source=source, offset=at)
        if h * w > LIMITS["max_pixels"]:
            raise NDFLimitError(f"image of {h}x{w} exceeds max_pixels", source=source, offset=at)
        size = (h, w)
    crc = struct.unpack_from("<I", data, end)[0]
    payload = stream_from_v1(data[pos:end]) if data[0] == RECORD_TAG_V1 else data[pos:end]
    return CompactRecord(data[1] if tagged else None, flags & LEVEL_MASK, label, size, payload, crc, data[:end], source)


def record_matches(rec: CompactRecord, base_hash: bytes) -> bool:
    """Whether ``rec`` checks with the base of ``base_hash``: its base tag, if it has one, and its CRC.

    A damaged record matches no base; a record matches another base than its own with
    probability ``2**-32`` (version 3) or ``2**-40`` (versions 1 and 2, which also store a tag).
    """
    if rec.base_tag is not None and rec.base_tag != base_hash[0]:
        return False
    return zlib.crc32(rec.body, zlib.crc32(base_hash)) == rec.crc


def verify_record(rec: CompactRecord, base_hash: bytes) -> None:
    """Check a parsed record against the base it is decoded with.

    Raises:
        NDFBaseError: a version-1 or -2 record names another base (its base tag differs).
        NDFChecksumError: the CRC fails: the record is damaged, or was encoded with another
            base (version 3 records do not name theirs; older ones: whose hash starts with the
            same byte).
    """
    if rec.base_tag is not None and rec.base_tag != base_hash[0]:
        raise NDFBaseError(
            f"record was encoded with a base whose hash starts with {rec.base_tag:02x}, but the given base is "
            f"{base_hash.hex()}",
            source=rec.source,
            offset=1,
        )
    actual = zlib.crc32(rec.body, zlib.crc32(base_hash))
    if actual != rec.crc:
        raise NDFChecksumError(
            f"CRC-32 mismatch (stored {rec.crc:08x}, computed {actual:08x}): the record is corrupted or truncated, "
            f"or was encoded with another base than {base_hash.hex()}",
            source=rec.source,
            offset=len(rec.body),
        )


def record_table_markdown() -> str:
    """The compact-record table of ``docs/FORMAT.md``, generated from :data:`RECORD_FIELDS`."""
    rows = ["| field | type | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {doc} |" for name, kind, doc in RECORD_FIELDS]
    return "\n".join(rows)
