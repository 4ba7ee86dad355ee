"""WebDataset tar shards of ``.ndf`` samples, written byte-for-byte reproducibly, plain or gzip-compressed.

A shard is a plain (USTAR) tar file whose members are grouped by sample key::

    000000.ndf   000000.cls   000000.json   000001.ndf   000001.cls ...

``<key>.ndf`` holds the image (a record or standalone field), ``<key>.cls`` its integer label
in ASCII and ``<key>.json`` its metadata (UTF-8 JSON, sorted keys). The **compact** layout
(what ``ndf convert`` writes by default) keeps only ``<key>.ndf``: the record already carries
the label, under its CRC, and each extra member costs a 512-byte header plus padding; and it
compresses the tar with gzip (``<split>-NNNNNN.tar.gz``), which turns the headers and the
padding into a few bytes per sample and which ``tarfile``, WebDataset and every tar tool read
natively. :data:`MEMBERS` lists the members a sample may have, :data:`COMPACT` the compact ones.

Every tar header field that could vary between runs (mtime, uid, gid, user and group names,
mode) is fixed, and so are the gzip header's (mtime 0, no file name) and the compression
level, so the same samples always give the same bytes: a killed conversion can be resumed or
split over processes and still produce files identical to a single uninterrupted run.

Only the standard library's :mod:`tarfile` and :mod:`zlib` are used; reading never extracts
to disk, and every reader goes through :func:`~ndf_datasets.data.tarcheck.open_verified`
(tar headers, end-of-archive marker, and for ``.tar.gz`` the gzip CRC-32 and length).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..codec import LIMITS, NDFFormatError, NDFLimitError, open_url, write_atomic
from .gzcheck import GZIP_MAGIC, VerifiedGzipStream
from .shardindex import ShardIndex, digest
from .tarcheck import open_verified

__all__ = [
    "Sample",
    "tar_bytes",
    "gzip_bytes",
    "shard_bytes",
    "shard_layout",
    "GROUP_BYTES",
    "write_shard",
    "parse_shard",
    "iter_shard",
    "MEMBER",
    "MEMBERS",
    "COMPACT",
    "SHARD_SUFFIXES",
]

#: WebDataset's member rule: the key is the path up to the first dot of the file name.
MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
#: the members a sample can have, in shard order
MEMBERS = ("ndf", "cls", "json")
#: the members of the compact layout: the record alone (its label is inside it)
COMPACT = ("ndf",)
#: file-name suffixes of tar shards: plain, gzip-compressed
SHARD_SUFFIXES = (".tar", ".tar.gz")
#: gzip level of compressed shards (part of what makes them byte-reproducible)
GZIP_LEVEL = 9
#: a compressed shard's deflate stream is fully flushed at the first sample boundary after
#: this many tar bytes, so each such group decompresses on its own (random access, :mod:`.shardindex`)
GROUP_BYTES = 1 << 16

_FIXED = {"mtime": 0, "uid": 0, "gid": 0, "uname": "", "gname": "", "mode": 0o644}


@dataclass(frozen=True)
class Sample:
    """One shard sample.

    Attributes:
        key: the sample key (no ``.`` in its last path component).
        ndf: the ``.ndf`` bytes.
        label: integer class label (written as ``<key>.cls``), or ``None`` for no label.
        meta: JSON-able metadata (written as ``<key>.json``), or ``None``.
    """

    key: str
    ndf: bytes
    label: int | None = None
    meta: dict[str, Any] | None = field(default=None)

    def members(self, members: Sequence[str] = MEMBERS) -> list[tuple[str, bytes]]:
        """The ``(name, bytes)`` tar members of this sample, in shard order.

        Args:
            members: which of :data:`MEMBERS` to write (``.ndf`` always; ``.cls`` and
                ``.json`` when listed and the sample has a label / metadata).
        """
        if not self.key or "." in self.key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample key {self.key!r} must be non-empty and contain no '.'")
        out = [(f"{self.key}.ndf", bytes(self.ndf))]
        if self.label is not None and "cls" in members:
            out.append((f"{self.key}.cls", str(int(self.label)).encode("ascii")))
        if self.meta is not None and "json" in members:
            out.append((f"{self.key}.json", json.dumps(self.meta, sort_keys=True).encode("utf-8")))
        return out


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A deterministic USTAR tar archive of ``(name, bytes)`` members, in the given order.

    Header fields other than name and size are fixed (mtime 0, uid/gid 0, empty user and
    group names, mode 0644), so equal members give equal bytes.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for attr, value in _FIXED.items():
                setattr(info, attr, value)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes, flush_at: Sequence[int] = ()) -> bytes:
    """``data`` gzip-compressed reproducibly (level :data:`GZIP_LEVEL`, mtime 0, no file name).

    Args:
        data: the bytes to compress.
        flush_at: increasing offsets into ``data`` where the deflate stream is fully flushed
            (byte-aligned, no back-references across it), so decompression can start there.
            Without any, the bytes are ``gzip.compress(data, 9, mtime=0)``'s.
    """
    return _gzip_groups(data, flush_at)[0]


def _gzip_groups(data: bytes, flush_at: Sequence[int]) -> tuple[bytes, list[tuple[int, int]]]:
    """The gzip bytes and ``(offset in data, offset in the output)`` where each group starts."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    out, groups, pos = [], [(0, 10)], 0  # a gzip header without a name is 10 bytes
    size = 0
    for cut in flush_at:
        if not pos < cut < len(data):
            raise ValueError(f"flush offsets must increase inside the data, got {cut} after {pos}")
        for piece in (z.compress(data[pos:cut]), z.flush(zlib.Z_FULL_FLUSH)):
            out.append(piece)
            size += len(piece)
        groups.append((cut, size))
        pos = cut
    out += [z.compress(data[pos:]), z.flush()]
    return b"".join(out), groups


def shard_bytes(samples: Sequence[Sample], members: Sequence[str] = MEMBERS, compress: bool = False) -> bytes:
    """The bytes of a shard holding ``samples`` (see the module docstring for the layout).

    Args:
        samples: the samples, in order.
        members: the members each sample gets (:data:`MEMBERS`; :data:`COMPACT`: ``.ndf`` only).
        compress: gzip the tar (a ``.tar.gz`` shard, restartable every :data:`GROUP_BYTES`).
    """
    return shard_layout(samples, members, compress)[0]


def shard_layout(
    samples: Sequence[Sample], members: Sequence[str] = MEMBERS, compress: bool = False
) -> tuple[bytes, ShardIndex]:
    """A shard's bytes (as :func:`shard_bytes`) and its random-access :class:`~.shardindex.ShardIndex`.

    A compressed shard is one gzip stream, fully flushed at the first sample boundary after
    every :data:`GROUP_BYTES` of tar, so a record is one range read of its group away.
    """
    bad = [m for m in members if m not in MEMBERS]
    if bad or "ndf" not in members:
        raise ValueError(f"members must include 'ndf' and be among {MEMBERS}, got {tuple(members)}")
    tar = tar_bytes(m for s in samples for m in s.members(members))
    starts, offsets, lengths = [], [], []
    key = None
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as reader:
        for info in reader:
            m = MEMBER.match(info.name)
            if m[1] != key:
                starts.append(info.offset)
                key = m[1]
            if m[2] == "ndf":
                offsets.append(info.offset_data)
                lengths.append(info.size)
    groups: list[tuple[int, int]] = []
    data = tar
    if compress:
        cuts, last = [], 0
        for start in starts[1:]:
            if start - last >= GROUP_BYTES:
                cuts.append(start)
                last = start
        data, groups = _gzip_groups(tar, cuts)
    return data, ShardIndex(tuple(offsets), tuple(lengths), tuple(groups), len(data), digest(data))


def write_shard(
    location: str, samples: Sequence[Sample], members: Sequence[str] = MEMBERS, compress: bool = False, **storage_options: Any
) -> None:
    """Write a shard atomically: ``location`` never holds a partial file.

    Args:
        location: local path or fsspec URL of the ``.tar`` (``.tar.gz`` with ``compress``) file.
        samples: the samples, in order.
        members, compress: as in :func:`shard_bytes`.
        storage_options: fsspec options for URLs.
    """
    write_atomic(location, shard_bytes(samples, members, compress), **storage_options)


def parse_shard(data: bytes, source: str) -> list[tuple[str, dict[str, bytes]]]:
    """Read a whole shard held in memory and check that it is complete and canonical.

    The archive must re-serialise (with :func:`tar_bytes`) to exactly ``data``: a truncated
    file, trailing garbage or a tar written by another tool is refused.

    A gzip-compressed shard (recognised by its first bytes) must be one complete gzip
    stream (CRC-32 and length verified, nothing after it) holding such an archive.

    Args:
        data: the shard's bytes.
        source: name for error messages.

    Raises:
        NDFFormatError: not a complete, canonical shard (the message says why;
            :class:`~ndf_datasets.codec.errors.NDFShardError` for damaged gzip data).

    Returns:
        ``(key, {extension: bytes})`` per sample, in order.
    """
    if data[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        stream = VerifiedGzipStream(io.BytesIO(data), source)
        data = stream.read()
        if stream.members != 1:
            raise NDFFormatError(f"a compressed shard holds one gzip member, this one {stream.members}", source=source)
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    raise NDFFormatError(f"member {info.name!r} is not a regular file", source=source)
                f = tar.extractfile(info)
                content = f.read() if f is not None else b""
                if len(content) != info.size:
                    raise NDFFormatError(f"member {info.name!r} is truncated", source=source)
                members.append((info.name, content))
    except (tarfile.TarError, EOFError) as exc:
        raise NDFFormatError(f"not a readable tar shard ({exc})", source=source) from exc
    if tar_bytes(members) != data:
        raise NDFFormatError("shard is truncated or was not written by ndf_datasets.shards", source=source)
    return _group(members, source)


def _group(members: Iterable[tuple[str, bytes]], source: str) -> list[tuple[str, dict[str, bytes]]]:
    out: list[tuple[str, dict[str, bytes]]] = []
    for name, content in members:
        m = MEMBER.match(name)
        if m is None:
            raise NDFFormatError(f"member name {name!r} has no key.extension form", source=source)
        if not out or out[-1][0] != m[1]:
            out.append((m[1], {}))
        out[-1][1][m[2]] = content
    return out


def iter_shard(url: str, storage_options: dict | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` for each sample of a WebDataset tar shard (``.tar`` or ``.tar.gz``), streaming.

    Members that are not regular files or whose names have no ``key.extension`` form are
    skipped (WebDataset does the same).

    Args:
        url: local path or fsspec URL of the shard.
        storage_options: fsspec options for URLs.

    Raises:
        NDFFormatError: the shard is not a readable tar file (named by its URL).
        NDFLimitError: a member larger than ``LIMITS['max_file_bytes']``.
        NDFShardError: a tar header with a bad checksum, or the shard ends before its
            end-of-archive marker (Python's tarfile would end the shard there silently), or
            damaged gzip data / trailer in a ``.tar.gz``; the samples before the damage are
            yielded first.
    """
    key, parts = None, {}
    try:
        with (
            open_url(url, "rb", **(storage_options or {})) as raw,
            tarfile.open(fileobj=open_verified(raw, url), mode="r|") as tar,
        ):
            for member in tar:
                m = MEMBER.match(member.name)
                if not member.isfile() or m is None:
                    continue
                if member.size > LIMITS["max_file_bytes"]:
                    raise NDFLimitError(
                        f"member of {member.size} bytes exceeds max_file_bytes", source=f"{url}/{member.name}"
                    )
                if m[1] != key and parts:
                    yield key, parts
                    parts = {}
                key = m[1]
                parts[m[2]] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise NDFFormatError(f"not a readable tar shard ({exc})", source=url) from exc
    if parts:
        yield key, parts
