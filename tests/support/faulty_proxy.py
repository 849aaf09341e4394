"""A loopback HTTP proxy in front of a plain-HTTP registry that injects faults.

    with FaultyProxy(registry.base_url) as proxy:
        proxy.add_fault(Fault(path=r"/blobs/sha256:", action="status", status=503,
                              headers={"Retry-After": "0"}, times=2))
        ... talk to proxy.host instead of registry.host ...

Actions:
* ``status``   answer with ``status`` (and ``headers``) without asking the registry;
* ``reset``    close the connection without answering;
* ``cut``      forward, send the headers and half of the body (or ``cut_at`` bytes of
  it), then close;
* ``corrupt``  forward, flip one byte of the body;
* ``redirect`` answer 307 to ``/_redirected/<path>``, which the proxy serves
  from the registry (like a registry redirecting blob GETs to storage).

``proxy.ignore_ranges = True`` drops ``Range`` headers (the registry then answers 200
with the whole blob, as a server without range support does). Every request is recorded
in ``proxy.requests`` as ``(method, path)`` and its ``Range`` header (or None) in
``proxy.ranges``.
Bodies are buffered: this is for small test images only.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["status", "reset", "cut", "corrupt", "redirect"]
_REDIRECT_PREFIX = "/_redirected"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "content-length",
    }
)


@dataclass(slots=True, kw_only=True)
class Fault:
    """Apply ``action`` to the next ``times`` requests matching ``method`` and ``path``."""

    path: str
    action: Action
    method: str | None = None
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: for ``cut``: how many bytes of the body to send (None: half)
    cut_at: int | None = None
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times >= 0 and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.path, path) is not None


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError("FaultyProxy fronts plain-HTTP registries only")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[str | None] = []
        self.ignore_ranges = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _pick(self, method: str, path: str, range_: str | None = None) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            self.ranges.append(range_)
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            return b"".join(chunks)
        length = int(h.headers.get("Content-Length", "0") or 0)
        return h.rfile.read(length) if length else b""

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        body = self._read_body(h)
        range_ = h.headers.get("Range")
        fault = None if path.startswith(_REDIRECT_PREFIX) else self._pick(method, path, range_)
        if path.startswith(_REDIRECT_PREFIX):
            with self._lock:
                self.requests.append((method, path))
                self.ranges.append(range_)
            path = path[len(_REDIRECT_PREFIX) :]
        if fault is not None and fault.action == "reset":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.action in ("status", "redirect"):
            headers = dict(fault.headers)
            status = fault.status
            payload = b""
            if fault.action == "redirect":
                status = 307
                headers["Location"] = f"{self.base_url}{_REDIRECT_PREFIX}{path}"
            else:
                payload = fault.body or (
                    b'{"errors":[{"code":"INJECTED","message":"injected fault %d"}]}' % status
                )
                headers.setdefault("Content-Type", "application/json")
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if method != "HEAD":
                h.wfile.write(payload)
            return

        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            fwd = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
            if self.ignore_ranges:
                fwd = {k: v for k, v in fwd.items() if k.lower() != "range"}
            fwd["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            headers_out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            status = resp.status
        finally:
            conn.close()
        declared = len(data)
        if method == "HEAD":
            declared = int(resp.getheader("Content-Length", "0") or 0)
        if fault is not None and fault.action == "corrupt" and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        h.send_response(status)
        for k, v in headers_out:
            h.send_header(k, v)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        if method == "HEAD":
            return
        if fault is not None and fault.action == "cut":
            h.wfile.write(data[: len(data) // 2 if fault.cut_at is None else fault.cut_at])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(data)
