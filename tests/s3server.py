"""A local S3 for tests: a moto server on 127.0.0.1 (random free port) and throw-away buckets.

Generic: nothing here knows about NDF, WebDataset or HF datasets. Use the fixtures by
importing them into a test module (or list this module in ``pytest_plugins``)::

    from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401  (pytest fixtures)

    def test_x(s3_bucket):
        fs = s3_bucket.filesystem()                     # an s3fs.S3FileSystem on the server
        fs.pipe(s3_bucket.path("a.bin"), b"...")
        fsspec.open(s3_bucket.url("a.bin"), **s3_bucket.storage_options)

* ``s3_server`` (session): the endpoint URL, ``http://127.0.0.1:<port>``.
* ``s3_env`` (function): dummy AWS credentials, region and ``NO_PROXY`` in ``os.environ``
  (restored afterwards); real AWS config files are hidden so nothing reaches real AWS.
* ``s3_bucket`` (function): a new, uniquely named bucket (an :class:`S3Bucket`), emptied and
  deleted after the test.

Every wait is bounded; the server listens on the loopback interface only.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = [
    "DUMMY_ENV",
    "S3Bucket",
    "create_bucket",
    "s3_bucket",
    "s3_env",
    "s3_server",
    "start_moto_server",
    "stop_moto_server",
]

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

#: Environment for a client of the local server (``None``: variable removed).
DUMMY_ENV: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": None,
    "AWS_SECURITY_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
    "AWS_ENDPOINT_URL": None,
    "AWS_ENDPOINT_URL_S3": None,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _bounded(fn: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Run ``fn`` in a daemon thread; fail if it has not finished after ``timeout_s``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001  (re-raised by the caller below)
            errors.append(exc)

    thread = threading.Thread(target=target, name=what, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f} s")
    if errors:
        raise RuntimeError(f"{what} failed: {errors[0]!r}") from errors[0]


def start_moto_server(timeout_s: float = START_TIMEOUT_S, quiet: bool = True) -> tuple[Any, str]:
    """Start a moto S3 server on 127.0.0.1 and a free port.

    Args:
        timeout_s: how long to wait for it to listen.
        quiet: do not log every request (sets the ``werkzeug`` logger to WARNING).

    Raises:
        RuntimeError: it did not start in time.

    Returns:
        The ``ThreadedMotoServer`` and its endpoint URL ``http://127.0.0.1:<port>``.
    """
    from moto.server import ThreadedMotoServer

    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    _bounded(server.start, timeout_s, "starting the moto server")
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def stop_moto_server(server: Any, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a server from :func:`start_moto_server`, waiting at most ``timeout_s``."""
    _bounded(server.stop, timeout_s, "stopping the moto server")


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on a (local) S3 endpoint, with the s3fs options to reach it.

    Attributes:
        name: bucket name.
        endpoint_url: ``http://127.0.0.1:<port>``.
        key, secret, region: dummy credentials and region.
    """

    name: str
    endpoint_url: str
    key: str = "testing"
    secret: str = "testing"
    region: str = "us-east-1"
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def storage_options(self) -> dict[str, Any]:
        """``s3fs.S3FileSystem`` / ``fsspec.open`` keyword arguments for this endpoint."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
            **self._extra,
        }

    def path(self, key: str = "") -> str:
        """``bucket/key``, the form s3fs methods take."""
        return f"{self.name}/{key.lstrip('/')}" if key else self.name

    def url(self, key: str = "") -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.path(key)}"

    def filesystem(self) -> Any:
        """A fresh (uncached) ``s3fs.S3FileSystem`` for this endpoint."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.storage_options)


def create_bucket(endpoint_url: str, name: str | None = None, prefix: str = "test") -> S3Bucket:
    """Create a bucket (default: ``<prefix>-<random hex>``) on ``endpoint_url``.

    Raises:
        OSError: the server refused.
    """
    bucket = S3Bucket(name or f"{prefix}-{uuid.uuid4().hex[:12]}", endpoint_url)
    # no CreateBucketConfiguration: us-east-1 takes none (s3fs.mkdir would send one)
    bucket.filesystem().call_s3("create_bucket", Bucket=bucket.name)
    return bucket


def _empty_and_delete(bucket: S3Bucket) -> None:
    fs = bucket.filesystem()
    try:
        keys = fs.find(bucket.name)
        if keys:
            fs.rm(keys)
        fs.rmdir(bucket.name)
    except OSError:
        pass  # best effort: the server's memory goes away with the process anyway


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the session; yields its endpoint URL."""
    pytest.importorskip("moto.server")
    server, endpoint = start_moto_server()
    try:
        yield endpoint
    finally:
        stop_moto_server(server)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Dummy AWS credentials/region, no proxy for 127.0.0.1; restored after the test."""
    for name, value in DUMMY_ENV.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, ",".join(v for v in (current, HOST, "localhost") if v))
    return dict(DUMMY_ENV)


@pytest.fixture
def s3_bucket(s3_server: str, s3_env: dict) -> Iterator[S3Bucket]:
    """A new empty bucket on the session's server; deleted after the test."""
    pytest.importorskip("s3fs")
    bucket = create_bucket(s3_server)
    try:
        yield bucket
    finally:
        _empty_and_delete(bucket)
