"""Reading bytes from paths and URLs, and the per-process cache of shared bases.

Every open of NDF data (local path, ``file://``, ``s3://``, any fsspec URL) goes through
:func:`open_url` / :func:`read_url`, so remote-storage logic lives in one place. ``fsspec`` is
imported only when a URL with a scheme is opened.
"""

from __future__ import annotations

import os
import threading
from typing import IO, Any

from .errors import NDFLimitError
from .format import LIMITS
from .shared import SharedBase, load_base

__all__ = [
    "open_url",
    "read_url",
    "load_base_cached",
    "clear_base_cache",
    "cached_base",
    "register_base",
    "is_url",
    "base_filename",
    "resolve_base",
    "BASE_SUFFIX",
    "TMP_SUFFIX",
    "write_atomic",
]

#: File-name suffix of shared bases. A dataset's base lives next to its data (folder root or
#: shard directory) as ``<16 hex digits of its hash>.ndfbase``, so records find it by hash.
BASE_SUFFIX = ".ndfbase"

_lock = threading.Lock()
_bases_by_hash: dict[bytes, SharedBase] = {}
_hash_by_location: dict[tuple[str, Any], bytes] = {}


def is_url(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` locations other than plain local paths."""
    return "://" in os.fspath(location)


def open_url(location: str | os.PathLike, mode: str = "rb", **storage_options: Any) -> IO[bytes]:
    """Open a local path or any fsspec URL (``s3://``, ``file://``, ``memory://`` ...).

    Args:
        location: path or URL.
        mode: ``"rb"`` or ``"wb"``.
        storage_options: passed to fsspec (e.g. ``client_kwargs={"endpoint_url": ...}``).
    """
    location = os.fspath(location)
    if not is_url(location):
        return open(location, mode)
    import fsspec

    return fsspec.open(location, mode, **storage_options).open()


def read_url(location: str | os.PathLike, limit: int | None = None, **storage_options: Any) -> bytes:
    """Read a whole file, refusing (before reading it all) one larger than ``limit``.

    Raises:
        NDFLimitError: the file is larger than ``limit`` (default ``LIMITS['max_file_bytes']``).
    """
    limit = LIMITS["max_file_bytes"] if limit is None else limit
    with open_url(location, "rb", **storage_options) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NDFLimitError(f"file is larger than the limit of {limit} bytes", source=os.fspath(location))
    return data


#: Suffix of the temporary files :func:`write_atomic` writes next to their final name
#: (``.<name>.<pid>.ndf-tmp``); a killed writer may leave one behind, never a partial final file.
TMP_SUFFIX = ".ndf-tmp"


def write_atomic(location: str | os.PathLike, data: bytes, **storage_options: Any) -> None:
    """Write a whole file so that ``location`` never holds a partial one.

    A local path (or ``file://`` URL) is written to a temporary sibling, flushed to disk and
    ``os.replace``'d into place. Other URLs are written with one ``pipe_file`` call: on S3 a
    single PUT, or a multipart upload that only becomes visible when it completes (an
    interrupted upload leaves no object). Parent folders are created.

    Args:
        location: path or fsspec URL.
        data: the file's bytes.
        storage_options: passed to fsspec for URLs.

    Raises:
        OSError: the write failed (nothing is left under ``location``'s name).
    """
    location = os.fspath(location)
    if location.startswith("file://"):
        location = location[len("file://") :]
    if is_url(location):
        import fsspec

        fs, path = fsspec.core.url_to_fs(location, **storage_options)
        fs.pipe_file(path, bytes(data))
        return
    folder, name = os.path.split(os.path.abspath(location))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, location)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """The base with ``base_hash`` if this process has loaded or registered it, else ``None``."""
    with _lock:
        return _bases_by_hash.get(base_hash)


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

    Looks for ``<location>/<hash hex>.ndfbase`` in order.

    Raises:
        NDFBaseError: no location holds it (the message lists where it looked).
    """
    from .errors import NDFBaseError

    known = cached_base(base_hash)
    if known is not None:
        return known
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
