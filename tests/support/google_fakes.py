"""A Google service-account key made in the test and the checks a token endpoint makes.

``make_service_account_key(token_uri)`` returns the key file's JSON (a fresh RSA key,
its ``token_uri`` pointing at a fake) and the public key; ``check_jwt_grant(body, key)``
verifies the signed JWT of a ``jwt-bearer`` grant the way Google's endpoint does
(RS256 signature, audience, scope) and returns its claims.
"""

from __future__ import annotations

import base64
import json
import time
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
