"""A pass-through reader that makes a tar shard's corruption and truncation loud.

Python's :mod:`tarfile` (and so WebDataset, which reads shards with it) treats two kinds of
damage as a normal end of the archive, silently dropping every later sample:

* a header block whose checksum does not match, anywhere after the first member
  (``InvalidHeaderError`` is only raised at offset 0);
* a file that stops at a member boundary or inside a header (``EmptyHeaderError`` /
  ``TruncatedHeaderError`` after offset 0), i.e. a truncated shard without its
  end-of-archive marker.

:class:`VerifiedTarStream` wraps the shard's byte stream and follows the tar block structure
as the bytes go by (it never buffers more than one 512-byte header): every header's checksum
is verified, and end of file before the end-of-archive marker (a zero block) is an error.
Both raise :class:`~ndf_datasets.codec.errors.NDFShardError`, which names the shard, the member and
the byte offset in the shard. Member *contents* are not checked here: ``.ndf`` members carry
their own CRC-32.

A gzip-compressed shard (``.tar.gz``) is read through
:class:`~ndf_datasets.data.gzcheck.VerifiedGzipStream` underneath: :func:`open_verified`
recognises it by its first bytes. Then every byte is covered twice over (the gzip CRC-32
and length, checked to the end of the file, and the tar headers), offsets of tar damage
are in the uncompressed tar, and gzip damage names the tar member being read.
"""

from __future__ import annotations

from typing import IO, Any

from ..codec import NDFShardError
from .gzcheck import GZIP_MAGIC, PassThrough, VerifiedGzipStream

__all__ = ["VerifiedTarStream", "BLOCK", "open_verified"]

BLOCK = 512
_ZERO = bytes(BLOCK)
#: types whose data blocks follow the header (tarfile: regular files, pax and GNU long-name records)
_WITH_DATA = {b"0", b"\0", b"7", b"x", b"g", b"L", b"K"}
#: records that extend the header of the member after them
_EXTENDED = {b"x", b"g", b"L", b"K"}
#: types tarfile knows; a header of an unknown type is followed by data blocks too
_KNOWN = _WITH_DATA | {b"1", b"2", b"3", b"4", b"5", b"6", b"S", b"V", b"M", b"N"}


def _octal(field: bytes) -> int | None:
    """A tar numeric field (octal text, or GNU base-256), ``None`` when malformed."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return -((1 << (8 * (len(field) - 1))) - value) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


class VerifiedTarStream(PassThrough):
    """Read a tar stream through, verifying every header and the end-of-archive marker.

    Args:
        raw: the shard's binary stream (anything with ``read(n)``).
        source: the shard's URL or path, for error messages.

    Raises (from :meth:`read`):
        NDFShardError: a header with a bad checksum or size, or end of file before the
            end-of-archive marker. The bytes before the bad header are delivered first (so
            the samples before the damage are read); the error is raised by the next read,
            once; later reads return ``b""``.
    """

    def __init__(self, raw: IO[bytes], source: str):
        self.raw = raw
        self.source = source
        self.pos = 0  # shard bytes read so far
        self.skip = 0  # bytes of member data (and padding) before the next header
        self.header = bytearray()
        self.member: str | None = None  # the member whose data is being read, or the last one
        self.members = 0
        self.ended = False  # the end-of-archive marker was seen
        self.end_offset = 0  # where it is
        self.failed = False
        self.pending: NDFShardError | None = None  # found, raised by the next read
        self.compressed = isinstance(raw, VerifiedGzipStream)
        if self.compressed:
            raw.where = self._where

    # ---- the file protocol that tarfile and WebDataset use

    def read(self, n: int = -1) -> bytes:
        if self.failed:
            return b""
        if self.pending is not None:
            self._raise_pending()
        try:
            data = self.raw.read(n) if n is None or n >= 0 else self.raw.read()
        except NDFShardError:
            self.failed = True
            raise
        if data:
            good = self._feed(data)
            if self.ended and self.compressed and self.pending is None:
                try:
                    self.raw.finish()  # the rest of the file and the gzip trailer: every byte is verified
                except NDFShardError as exc:  # deliver every member first; raise when tarfile asks for more
                    self.pending = exc
                    good = max(0, self.end_offset - (self.pos - len(data)))
        if data:
            if self.pending is not None:
                data = data[:good]
                if not data:
                    self._raise_pending()
        elif n != 0 and not self.ended:
            self.pending = self._error(self._truncation_message(), self.pos)
            self._raise_pending()
        return data

    def __enter__(self) -> VerifiedTarStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- the block structure

    def _error(self, message: str, offset: int) -> NDFShardError:
        if self.compressed:
            message += f" (offset {offset} is in the uncompressed tar; gzip bytes read: {self.raw.pos})"
        return NDFShardError(message, source=self.source, offset=offset, member=self.member)

    def _where(self) -> tuple[str | None, str]:
        """The member being read and a description of the position, for the gzip stream's errors."""
        inside = f"in member {self.member!r}" if self.skip and self.member else (
            f"after member {self.member!r}" if self.member else "before the first member"
        )
        return self.member, f"byte {self.pos} of the uncompressed tar, {inside}"

    def _raise_pending(self) -> None:
        err, self.pending, self.failed = self.pending, None, True
        raise err

    def _truncation_message(self) -> str:
        if self.skip:
            return f"shard is truncated inside member {self.member!r} ({self.skip} bytes of it and its padding missing)"
        if self.header and self.member is None:
            return f"shard is truncated inside the tar header of its first member ({len(self.header)} of 512 bytes there)"
        if self.header:
            return f"shard is truncated inside the header after member {self.member!r}"
        where = f"after member {self.member!r}" if self.member else "before its first member"
        return f"shard is truncated {where}: it ends without the end-of-archive marker"

    def _feed(self, data: bytes) -> int:
        """Follow the block structure through ``data``; returns how many of its bytes precede
        the first damaged header (all of them when none is), setting :attr:`pending`."""
        view = memoryview(data)
        start = self.pos
        while view and not self.ended and self.pending is None:
            if self.skip:
                take = min(self.skip, len(view))
                self.skip -= take
                self.pos += take
                view = view[take:]
                continue
            take = min(BLOCK - len(self.header), len(view))
            self.header += view[:take]
            self.pos += take
            view = view[take:]
            if len(self.header) == BLOCK:
                block, self.header = bytes(self.header), bytearray()
                self.pending = self._check_header(block, self.pos - BLOCK)
                if self.pending is not None:
                    return max(0, self.pending.offset - start)
        self.pos += len(view)  # bytes after the end-of-archive marker (padding) are not examined
        return len(data)

    def _check_header(self, block: bytes, offset: int) -> NDFShardError | None:
        """Check one header block; returns the error (not raised yet) or ``None``."""
        if block == _ZERO:
            self.ended = True
            self.end_offset = offset
            return None
        after = f"after member {self.member!r}" if self.member else "of the first member"
        stored = _octal(block[148:156])
        unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 8 * 32
        if stored is None or stored not in (unsigned, signed):
            return self._error(f"tar header {after} is corrupted (checksum mismatch)", offset)
        size = _octal(block[124:136])
        if size is None or size < 0:
            return self._error(f"tar header {after} declares an invalid size", offset)
        name = block[:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        kind = block[156:157]
        if kind not in _EXTENDED:  # a pax / GNU long-name record describes the member after it
            self.member = name.decode("utf-8", "replace")
            self.members += 1
        if kind in _WITH_DATA or kind not in _KNOWN:
            self.skip = -(-size // BLOCK) * BLOCK
        return None


class _Prefixed(PassThrough):
    """``raw`` with ``head`` (bytes already read from it) put back in front."""

    def __init__(self, raw: IO[bytes], head: bytes):
        self.raw, self.head = raw, head

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.raw.read(n)
        if n is None or n < 0:
            data, self.head = self.head + self.raw.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data


def open_verified(raw: IO[bytes], source: str) -> VerifiedTarStream:
    """The verified tar stream of a shard, gzip-compressed (``.tar.gz``) or not, recognised by its first bytes.

    Args:
        raw: the shard's binary stream, at its start.
        source: the shard's URL or path, for error messages.

    Returns:
        A :class:`VerifiedTarStream` (over a :class:`~ndf_datasets.data.gzcheck.VerifiedGzipStream`
        for a gzip file) that yields the uncompressed tar.
    """
    head = raw.read(len(GZIP_MAGIC))
    if head == GZIP_MAGIC:
        return VerifiedTarStream(VerifiedGzipStream(raw, source, head), source)
    return VerifiedTarStream(_Prefixed(raw, head), source)
