"""A Google service-account key made in the test and the checks a token endpoint makes.

``make_service_account_key(token_uri)`` returns the key file's JSON (a fresh RSA key,
its ``token_uri`` pointing at a fake) and the public key; ``check_jwt_grant(body, key)``
verifies the signed JWT of a ``jwt-bearer`` grant the way Google's endpoint does
(RS256 signature, audience, scope) and returns its claims.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # the audience google-auth signs for
CLIENT_EMAIL = "builder@lamina-test.iam.gserviceaccount.com"


def make_service_account_key(token_uri: str) -> tuple[dict[str, str], rsa.RSAPublicKey]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "lamina-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return info, private.public_key()


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_jwt_grant(body: bytes, public_key: rsa.RSAPublicKey, token_uri: str) -> dict[str, Any]:
    """The claims of the grant in ``body``; AssertionError when it is not a valid one."""
    form = parse_qs(body.decode())
    assert form["grant_type"] == [JWT_GRANT], form.get("grant_type")
    header, payload, signature = form["assertion"][0].split(".")
    public_key.verify(
        _b64(signature),
        f"{header}.{payload}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )  # raises InvalidSignature
    assert json.loads(_b64(header))["alg"] == "RS256"
    claims: dict[str, Any] = json.loads(_b64(payload))
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["aud"] in (token_uri, GOOGLE_TOKEN_URI), claims
    assert "cloud-platform" in claims["scope"]
    assert claims["exp"] > time.time()
    return claims


# -- fake HTTP services --------------------------------------------------------------------


@dataclass
class FakeGoogle:
    """A fake OAuth2 token endpoint (``/token``: checks the JWT grant with ``public_key``)
    and a fake GCE metadata server (``/computeMetadata/v1/...``) on one loopback port.

    ``answer`` is the status the token endpoint gives (200, or 403 to refuse);
    ``grants`` counts the valid JWT grants, ``metadata_tokens`` the metadata token GETs."""

    public_key: rsa.RSAPublicKey | None = None
    access_token: str = "ya29.lamina-fake-token"
    answer: int = 200
    expires_in: int = 3600
    grants: int = 0
    metadata_tokens: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def token_uri(self) -> str:
        return f"http://{self.host}/token"

    def _handle(self, req: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        if req.command == "POST" and req.path == "/token":
            body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
            if self.answer != 200:
                error = {"error": "access_denied", "error_description": "the key is disabled"}
                return self.answer, {}, json.dumps(error).encode()
            assert self.public_key is not None
            try:
                check_jwt_grant(body, self.public_key, self.token_uri)
            except Exception:  # a bad signature or claim: what Google answers
                return 400, {}, json.dumps({"error": "invalid_grant"}).encode()
            self.grants += 1
            return 200, {}, self._token()
        if req.path == "/" or req.path.startswith("/computeMetadata/v1/"):  # "/": the probe
            if req.headers.get("Metadata-Flavor") != "Google":
                return 403, {}, b"missing Metadata-Flavor"
            flavor = {"Metadata-Flavor": "Google"}
            if "/token" in req.path:
                self.metadata_tokens += 1
                return 200, flavor, self._token()
            if "recursive=true" in req.path:
                info = {"email": CLIENT_EMAIL, "scopes": ["cloud-platform"], "aliases": ["default"]}
                return 200, flavor, json.dumps(info).encode()
            return 200, flavor, b""
        return 404, {}, b""

    def _token(self) -> bytes:
        token = {
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "token_type": "Bearer",
        }
        return json.dumps(token).encode()

    def start(self) -> FakeGoogle:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                status, headers, body = fake._handle(self)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._any()

            def do_POST(self) -> None:
                self._any()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
