"""Where a record's shared base is found: the shard's directory, given locations, the process cache."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ...codec import BASE_SUFFIX, NDFBaseError, SharedBase, base_filename, find_bases, load_base_cached, resolve_base
from ..s3 import storage_options_for

__all__ = ["shard_dir"]


def shard_dir(url: str) -> str:
    """The directory (or URL prefix) holding shard ``url``: where its shared base lives.

    Args:
        url: a shard path or URL, e.g. ``"s3://bucket/train/shard-000001.tar"``.

    Raises:
        ValueError: a ``pipe:`` URL, which has no directory.

    Returns:
        ``"s3://bucket/train"``; ``"."`` for a bare file name.
    """
    url = os.fspath(url)
    if url.startswith("pipe:"):
        raise ValueError(f"{url}: a pipe: URL has no directory; pass base= or base_locations=")
    head, sep, _ = url.rpartition("/")
    if not sep:
        return "."
    return head + "/" if head == "" or head.endswith("://") else head


def _cached_base(base_hash: bytes) -> SharedBase | None:
    try:
        return resolve_base(base_hash, [])  # only the per-process cache: no I/O
    except NDFBaseError:
        return None


def _find_base(base_hash: bytes, locations: Sequence[str], source: str) -> SharedBase | list[SharedBase]:
    """The base with ``base_hash``: from this process's cache, else ``<location>/<hash>.ndfbase``; for
    a compact record (a 1-byte tag, or none) the candidates there, which the codec tries by CRC."""
    base = _cached_base(base_hash)
    if base is not None:
        return base
    if len(base_hash) < 8:
        return _find_tagged(base_hash, locations, source)
    tried = []
    for loc in locations:
        candidate = _join(loc, base_filename(base_hash))
        tried.append(candidate)
        try:
            base = load_base_cached(candidate, **storage_options_for(candidate))
        except FileNotFoundError:
            continue
        if base.hash != base_hash:
            raise NDFBaseError(f"base file holds hash {base.hash.hex()}, not {base_hash.hex()}", source=candidate)
        return base
    where = f"looked for {tried}" if tried else "no base=, base_locations= or shard URL to look in"
    raise NDFBaseError(
        f"this record needs the shared base {base_hash.hex()}; {where}. Pass base=..., "
        "base_locations=[<shard dir>], or decode with .map(ndf_samples(...)) to look next to each shard",
        source=source,
    )


def _find_tagged(tag: bytes, locations: Sequence[str], source: str) -> list[SharedBase]:
    """The bases whose hash starts with ``tag`` (every base for a version-3 record's empty tag) in the
    first location that holds one: the record's CRC, checked with each one's full hash, picks it."""
    for loc in locations:
        try:
            return find_bases(tag, [loc], **storage_options_for(loc))
        except NDFBaseError:
            continue
    what = f"the shared base whose hash starts with {tag.hex()}" if tag else "a shared base"
    raise NDFBaseError(
        f"this compact record needs {what}; looked for "
        f"{[_join(loc, tag.hex() + '*' + BASE_SUFFIX) for loc in locations]}. Pass base=... or base_locations=[...]",
        source=source,
    )


def _join(location: str, name: str) -> str:
    return location + name if location.endswith("/") else f"{location}/{name}"


def _as_locations(locations: Iterable[str | os.PathLike] | str | os.PathLike | None) -> tuple[str, ...]:
    if locations is None:
        return ()
    if isinstance(locations, (str, os.PathLike)):
        locations = [locations]
    return tuple(os.fspath(loc) for loc in locations)
