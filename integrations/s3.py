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

Transient failures (connection resets, timeouts, HTTP 500/503 that the client library's
own retries did not absorb) are retried a bounded number of times with exponential
backoff, each retry logged (logger ``ndf_datasets.integrations.s3``, level WARNING):
opening a shard by :func:`retry_transient`, and reading it by :class:`ResumableReader`,
which reopens the object and continues at the byte where the stream broke (the object's
ETag must not change meanwhile). Missing files and permission errors fail at once. When
the attempts run out, :class:`StorageRetryError` names the URL, the operation (and byte
offset), the attempts, the time spent and the last error.
"""

from __future__ import annotations

import copy
import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

__all__ = [
    "DEFAULT_SCHEMES",
    "FsspecOpener",
    "ResumableReader",
    "StorageRetryError",
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
#: errno values of transient failures; EBUSY and EREMOTEIO are what s3fs raises for HTTP 503
#: (SlowDown) and 500 (InternalError) once its own retries are spent
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE, errno.EAGAIN, errno.EBUSY,
    getattr(errno, "EREMOTEIO", 121),
}  # fmt: skip
#: transient exception classes of the HTTP stacks under fsspec, by name (no import needed)
_TRANSIENT_NAMES = {
    "IncompleteRead", "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
    "FSTimeoutError", "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
    "ConnectionClosedError", "ResponseStreamingError", "ProtocolError",
}  # fmt: skip
logger = logging.getLogger(__name__)
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


class StorageRetryError(ConnectionError):
    """Transient storage errors outlasted every retry.

    Attributes:
        url: the object.
        what: the operation (``"opening"``, ``"reading at byte N"``).
        attempts: how many attempts were made.
        elapsed_s: seconds from the first attempt to giving up.
    """

    def __init__(self, url: str, what: str, attempts: int, elapsed_s: float, last: BaseException):
        self.url, self.what, self.attempts, self.elapsed_s = url, what, attempts, elapsed_s
        super().__init__(
            f"{url}: {what} failed after {attempts} attempts over {elapsed_s:.1f} s; "
            f"last error: {type(last).__name__}: {last}"
        )

    def __reduce__(self):
        return (_rebuild_retry_error, (self.url, self.what, self.attempts, self.elapsed_s, str(self)))


def _rebuild_retry_error(url: str, what: str, attempts: int, elapsed_s: float, text: str) -> StorageRetryError:
    err = StorageRetryError.__new__(StorageRetryError)
    ConnectionError.__init__(err, text)
    err.url, err.what, err.attempts, err.elapsed_s = url, what, attempts, elapsed_s
    return err


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StorageRetryError):
        return False  # already retried below: do not multiply the attempts
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    try:
        from botocore.exceptions import HTTPClientError
    except ImportError:
        return False
    return isinstance(exc, HTTPClientError)


def retry_transient(fn: Callable[[], T], attempts: int = 3, backoff_s: float = 0.5, what: str = "") -> T:
    """Call ``fn()``, retrying transient errors up to ``attempts`` times in all.

    Waits ``backoff_s``, ``2 * backoff_s``, ... between attempts (each wait is logged).
    Errors that retrying can not fix (missing file, permission denied, anything not
    connection-like) are raised at once.

    Args:
        fn: the operation.
        attempts: total number of calls, at least 1.
        backoff_s: first wait in seconds.
        what: ``"<operation> <url>"``, named in the log and in the error after the last attempt.

    Raises:
        StorageRetryError: a transient error on every attempt (``from`` the last one).
        Exception: ``fn``'s error at once when it is not transient.

    Returns:
        ``fn()``'s result.
    """
    attempts = max(1, int(attempts))
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not _is_transient(exc):
                raise
            if attempt + 1 >= attempts:
                url = what.split(" ", 1)[1] if " " in what else what or "<operation>"
                op = what.split(" ", 1)[0] if " " in what else "operation"
                raise StorageRetryError(url, op, attempt + 1, time.monotonic() - start, exc) from exc
            wait = backoff_s * (2**attempt)
            logger.warning("%s: %s: %s; retry %d of %d in %.2f s", what or "operation", type(exc).__name__, exc,
                           attempt + 1, attempts - 1, wait)  # fmt: skip
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


class ResumableReader:
    """A read-only stream that survives transient failures by reopening and seeking.

    On a transient error while reading, it waits (``backoff_s``, doubled per retry), reopens
    the object with ``open_fn``, seeks to the byte where the stream broke and reads on, up to
    ``attempts`` tries per failure. The object's ETag (when the filesystem reports one) must
    be the same after reopening, so a shard replaced mid-read is an error, never a splice.

    Args:
        open_fn: opens the object (a fresh file object positioned at 0, with ``seek``).
        url: the object, for messages.
        attempts: tries per failure, at least 1.
        backoff_s: first wait in seconds.

    Raises (from :meth:`read`):
        StorageRetryError: the failure outlasted the attempts (names URL and byte offset).
        OSError: the object changed while being read.
    """

    def __init__(self, open_fn: Callable[[], IO[bytes]], url: str, attempts: int = 3, backoff_s: float = 0.5):
        self._open = open_fn
        self.url = url
        self.attempts = max(1, int(attempts))
        self.backoff_s = backoff_s
        self.pos = 0
        self.retries = 0  # reopenings so far
        self.raw = open_fn()
        self.etag = _etag(self.raw)

    def read(self, n: int = -1) -> bytes:
        start = time.monotonic()
        for attempt in range(self.attempts):
            try:
                if attempt:
                    self._reopen()
                data = self.raw.read() if n is None or n < 0 else self.raw.read(n)
                self.pos += len(data)
                return data
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if attempt + 1 >= self.attempts:
                    raise StorageRetryError(
                        self.url, f"reading at byte {self.pos}", attempt + 1, time.monotonic() - start, exc
                    ) from exc
                wait = self.backoff_s * (2**attempt)
                logger.warning("reading %s at byte %d: %s: %s; retry %d of %d in %.2f s", self.url, self.pos,
                               type(exc).__name__, exc, attempt + 1, self.attempts - 1, wait)  # fmt: skip
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reopen(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - the broken stream may fail to close; it is dropped anyway
            pass
        self.retries += 1
        self.raw = self._open()
        etag = _etag(self.raw)
        if self.etag is not None and etag is not None and etag != self.etag:
            raise OSError(f"{self.url} changed while it was being read (ETag {self.etag} -> {etag})")
        self.raw.seek(self.pos)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> ResumableReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _etag(f: Any) -> str | None:
    details = getattr(f, "details", None)
    return details.get("ETag") if isinstance(details, dict) else None


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
        from ndf_datasets.codec.io import open_url

        if mode not in ("rb", "wb"):
            raise ValueError(f"{url}: unsupported mode {mode!r} (use 'rb' or 'wb')")
        options = {**storage_options_for(url), **kw}

        def open_once() -> IO[bytes]:
            return retry_transient(lambda: open_url(url, mode, **options), self.attempts, self.backoff_s, f"opening {url}")

        if mode == "wb":
            return open_once()
        return ResumableReader(open_once, url, self.attempts, self.backoff_s)

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
