"""The random-access index of a tar shard: where each record lies, so one range read fetches it.

``ndf convert`` writes one index per tar shard, ``OUT/stats/<shard>.ndfidx``, next to the
shard's statistics. It is data in a declared binary layout (little-endian), never code:

=======  =========  ===========================================================
offset   size       field
=======  =========  ===========================================================
0        8          magic ``b"NDFINDEX"``
8        2          version (1)
10       2          flags: bit 0 set = the shard is gzip with restart points
12       4          ``n``: samples
16       4          ``g``: restart points (groups; 0 for a plain ``.tar``)
20       8          the shard's size in bytes
28       32         the shard's SHA-256
60       4          CRC-32 of bytes 0..59 and of the body
64       8 n        per sample: ``u32`` offset, ``u32`` length of its ``.ndf`` member's data
64+8n    16 g       per group: ``u64`` tar offset, ``u64`` file offset where it starts
=======  =========  ===========================================================

In a plain ``.tar`` the offset is where the record lies in the file. A ``.tar.gz`` shard is
one gzip stream whose deflate data is *fully flushed* at sample boundaries about every
:data:`~ndf_datasets.data.shards.GROUP_BYTES` of tar (:func:`~ndf_datasets.data.shards.shard_layout`):
each group then decompresses on its own, so a record costs one range read of its group
(a few tens of KiB) and no decompression of what comes before it. There the offset is the
record's place in the decompressed tar. The file is exactly ``64 + 8 n + 16 g`` bytes (checked
before anything is read from it), its CRC covers all of it, and the shard it describes is
named by size and hash; a record read through it is then checked by its own CRC when decoded.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..codec import NDFFormatError

__all__ = ["ShardIndex", "INDEX_SUFFIX", "MAGIC"]

MAGIC = b"NDFINDEX"
VERSION = 1
#: the index of ``<shard>`` is ``stats/<shard without suffix>.ndfidx``
INDEX_SUFFIX = ".ndfidx"
_HEAD = struct.Struct("<8sHHIIQ32sI")
_FLAG_GZIP = 1
#: the largest index read (a shard of 16 M samples)
MAX_INDEX_BYTES = 64 + 8 * (1 << 24) + 16 * (1 << 20)


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample's record lies in one tar shard (see the module docstring).

    Attributes:
        offsets, lengths: per sample, the record's offset (in the file for a plain tar, in
            the decompressed tar for gzip) and length.
        groups: ``(tar offset, file offset)`` where each independently decompressible part
            of a gzip shard starts (empty for a plain tar).
        shard_bytes, sha256: the size and SHA-256 of the shard this index describes.
    """

    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    groups: tuple[tuple[int, int], ...]
    shard_bytes: int
    sha256: bytes

    @property
    def compressed(self) -> bool:
        """Whether the shard is gzip (records are reached through their group)."""
        return bool(self.groups)

    def __len__(self) -> int:
        return len(self.offsets)

    def to_bytes(self) -> bytes:
        """The index file's bytes (deterministic)."""
        n, g = len(self.offsets), len(self.groups)
        if any(not 0 <= v < 1 << 32 for v in (*self.offsets, *self.lengths)) or n >= 1 << 32:
            raise ValueError("a shard index holds 32-bit record offsets; this shard is larger than 4 GiB")
        body = struct.pack(f"<{2 * n}I", *(v for pair in zip(self.offsets, self.lengths) for v in pair))
        body += struct.pack(f"<{2 * g}Q", *(v for pair in self.groups for v in pair))
        flags = _FLAG_GZIP if self.groups else 0
        head = _HEAD.pack(MAGIC, VERSION, flags, n, g, self.shard_bytes, self.sha256, 0)[:60]
        return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body

    @classmethod
    def parse(cls, data: bytes, source: str) -> ShardIndex:
        """Read an index file, checking its size, CRC and fields before using any of it.

        Raises:
            NDFFormatError: not an index, a damaged one, or one of another version (names ``source``).
        """
        if len(data) < _HEAD.size or data[:8] != MAGIC:
            raise NDFFormatError("not a shard index (bad magic or shorter than its 64-byte header)", source=source)
        magic, version, flags, n, g, size, sha, crc = _HEAD.unpack_from(data)
        if version != VERSION:
            raise NDFFormatError(f"shard index version {version} is not supported (this reader: {VERSION})", source=source)
        expected = _HEAD.size + 8 * n + 16 * g
        if len(data) != expected:
            raise NDFFormatError(f"a shard index of {n} samples and {g} groups has {expected} bytes, this one {len(data)}",
                                 source=source)  # fmt: skip
        if zlib.crc32(data[_HEAD.size :], zlib.crc32(data[:60])) != crc:
            raise NDFFormatError("shard index CRC-32 mismatch (the file is damaged)", source=source)
        if bool(flags & _FLAG_GZIP) != (g > 0) or flags & ~_FLAG_GZIP:
            raise NDFFormatError(f"shard index flags {flags:#x} do not match its {g} groups", source=source)
        pairs = struct.unpack_from(f"<{2 * n}I", data, _HEAD.size)
        groups = struct.unpack_from(f"<{2 * g}Q", data, _HEAD.size + 8 * n)
        index = cls(pairs[0::2], pairs[1::2], tuple(zip(groups[0::2], groups[1::2])), size, sha)
        index._check(source)
        return index

    def _check(self, source: str) -> None:
        starts = [u for u, _ in self.groups]
        files = [c for _, c in self.groups]
        if starts != sorted(starts) or files != sorted(files) or any(c > self.shard_bytes for c in files):
            raise NDFFormatError("shard index groups are out of order or past the end of the shard", source=source)
        if not self.groups and any(o + n > self.shard_bytes for o, n in zip(self.offsets, self.lengths)):
            raise NDFFormatError("shard index points past the end of the shard", source=source)

    def locate(self, i: int) -> tuple[int, int, int, int]:
        """``(file start, file end, offset of the record in what that range holds, bytes it holds)`` of sample ``i``.

        For a plain tar the range is the record itself (offset 0); for gzip it is the record's
        group, compressed, the offset is the record's place in the decompressed group, and the
        last number is how far the group's records reach once decompressed (the most bytes
        worth inflating: a bound against decompression bombs).
        """
        off = self.offsets[i]
        if not self.groups:
            return off, off + self.lengths[i], 0, self.lengths[i]
        lo, hi = 0, len(self.groups) - 1
        while lo < hi:  # the last group starting at or before off
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.groups[mid][0] <= off else (lo, mid - 1)
        u0, c0 = self.groups[lo]
        if lo + 1 < len(self.groups):
            end, reach = self.groups[lo + 1][1], self.groups[lo + 1][0] - u0
        else:
            end, reach = self.shard_bytes - 8, self.offsets[-1] + self.lengths[-1] - u0  # before the gzip trailer
        return c0, end, off - u0, reach

    def record(self, i: int, fetch: Callable[[int, int], bytes], source: str) -> bytes:
        """Sample ``i``'s record, reading one range through ``fetch(start, end)``.

        A gzip group is decompressed as raw deflate (it starts after a full flush) only as far
        as the record's end.

        Raises:
            NDFFormatError: the range is short or does not decompress (a damaged shard or a
                shard other than the one indexed).
        """
        start, end, inner, _ = self.locate(i)
        data = fetch(start, end)
        if len(data) != end - start:
            raise NDFFormatError(f"read {len(data)} of bytes {start}..{end} (truncated shard?)", source=source)
        if self.groups:
            data = inflate_group(data, inner + self.lengths[i], source)
        blob = data[inner : inner + self.lengths[i]]
        if len(blob) != self.lengths[i]:
            raise NDFFormatError(f"record {i} ends past its group (bytes {start}..{end}): not the indexed shard?",
                                 source=source)  # fmt: skip
        return blob


def inflate_group(data: bytes, need: int, source: str) -> bytes:
    """The first ``need`` decompressed bytes of a fully flushed deflate group (raw deflate).

    Raises:
        NDFFormatError: the bytes are not deflate data.
    """
    try:
        return zlib.decompressobj(-15).decompress(data, need)
    except zlib.error as exc:
        raise NDFFormatError(f"a gzip group of the shard does not decompress ({exc})", source=source) from None


def digest(data: bytes) -> bytes:
    """The SHA-256 an index names its shard by."""
    return hashlib.sha256(data).digest()
