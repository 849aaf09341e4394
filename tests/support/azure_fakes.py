"""Fake Entra ID (AAD) and ACR token services over TLS on loopback, and a CONNECT proxy.

:class:`FakeAzure` is one HTTPS server (a test CA; the certificate also names the
registry host) answering what azure-identity and lamina ask:

* ``GET /<tenant>/v2.0/.well-known/openid-configuration`` -- the authority's metadata;
* ``POST /<tenant>/oauth2/v2.0/token`` -- client credentials (checks the client id and
  the secret or the federated token as client assertion), answers ``aad_token``;
* ``POST /oauth2/exchange`` -- ACR's exchange (checks ``grant_type``, ``service`` and the
  AAD token), answers ``refresh_token``; ``exchange_status`` makes it refuse.

:class:`ConnectProxy` is an ``HTTPS_PROXY`` that tunnels every ``CONNECT`` to the fake, so
``https://<registry>.azurecr.io/oauth2/exchange`` reaches it by its real name.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from tests.support.registry import make_tls_material

TENANT = "lamina-tenant"
CLIENT_ID = "lamina-client"
CLIENT_SECRET = "lamina-client-secret"
#: what AKS writes to AZURE_FEDERATED_TOKEN_FILE (a service-account JWT; opaque here)
FEDERATED_TOKEN = "eyJfake.federated.serviceaccount-token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class FakeAzure:
    workdir: Path
    registry: str
    aad_token: str = "aad-fake-access-token"
    refresh_token: str = "acr-fake-refresh-token"
    exchange_status: int = 200
    token_requests: int = 0
    exchanges: int = 0
    ca: Path = field(init=False)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _json(self, status: int, obj: object) -> tuple[int, bytes]:
        return status, json.dumps(obj).encode()

    def _handle(self, req: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        base = f"https://{self.host}/{TENANT}"
        if req.path.startswith(f"/{TENANT}/v2.0/.well-known/openid-configuration"):
            return self._json(200, {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": None,
            })  # fmt: skip
        if req.path == f"/{TENANT}/oauth2/v2.0/token":
            federated = (
                form.get("client_assertion_type") == JWT_BEARER
                and form.get("client_assertion") == FEDERATED_TOKEN
            )
            secret_ok = form.get("client_secret") == CLIENT_SECRET
            if form.get("client_id") != CLIENT_ID or not (federated or secret_ok):
                return self._json(401, {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                })  # fmt: skip
            self.token_requests += 1
            return self._json(200, {
                "access_token": self.aad_token, "token_type": "Bearer", "expires_in": 3600,
            })  # fmt: skip
        if req.path == "/oauth2/exchange":
            if self.exchange_status != 200:
                return self._json(self.exchange_status, {"errors": [{"code": "UNAUTHORIZED"}]})
            expected = {"grant_type": "access_token", "service": self.registry}
            if any(form.get(k) != v for k, v in expected.items()):
                return self._json(400, {"errors": [{"code": "BAD_REQUEST"}]})
            if form.get("access_token") != self.aad_token:
                return self._json(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            self.exchanges += 1
            return self._json(200, {"refresh_token": self.refresh_token})
        return 404, b"{}"

    def start(self) -> FakeAzure:
        self.ca, cert, key = make_tls_material(self.workdir, dns_names=[self.registry])
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, out = fake._handle(self, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self) -> None:
                self._any()

            def do_POST(self) -> None:
                self._any()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class ConnectProxy:
    """An HTTP proxy that answers every ``CONNECT host:port`` with a tunnel to ``target``."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.tunnels: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            if not line.startswith("CONNECT "):
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(line.split()[1])
            with socket.create_connection(self._target) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pair = {client: upstream, upstream: client}
                while True:
                    ready, _, _ = select.select(list(pair), [], [], 30)
                    if not ready:
                        return
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        pair[sock].sendall(data)

    def close(self) -> None:
        # shutdown() wakes the accept() blocked in _serve; a bare close() does not, and the
        # thread's next accept() could then take the fd number of a later test's listening
        # socket and answer its clients with 405 (seen: a git server's submodule clone)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._listener.close()
