"""Shared bases by content hash: the per-process cache, and finding ``<hash>.ndfbase`` files.

A base is loaded once per process (whatever path or URL it is read from) and found again by
the hash every record stores. This module is also what the old ``ndf_datasets.io`` path
imports, so it re-exports the URL functions of :mod:`ndf_datasets.codec.io` it reads through.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .errors import NDFBaseError
from .io import TMP_SUFFIX, is_url, open_url, read_url, write_atomic
from .shared import SharedBase, load_base

__all__ = [
    "load_base_cached",
    "clear_base_cache",
    "cached_base",
    "cached_bases",
    "register_base",
    "base_filename",
    "resolve_base",
    "find_bases",
    "BASE_SUFFIX",
    # the URL functions, re-exported for the old ``ndf_datasets.io`` path
    "open_url",
    "read_url",
    "is_url",
    "TMP_SUFFIX",
    "write_atomic",
]

#: File-name suffix of shared bases. A dataset's base lives next to its data (folder root or
#: shard directory) as ``<16 hex digits of its hash>.ndfbase``, so records find it by hash.
BASE_SUFFIX = ".ndfbase"

_lock = threading.Lock()
_bases_by_hash: dict[bytes, SharedBase] = {}
_hash_by_location: dict[tuple[str, Any], bytes] = {}


def _stamp(location: str) -> Any:
    if is_url(location):
        return None  # remote: identified by URL for the life of the process
    st = os.stat(location)
    return (st.st_size, st.st_mtime_ns)


def load_base_cached(location: str | os.PathLike, **storage_options: Any) -> SharedBase:
    """Load a shared base once per process; later calls (any path to the same content) reuse it.

    Bases are cached by content hash, so two copies of one base share one object (and one set
    of device tensors); a local file that changes on disk is re-read.
    """
    location = os.fspath(location)
    key = (location, _stamp(location))
    with _lock:
        h = _hash_by_location.get(key)
        if h is not None and h in _bases_by_hash:
            return _bases_by_hash[h]
    base = load_base(read_url(location, **storage_options), source=location)
    with _lock:
        base = _bases_by_hash.setdefault(base.hash, base)
        _hash_by_location[key] = base.hash
    return base


def cached_base(base_hash: bytes) -> SharedBase | None:
    """The base with ``base_hash`` if this process has loaded or registered it, else ``None``.

    A 1-byte ``base_hash`` is a version-1/2 compact record's base tag: the cached base whose
    hash starts with it (``None`` when none or several do). An empty one (a version-3 record,
    which names no base) gives ``None``: such a record is tried against :func:`cached_bases`.
    """
    with _lock:
        if not base_hash:
            return None
        if len(base_hash) < 8:
            found = [b for h, b in _bases_by_hash.items() if h.startswith(base_hash)]
            return found[0] if len(found) == 1 else None
        return _bases_by_hash.get(base_hash)


def cached_bases() -> list[SharedBase]:
    """Every base this process has loaded or registered (a version-3 compact record, which does
    not name its base, is tried against them by its CRC before any file is read)."""
    with _lock:
        return list(_bases_by_hash.values())


def register_base(base: SharedBase) -> SharedBase:
    """Make an in-memory base findable by hash in this process (returns the cached instance)."""
    with _lock:
        return _bases_by_hash.setdefault(base.hash, base)


def clear_base_cache() -> None:
    """Forget every cached base (tests; long-lived processes that rotate datasets)."""
    with _lock:
        _bases_by_hash.clear()
        _hash_by_location.clear()


def base_filename(base_hash: bytes) -> str:
    """The conventional file name of a base: ``<hash hex>.ndfbase``."""
    return base_hash.hex() + BASE_SUFFIX


def resolve_base(base_hash: bytes, locations: list[str | os.PathLike], **storage_options: Any) -> SharedBase:
    """Find and load (cached) the base with ``base_hash`` in one of ``locations`` (dirs or URL prefixes).

    Looks for ``<location>/<hash hex>.ndfbase`` in order. A shorter ``base_hash`` (the base tag
    of a version-1/2 compact record) matches the one ``<location>/<tag hex>*.ndfbase`` file there
    is (:func:`find_bases` gives every candidate); the record's CRC, checked with the base's full
    hash, then confirms it.

    Raises:
        NDFBaseError: no location holds it, or several bases share the tag (pass the base
            explicitly then); the message lists where it looked.
    """
    known = cached_base(base_hash)
    if known is not None:
        return known
    if len(base_hash) < 8:
        return _resolve_tag(base_hash, locations, storage_options)
    tried = []
    for loc in locations:
        loc = os.fspath(loc).rstrip("/")
        candidate = f"{loc}/{base_filename(base_hash)}"
        tried.append(candidate)
        try:
            base = load_base_cached(candidate, **storage_options)
        except FileNotFoundError:
            continue
        if base.hash != base_hash:
            raise NDFBaseError(f"base file holds hash {base.hash.hex()}, not {base_hash.hex()}", source=candidate)
        return base
    raise NDFBaseError(f"no shared base {base_hash.hex()} found; looked for {tried}", source=str(locations))


def _resolve_tag(tag: bytes, locations: list[str | os.PathLike], storage_options: dict) -> SharedBase:
    found = find_bases(tag, locations, **storage_options)
    if len(found) > 1:
        raise NDFBaseError(
            f"several bases share the tag {tag.hex()} ({[b.hash.hex() for b in found]}); pass base= explicitly",
            source=str(locations),
        )
    return found[0]


def find_bases(prefix: bytes, locations: list[str | os.PathLike], **storage_options: Any) -> list[SharedBase]:
    """The bases ``<location>/<hex hash>.ndfbase`` whose hash starts with ``prefix``, from the first
    location that holds any (loaded and cached).

    ``prefix`` is what a compact record says of its base: its 1-byte tag (versions 1-2) or
    nothing (version 3, ``b""``: every base there is a candidate, and the record's CRC picks one).

    Raises:
        NDFBaseError: no location holds one; the message lists where it looked.
    """
    prefix_hex = prefix.hex()
    tried = []
    for loc in locations:
        loc = os.fspath(loc).rstrip("/")
        pattern = f"{loc}/{prefix_hex}*{BASE_SUFFIX}"
        tried.append(pattern)
        if is_url(loc):
            import fsspec

            fs, _, _ = fsspec.get_fs_token_paths(loc, storage_options=storage_options)
            protocol = loc.split("://", 1)[0]
            names = [f"{protocol}://{p}" for p in sorted(fs.glob(pattern.split("://", 1)[1]))]
        else:
            import glob

            names = sorted(glob.glob(glob.escape(loc) + f"/{prefix_hex}*{BASE_SUFFIX}"))
        names = [n for n in names if _is_base_name(os.path.basename(n))]
        if names:
            return [load_base_cached(n, **storage_options) for n in names]
    what = f"with tag {prefix_hex}" if prefix else "(no *.ndfbase file)"
    raise NDFBaseError(f"no shared base {what} found; looked for {tried}", source=str(locations))


def _is_base_name(name: str) -> bool:
    stem = name[: -len(BASE_SUFFIX)]
    return name.endswith(BASE_SUFFIX) and len(stem) == 16 and all(c in "0123456789abcdef" for c in stem)
