"""Object storage for WebDataset: ``s3://`` (and other fsspec URLs) through :func:`ndf_datasets.open_url`.

WebDataset 1.0 opens shards with ``webdataset.gopen.gopen``, which dispatches on the URL
scheme through the dict ``webdataset.gopen.gopen_schemes``. It has no ``s3`` entry (and
its ``gs`` entry shells out to ``gsutil``). :func:`register_gopen_schemes` adds entries that
open URLs with fsspec (``s3fs`` for ``s3://``), through the same :func:`ndf_datasets.open_url`
that every other NDF read uses, so shards, shared bases and single ``.ndf`` files are all
read by one code path with one set of storage options::

    from ndf_datasets.integrations.s3 import configure_s3, register_gopen_schemes

    register_gopen_schemes()                       # s3, s3a, gcs, abfs, az, memory
    configure_s3(endpoint_url="http://127.0.0.1:9000", key="...", secret="...")  # optional
    ds = wds.WebDataset("s3://bucket/train/shard-{000000..000099}.tar", shardshuffle=100)

Storage options come from, in order of precedence:

1. :func:`configure_s3` / :func:`configure_storage` in this process (not inherited by
   ``spawn``-started DataLoader workers; ``fork``, the Linux default, inherits them);
2. fsspec's own configuration: ``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``,
   ``FSSPEC_S3_SECRET``, ``FSSPEC_S3_ANON``... environment variables or ``~/.config/fsspec``
   (seen by every process);
3. the usual AWS chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, instance roles...).

Opening retries transient failures (connection errors, timeouts) a bounded number of
times with exponential backoff; missing files and permission errors fail at once. Reads
in the middle of a stream are retried by s3fs itself.
"""

from __future__ import annotations

import copy
import errno
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

__all__ = [
    "DEFAULT_SCHEMES",
    "FsspecOpener",
    "configure_s3",
    "configure_storage",
    "register_gopen_schemes",
    "retry_transient",
    "storage_options_for",
    "url_scheme",
]

#: Schemes :func:`register_gopen_schemes` adds when WebDataset has no handler for them.
DEFAULT_SCHEMES: tuple[str, ...] = ("s3", "s3a", "gcs", "abfs", "az", "memory")

_S3_SCHEMES = ("s3", "s3a")
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN}
_lock = threading.Lock()
_options: dict[str, dict[str, Any]] = {}

T = TypeVar("T")


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case (``"s3"``), or ``""`` for a plain local path."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def configure_storage(scheme: str, **options: Any) -> None:
    """Set the fsspec storage options used for every ``<scheme>://`` URL opened by NDF.

    Args:
        scheme: URL scheme, e.g. ``"s3"``, ``"gcs"``, ``"memory"``.
        **options: fsspec/filesystem keyword arguments; none clears the scheme's options.
    """
    with _lock:
        if options:
            _options[scheme.lower()] = copy.deepcopy(options)
        else:
            _options.pop(scheme.lower(), None)


def configure_s3(
    endpoint_url: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    *,
    anon: bool | None = None,
    region: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Set the storage options for ``s3://`` and ``s3a://`` URLs (s3fs keyword arguments).

    Calling it with no arguments returns to s3fs defaults (environment / AWS config).

    Args:
        endpoint_url: a non-AWS server (MinIO, Ceph, moto...), e.g. ``"http://127.0.0.1:9000"``.
        key: access key id.
        secret: secret access key.
        anon: ``True`` for public buckets without credentials.
        region: region name passed to the client.
        **options: any other ``s3fs.S3FileSystem`` argument (``token``, ``requester_pays``...).

    Returns:
        The options now in effect for ``s3://`` URLs.
    """
    opts: dict[str, Any] = {}
    client_kwargs: dict[str, Any] = dict(options.pop("client_kwargs", None) or {})
    if endpoint_url is not None:
        client_kwargs["endpoint_url"] = endpoint_url
    if region is not None:
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if key is not None:
        opts["key"] = key
    if secret is not None:
        opts["secret"] = secret
    if anon is not None:
        opts["anon"] = anon
    opts.update(options)
    for scheme in _S3_SCHEMES:
        configure_storage(scheme, **opts)
    return copy.deepcopy(opts)


def storage_options_for(url: str) -> dict[str, Any]:
    """The storage options configured for ``url``'s scheme (a copy; ``{}`` when none)."""
    with _lock:
        return copy.deepcopy(_options.get(url_scheme(str(url)), {}))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    try:
        from botocore.exceptions import HTTPClientError
    except ImportError:
        return False
    return isinstance(exc, HTTPClientError)


def retry_transient(fn: Callable[[], T], attempts: int = 3, backoff_s: float = 0.5, what: str = "") -> T:
    """Call ``fn()``, retrying transient errors up to ``attempts`` times in all.

    Waits ``backoff_s``, ``2 * backoff_s``, ... between attempts. Errors that retrying can
    not fix (missing file, permission denied, anything not connection-like) are raised at once.

    Args:
        fn: the operation.
        attempts: total number of calls, at least 1.
        backoff_s: first wait in seconds.
        what: a name for the operation, used in the error raised after the last attempt.

    Raises:
        Exception: ``fn``'s error, from the last attempt, or at once when not transient.

    Returns:
        ``fn()``'s result.
    """
    attempts = max(1, int(attempts))
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt + 1 >= attempts or not _is_transient(exc):
                if attempt and what and hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"{what}: gave up after {attempt + 1} attempts")
                raise
            time.sleep(backoff_s * (2**attempt))
    raise AssertionError("unreachable")  # pragma: no cover


class FsspecOpener:
    """A ``webdataset.gopen`` scheme handler that opens URLs with :func:`ndf_datasets.open_url`.

    Picklable, so it can live in ``gopen_schemes`` of DataLoader worker processes.

    Args:
        attempts: total opening attempts for transient errors.
        backoff_s: first wait between attempts, doubled each time.
    """

    def __init__(self, attempts: int = 3, backoff_s: float = 0.5):
        self.attempts = attempts
        self.backoff_s = backoff_s

    def __call__(self, url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
        """Open ``url`` for reading (``"rb"``) or writing (``"wb"``).

        Args:
            url: an fsspec URL such as ``s3://bucket/shard-000000.tar``.
            mode: ``"rb"`` or ``"wb"``.
            bufsize: ignored (fsspec filesystems buffer by themselves).
            **kw: extra storage options, over the configured ones.

        Raises:
            ValueError: an unsupported mode.
            FileNotFoundError: no such object.

        Returns:
            A binary file object.
        """
        from ndf_datasets.io import open_url

        if mode not in ("rb", "wb"):
            raise ValueError(f"{url}: unsupported mode {mode!r} (use 'rb' or 'wb')")
        options = {**storage_options_for(url), **kw}
        return retry_transient(lambda: open_url(url, mode, **options), self.attempts, self.backoff_s, f"opening {url}")

    def __repr__(self) -> str:
        return f"FsspecOpener(attempts={self.attempts}, backoff_s={self.backoff_s})"


def register_gopen_schemes(
    schemes: Iterable[str] | None = None, attempts: int = 3, backoff_s: float = 0.5
) -> list[str]:
    """Let WebDataset open fsspec URLs (``s3://`` ...) through :func:`ndf_datasets.open_url`.

    Idempotent. With ``schemes=None`` it adds the :data:`DEFAULT_SCHEMES` WebDataset has no
    handler for and leaves its own handlers (``http``, ``gs`` via gsutil, ``hf``, ``pipe``)
    alone; schemes named explicitly (``["gs"]`` to use gcsfs) replace WebDataset's handler.
    Writing works too: ``wds.ShardWriter("s3://bucket/shard-%06d.tar")`` streams to S3.

    Args:
        schemes: URL schemes to route through fsspec.
        attempts: total opening attempts for transient errors.
        backoff_s: first wait between attempts.

    Returns:
        The schemes now handled by fsspec.
    """
    import importlib

    # ``webdataset.gopen`` is both a module and (re-exported) a function: get the module
    gopen = importlib.import_module("webdataset.gopen")
    explicit = schemes is not None
    done = []
    for scheme in DEFAULT_SCHEMES if schemes is None else schemes:
        scheme = scheme.lower()
        current = gopen.gopen_schemes.get(scheme)
        if current is not None and not isinstance(current, FsspecOpener) and not explicit:
            continue
        gopen.gopen_schemes[scheme] = FsspecOpener(attempts, backoff_s)
        done.append(scheme)
    return done
