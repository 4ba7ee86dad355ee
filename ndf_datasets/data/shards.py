"""WebDataset tar shards of ``.ndf`` samples, written byte-for-byte reproducibly.

A shard is a plain (USTAR) tar file whose members are grouped by sample key::

    000000.ndf   000000.cls   000000.json   000001.ndf   000001.cls ...

``<key>.ndf`` holds the image (a record or standalone field), ``<key>.cls`` its integer label
in ASCII and ``<key>.json`` its metadata (UTF-8 JSON, sorted keys). Every tar header field
that could vary between runs (mtime, uid, gid, user and group names, mode) is fixed, so the
same samples always give the same bytes: a killed conversion can be resumed or split over
processes and still produce files identical to a single uninterrupted run.

Only the standard library's :mod:`tarfile` is used; reading never extracts to disk.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..codec import LIMITS, NDFFormatError, NDFLimitError, open_url, write_atomic
from .tarcheck import VerifiedTarStream

__all__ = ["Sample", "tar_bytes", "shard_bytes", "write_shard", "parse_shard", "iter_shard", "MEMBER"]

#: WebDataset's member rule: the key is the path up to the first dot of the file name.
MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")

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

    def members(self) -> list[tuple[str, bytes]]:
        """The ``(name, bytes)`` tar members of this sample, in shard order."""
        if not self.key or "." in self.key.rsplit("/", 1)[-1]:
            raise ValueError(f"sample key {self.key!r} must be non-empty and contain no '.'")
        out = [(f"{self.key}.ndf", bytes(self.ndf))]
        if self.label is not None:
            out.append((f"{self.key}.cls", str(int(self.label)).encode("ascii")))
        if self.meta is not None:
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


def shard_bytes(samples: Sequence[Sample]) -> bytes:
    """The bytes of a shard holding ``samples`` (see the module docstring for the layout)."""
    return tar_bytes(m for s in samples for m in s.members())


def write_shard(location: str, samples: Sequence[Sample], **storage_options: Any) -> None:
    """Write a shard atomically: ``location`` never holds a partial tar.

    Args:
        location: local path or fsspec URL of the ``.tar`` file.
        samples: the samples, in order.
        storage_options: fsspec options for URLs.
    """
    write_atomic(location, shard_bytes(samples), **storage_options)


def parse_shard(data: bytes, source: str) -> list[tuple[str, dict[str, bytes]]]:
    """Read a whole shard held in memory and check that it is complete and canonical.

    The archive must re-serialise (with :func:`tar_bytes`) to exactly ``data``: a truncated
    file, trailing garbage or a tar written by another tool is refused.

    Args:
        data: the shard's bytes.
        source: name for error messages.

    Raises:
        NDFFormatError: not a complete, canonical shard (the message says why).

    Returns:
        ``(key, {extension: bytes})`` per sample, in order.
    """
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
    """Yield ``(key, {extension: bytes})`` for each sample of a WebDataset tar shard, streaming.

    Members that are not regular files or whose names have no ``key.extension`` form are
    skipped (WebDataset does the same).

    Args:
        url: local path or fsspec URL of the shard.
        storage_options: fsspec options for URLs.

    Raises:
        NDFFormatError: the shard is not a readable tar file (named by its URL).
        NDFLimitError: a member larger than ``LIMITS['max_file_bytes']``.
        NDFShardError: a tar header with a bad checksum, or the shard ends before its
            end-of-archive marker (Python's tarfile would end the shard there silently); the
            samples before the damage are yielded first.
    """
    key, parts = None, {}
    try:
        with (
            open_url(url, "rb", **(storage_options or {})) as raw,
            tarfile.open(fileobj=VerifiedTarStream(raw, url), mode="r|") as tar,
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
