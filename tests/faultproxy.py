"""A fault-injecting HTTP proxy on 127.0.0.1, for putting S3 clients through network failures.

Generic: nothing here knows about NDF. Point an S3 client's ``endpoint_url`` at
:attr:`FaultProxy.url`; every request is forwarded to the upstream server (e.g. the moto
server of :mod:`tests.s3server`) unless the :data:`Plan` says to fail it::

    with FaultProxy(upstream_url, plan=every_nth(3, Fault("status", status=503))) as proxy:
        client(endpoint_url=proxy.url) ...
        proxy.log          # [(time, method, path, fault kind or "ok"), ...]

Faults (:class:`Fault`):

* ``reset``      -- the connection is reset (TCP RST) before any response byte;
* ``reset_body`` -- status line, headers and part of the body, then a reset;
* ``status``     -- an S3-style XML error with the given status (500 ``InternalError``,
  503 ``SlowDown``) and no forwarding;
* ``slow``       -- the real response, its body sent in ``chunks`` pieces ``delay_s`` apart.

The proxy listens on the loopback interface only; one thread per connection; every socket
operation has a timeout, and :meth:`FaultProxy.close` waits a bounded time.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "Plan", "Request", "every_nth", "random_faults", "always"]

HOST = "127.0.0.1"
SOCKET_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Fault:
    """What to do to one request (see the module docstring)."""

    kind: str  # "reset" | "reset_body" | "status" | "slow"
    status: int = 503
    delay_s: float = 0.05
    chunks: int = 4
    fraction: float = 0.5  # of the body sent before a reset_body


@dataclass(frozen=True)
class Request:
    """What the plan sees of a request: its method, path (with query) and ordinal numbers."""

    method: str
    path: str
    index: int  # 0-based, over all requests
    index_for_path: int  # 0-based, over requests with this method and path


Plan = Callable[[Request], Fault | None]


def every_nth(n: int, fault: Fault, methods: tuple[str, ...] = ("GET",), match: str = "") -> Plan:
    """Fail every ``n``-th request (1-based: requests n, 2n, ...) whose path contains ``match``."""

    def plan(req: Request) -> Fault | None:
        if req.method in methods and match in req.path and (req.index + 1) % n == 0:
            return fault
        return None

    return plan


def random_faults(rate: float, faults: list[Fault], seed: int = 0, methods: tuple[str, ...] = ("GET", "HEAD"),
                  match: str = "") -> Plan:  # fmt: skip
    """Fail a seeded-random ``rate`` of matching requests with a fault drawn from ``faults``.

    A request that failed is never failed again on the immediately following attempt at the
    same path, so a client with at least two attempts per request always gets through.
    """
    rng = random.Random(seed)
    lock = threading.Lock()
    last_failed: dict[tuple[str, str], int] = {}

    def plan(req: Request) -> Fault | None:
        if req.method not in methods or match not in req.path:
            return None
        key = (req.method, req.path)
        with lock:
            if last_failed.get(key) == req.index_for_path - 1:
                return None
            if rng.random() < rate:
                last_failed[key] = req.index_for_path
                return rng.choice(faults)
        return None

    return plan


def always(fault: Fault, methods: tuple[str, ...] = ("GET", "HEAD"), match: str = "") -> Plan:
    """Fail every matching request."""
    return lambda req: fault if req.method in methods and match in req.path else None


_ERRORS = {500: ("InternalError", "We encountered an internal error."), 503: ("SlowDown", "Please reduce your request rate.")}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _handle(self) -> None:
        body = self._body()
        fault = self.server.proxy._decide(self.command, self.path)
        if fault is not None and fault.kind == "reset":
            self._reset()
            return
        if fault is not None and fault.kind == "status":
            code, message = _ERRORS.get(fault.status, ("InternalError", "error"))
            payload = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>fault</RequestId></Error>"
            ).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        status, headers, data = self.server.proxy._forward(self.command, self.path, self.headers, body)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        if self.command == "HEAD":  # the size of the object, not of this (empty) body
            self.send_header("Content-Length", dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD" or not data:
            return
        if fault is not None and fault.kind == "reset_body":
            self.wfile.write(data[: max(1, int(len(data) * fault.fraction))])
            self.wfile.flush()
            self._reset()
            return
        if fault is not None and fault.kind == "slow":
            step = max(1, -(-len(data) // fault.chunks))
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                time.sleep(fault.delay_s)
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """Forward HTTP to ``upstream`` (``http://127.0.0.1:<port>``), failing requests per ``plan``.

    Attributes:
        url: the proxy's endpoint, ``http://127.0.0.1:<port>``.
        log: ``(monotonic time, method, path, fault kind or "ok")`` per request.
    """

    def __init__(self, upstream: str, plan: Plan | None = None):
        parts = urlsplit(upstream)
        if parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream must be on the loopback interface, got {upstream}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.plan: Plan = plan or (lambda req: None)
        self.log: list[tuple[float, str, str, str]] = []
        self._lock = threading.Lock()
        self._count = 0
        self._per_path: dict[tuple[str, str], int] = {}
        self._server = _Server((HOST, 0), _Handler)
        self._server.proxy = self
        self._server.timeout = SOCKET_TIMEOUT_S
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self.url = f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout_s: float = 10.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout_s)

    def faults(self, kind: str | None = None) -> int:
        """How many requests were failed (of one ``kind``, or all)."""
        return sum(1 for _, _, _, k in self.log if (k != "ok" if kind is None else k == kind))

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            index = self._count
            self._count += 1
            key = (method, path)
            per_path = self._per_path.get(key, 0)
            self._per_path[key] = per_path + 1
            fault = self.plan(Request(method, path, index, per_path))
            kind = "ok" if fault is None else (f"status{fault.status}" if fault.kind == "status" else fault.kind)
            self.log.append((time.monotonic(), method, path, kind))
        return fault

    def _forward(self, method: str, path: str, headers, body: bytes | None) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=SOCKET_TIMEOUT_S)
        try:
            send = {k: v for k, v in headers.items() if k.lower() not in ("transfer-encoding", "connection")}
            if body is not None:
                send["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=send)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()
