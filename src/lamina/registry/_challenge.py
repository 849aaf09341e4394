"""``WWW-Authenticate`` challenges and the Bearer token cache."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Challenge", "TokenCache", "parse_challenge", "parse_token_response"]

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s"]+))\s*(?:,|$)')


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One auth challenge: ``scheme`` is lower-case (``basic`` / ``bearer``)."""

    scheme: str
    params: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (first challenge only)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            break  # a second challenge or garbage: keep what we have
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value or ""
        pos = match.end()
    return Challenge(scheme=scheme.lower(), params=MappingProxyType(params))


def parse_token_response(body: Any) -> tuple[str, float]:
    """(token, lifetime in seconds) from a token endpoint's JSON; raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("token response is not a JSON object")
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token response has no token")
    expires = body.get("expires_in")
    lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 60.0
    return token, lifetime


class TokenCache:
    """Bearer tokens per scope set, dropped a little before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def get(self, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            hit = self._tokens.get(scopes)
            if hit is None:
                return None
            token, expires_at = hit
            if time.monotonic() >= expires_at:
                del self._tokens[scopes]
                return None
            return token

    def put(self, scopes: tuple[str, ...], token: str, lifetime: float) -> None:
        with self._lock:
            margin = min(10.0, lifetime / 4)
            self._tokens[scopes] = (token, time.monotonic() + lifetime - margin)

    def drop(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)
