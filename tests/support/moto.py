"""moto in server mode on loopback: S3, ECR and STS for the AWS tests.

``start_moto()`` runs :class:`moto.server.ThreadedMotoServer` on a free
loopback port; :meth:`MotoServer.environ` is the environment a lamina process
needs to reach it (``AWS_ENDPOINT_URL``, test keys, a region, ``NO_PROXY`` for
loopback so a proxy set for the registry does not carry the AWS calls).

moto's ``GetAuthorizationToken`` answers base64 ``AWS:<account>-auth-token``:
:data:`ECR_USERNAME` / :func:`ecr_password` are that pair, for an htpasswd
registry that stands in for ECR.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ECR_USERNAME = "AWS"


def ecr_password(account: str = ACCOUNT) -> str:
    return f"{account}-auth-token"


@dataclass(frozen=True, slots=True)
class MotoServer:
    endpoint: str

    def environ(self, **extra: str) -> dict[str, str]:
        """Variables for a process talking to this server with static test keys."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            **extra,
        }

    def client(self, service: str, *, verify: str | None = None) -> Any:
        """A boto3 client on this server (test set-up: buckets, objects, roles); ``verify``:
        the CA file of an HTTPS server."""
        import boto3

        return boto3.client(
            service,
            verify=verify,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def start_moto(*, tls: tuple[Path, Path] | None = None) -> Iterator[MotoServer]:
    """A moto server on loopback for the duration of the ``with``; HTTPS with the
    ``(certificate, key)`` pair ``tls``."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    if tls is not None:
        server._server_entry = partial(_serve_tls, server, tls)  # type: ignore[method-assign]
    server.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield MotoServer(endpoint=f"{scheme}://127.0.0.1:{port}")
    finally:
        server.stop()


def _serve_tls(server: Any, tls: tuple[Path, Path]) -> None:
    """ThreadedMotoServer's thread body with an SSL context (moto's own app and handler)."""
    import ssl

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls[0]), str(tls[1]))
    app = DomainDispatcherApplication(create_backend_app)
    server._server = make_server(
        server._ip_address,
        server._port,
        app,
        True,
        request_handler=MotoRequestHandler,
        ssl_context=ctx,
    )
    server._server_ready_event.set()
    server._server.serve_forever()
