"""A gzip stream that is verified as it is read: every byte's CRC-32, the length, the end of file.

Compressed shards (``<split>-NNNNNN.tar.gz``) are ordinary gzip files that ``tarfile``,
WebDataset and every tar tool read natively. But those readers do not make damage loud:
``tarfile``'s stream mode never checks the gzip trailer (CRC-32 and length of the
uncompressed data), and it stops reading at the tar end-of-archive marker, before the trailer.

:class:`VerifiedGzipStream` inflates the stream itself as the bytes are asked for (the gzip
framing of RFC 1952 is parsed and checked here, the deflate data is inflated by :mod:`zlib`,
the CRC-32 and length are computed over what it gives back), so that

* corrupted deflate data, a CRC-32 or length mismatch in the trailer, trailing bytes that are
  not another gzip member, and an end of file before the trailer all raise
  :class:`~ndf_datasets.codec.errors.NDFShardError` naming the shard, the compressed byte
  range where the damage was found and (through the :class:`~ndf_datasets.data.tarcheck.VerifiedTarStream`
  reading it) the tar member and its offset in the uncompressed tar;
* :meth:`finish`, called by that tar stream when it reaches the end-of-archive marker, reads
  the rest of the file, so the trailer is always checked: every byte of the shard is verified
  (but the gzip header's modification time, extra flags and OS bytes, which change nothing
  that is read); every inflated byte is delivered before the trailer is checked.

Inflation is bounded per call (``read(n)`` produces at most ``n`` bytes, at most
:data:`CHUNK` compressed bytes are read at a time), so a small hostile file can not make one
read allocate a huge buffer.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import IO, Any

from ..codec import NDFShardError

__all__ = ["GZIP_MAGIC", "CHUNK", "FEED", "MAX_TAIL", "PassThrough", "VerifiedGzipStream"]

#: the first two bytes of every gzip member
GZIP_MAGIC = b"\x1f\x8b"
#: compressed bytes read from the underlying stream at a time
CHUNK = 1 << 16
#: compressed bytes given to zlib at a time: damage is located within this many bytes
FEED = 1024
#: uncompressed bytes after the tar end-of-archive marker that :meth:`VerifiedGzipStream.finish`
#: reads and discards (tar pads to 10,240-byte records; more than this is refused)
MAX_TAIL = 1 << 20


class PassThrough:
    """What a reader wrapped around ``self.raw`` offers besides ``read``: ``readable``, ``close``
    (closes ``raw``) and every other attribute of ``raw``."""

    raw: IO[bytes]

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        close = getattr(self.raw, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:
        if name == "raw":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.raw, name)


class VerifiedGzipStream(PassThrough):
    """Read an uncompressed stream out of a gzip stream, verifying it as it goes.

    Args:
        raw: the compressed bytes (anything with ``read(n)``), positioned after ``head``.
        source: the shard's URL or path, for error messages.
        head: bytes already read from ``raw`` (the magic, read to recognise the format).

    Attributes:
        pos: compressed bytes consumed so far.
        out: uncompressed bytes produced so far.
        where: set by the reader on top (a callable returning ``(member, text)`` for the
            current position in the uncompressed data), so errors name the tar member.

    Raises (from :meth:`read` and :meth:`finish`):
        NDFShardError: corrupt deflate data, a trailer mismatch, trailing garbage or a
            truncated file. Raised once; later reads return ``b""``.
    """

    def __init__(self, raw: IO[bytes], source: str, head: bytes = b""):
        self.raw = raw
        self.source = source
        self.head = bytes(head)
        self.pos = 0
        self.out = 0
        self.members = 0
        self.where: Callable[[], tuple[str | None, str]] | None = None
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: the gzip framing is checked here
        self._in_member = False
        self._crc = self._size = 0
        self._pending = b""  # compressed bytes read but not yet given to the decompressor
        self._at = 0  # compressed offset of the first byte of _pending
        self._eof = False  # raw is exhausted
        self._failed = False
        self._error_at: tuple[str, int] | None = None  # damage found, raised by the next read

    # ---- the file protocol

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` uncompressed bytes (all that is left when ``n < 0``); ``b""`` at the end.

        The bytes inflated before damage is found are returned first; the error is raised by
        the next call, so a reader keeps every sample before the damage.
        """
        if self._failed:
            return b""
        if self._error_at is not None:
            self._failed = True
            raise self._error(*self._error_at)
        if n is None or n < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        out = bytearray()
        try:
            while len(out) < n:
                got = self._inflate(n - len(out))
                if got is None:  # the end of the compressed stream, verified
                    break
                out += got
        except _Damage as damage:
            self._error_at = damage.args
            if not out:
                self._failed = True
                raise self._error(*damage.args) from None
        self.out += len(out)
        return bytes(out)

    def finish(self) -> None:
        """Read and verify the rest of the stream (the reader above has all it needs).

        Raises:
            NDFShardError: damage in the rest of the stream, or more than :data:`MAX_TAIL`
                uncompressed bytes left.
        """
        left = 0
        while chunk := self.read(CHUNK):
            left += len(chunk)
            if left > MAX_TAIL:
                self._failed = True
                raise self._error(
                    f"more than {MAX_TAIL} bytes follow the tar end-of-archive marker inside the gzip stream",
                    self.pos,
                )

    # ---- inflating: the gzip framing (RFC 1952) is parsed here, the deflate data by zlib

    def _fill(self, need: int = 1) -> bool:
        """Read until ``_pending`` holds ``need`` bytes; ``False`` when ``raw`` ends first."""
        while len(self._pending) < need:
            if self._eof:
                return False
            chunk, self.head = (self.head, b"") if self.head else (self.raw.read(CHUNK), b"")
            if not chunk:
                self._eof = True
                return False
            if not self._pending:
                self._at = self.pos
            self._pending += chunk
            self.pos += len(chunk)
        return True

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise _Damage(f"the gzip stream is truncated inside its {what}", self.pos)
        data, self._pending = self._pending[:n], self._pending[n:]
        self._at += n
        return data

    def _header(self) -> None:
        """Parse one member's header (RFC 1952 section 2.3), leaving ``_pending`` at its deflate data."""
        start = self._at
        fixed = self._take(10, "header")
        if fixed[:2] != GZIP_MAGIC or fixed[2] != 8:
            raise _Damage("the gzip header is damaged (bad magic or compression method)", start)
        flags, parts = fixed[3], [fixed]
        if flags & 0xE0:
            raise _Damage(f"the gzip header is damaged (reserved flag bits {flags:#04x} set)", start + 3)
        if flags & 0x04:  # FEXTRA
            size = self._take(2, "header")
            parts += [size, self._take(int.from_bytes(size, "little"), "header")]
        for bit in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                while (byte := self._take(1, "header")) != b"\0":
                    parts.append(byte)
                    if sum(len(p) for p in parts) > 1 << 16:
                        raise _Damage("the gzip header is damaged (a name or comment over 64 KiB)", start)
                parts.append(byte)
        if flags & 0x02:  # FHCRC
            if int.from_bytes(self._take(2, "header"), "little") != zlib.crc32(b"".join(parts)) & 0xFFFF:
                raise _Damage("the gzip header's CRC-16 does not match", start)
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = self._size = 0
        self._in_member = True

    def _trailer(self) -> None:
        """Check the member's CRC-32 and length against what was inflated."""
        at = self._at
        trailer = self._take(8, "CRC-32 trailer")
        crc, size = int.from_bytes(trailer[:4], "little"), int.from_bytes(trailer[4:], "little")
        if crc != self._crc:
            raise _Damage(
                f"CRC-32 mismatch in the gzip trailer (stored {crc:08x}, computed {self._crc:08x}): some byte of "
                "the shard is wrong",
                at,
            )
        if size != self._size & 0xFFFFFFFF:
            raise _Damage(f"length mismatch in the gzip trailer (stored {size}, inflated {self._size})", at + 4)
        self.members += 1
        self._in_member = False

    def _inflate(self, n: int) -> bytes | None:
        """At most ``n`` uncompressed bytes; ``None`` at the verified end of the stream.

        Compressed bytes go to zlib :data:`FEED` at a time, so damage is located within
        that many bytes; every inflated byte is returned before the trailer is checked.
        """
        while True:
            if not self._in_member:
                if not self._fill(1):
                    if self.members:
                        return None
                    raise _Damage("the gzip stream is empty", self.pos)
                if self.members and self._pending[:1] != GZIP_MAGIC[:1]:
                    raise _Damage(
                        "bytes after the end of the gzip stream are not a gzip member (trailing garbage)", self._at
                    )
                self._header()
            if self._z.eof:
                self._pending = self._z.unused_data + self._pending
                self._at -= len(self._z.unused_data)
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # (not used again before the next header)
                self._trailer()
                continue
            if not self._fill(1):
                raise _Damage("the gzip stream is truncated: it ends inside its deflate data", self.pos)
            data, self._pending, start = self._pending[:FEED], self._pending[FEED:], self._at
            try:
                got = self._z.decompress(data, n)
            except zlib.error as exc:
                raise _Damage(
                    f"the gzip data is corrupted ({_reason(exc)}) in compressed bytes {start}..{start + len(data)}", start
                ) from None
            left = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            if not self._z.eof:
                self._pending = left + self._pending
                self._at = start + len(data) - len(left)
            else:
                self._at = start + len(data)  # unused_data is put back above
            self._crc = zlib.crc32(got, self._crc)
            self._size += len(got)
            if got:
                return got

    # ---- errors

    def _error(self, message: str, offset: int) -> NDFShardError:
        member, where = self.where() if self.where is not None else (None, f"uncompressed byte {self.out}")
        return NDFShardError(f"{message}; damage found at {where}", source=self.source, offset=offset, member=member)



class _Damage(Exception):
    """Damage found while inflating: ``(message, compressed offset)``; becomes an NDFShardError."""


def _reason(exc: zlib.error) -> str:
    return str(exc).replace("Error -3 while decompressing data: ", "zlib: ")
