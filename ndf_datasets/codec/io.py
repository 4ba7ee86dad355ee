"""Reading bytes from paths and URLs, and writing files atomically (stdlib; fsspec for URLs).

Every open of NDF data (local path, ``file://``, ``s3://``, any fsspec URL) goes through
:func:`open_url` / :func:`read_url`, so remote-storage logic lives in one place. ``fsspec`` is
imported only when a URL with a scheme is opened. The per-process cache of shared bases that
reads through these is :mod:`ndf_datasets.codec.bases`.
"""

from __future__ import annotations

import os
from typing import IO, Any

from .errors import NDFLimitError
from .format import LIMITS

__all__ = ["open_url", "read_url", "is_url", "TMP_SUFFIX", "write_atomic"]


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
