"""Credentials from docker's ``config.json`` and credential helpers.

Lookup order for a registry host: ``credHelpers[host]``, then an ``auths``
entry holding credentials, then ``credsStore``, then a cloud provider chosen by
the host (:mod:`lamina.registry._cloud`), else anonymous. Docker Hub
entries live under the key ``https://index.docker.io/v1/``.

Secrets never appear in messages: errors name the file, the host or the
helper, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.errors import AuthError

__all__ = [
    "DOCKER_HUB_AUTH_KEY",
    "Credential",
    "Keychain",
    "default_docker_config_dir",
    "normalize_registry",
]

_log = logging.getLogger("lamina.registry")

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """A username/password pair, an OAuth2 identity (refresh) token or a registry token."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    #: ``time.monotonic()`` after which a cloud provider's token must be fetched again
    expires_at: float | None = field(default=None, repr=False)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.monotonic() > self.expires_at - 60

    @property
    def has_basic(self) -> bool:
        return bool(self.username) and bool(self.password)

    def __repr__(self) -> str:  # never show secrets, even in debuggers and tracebacks
        return "Credential(<redacted>)"


def normalize_registry(host: str) -> str:
    """``docker.io`` / ``registry-1.docker.io`` -> ``index.docker.io``; others unchanged."""
    host = host.lower()
    return "index.docker.io" if host in _DOCKER_HUB_NAMES else host


def _auth_key_host(key: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000`` (config.json keys may be URLs)."""
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return normalize_registry(key.split("/", 1)[0])


def default_docker_config_dir(environ: Mapping[str, str]) -> Path:
    """``DOCKER_CONFIG``, else ``/kaniko/.docker`` when it exists, else ``~/.docker``."""
    configured = environ.get("DOCKER_CONFIG")
    if configured:
        return Path(configured)
    kaniko = Path("/kaniko/.docker")
    if kaniko.is_dir():
        return kaniko
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker"


class Keychain:
    """Resolves credentials for a registry host from one docker config directory."""

    def __init__(self, config_dir: Path | None, *, environ: Mapping[str, str] | None = None):
        self._config_dir = config_dir
        self._environ = dict(os.environ if environ is None else environ)
        self._config: dict[str, Any] | None = None
        self._cache: dict[str, Credential | None] = {}

    @property
    def config_path(self) -> Path | None:
        return None if self._config_dir is None else self._config_dir / "config.json"

    def _load(self) -> dict[str, Any]:
        if self._config is not None:
            return self._config
        path = self.config_path
        config: dict[str, Any] = {}
        if path is not None:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            except OSError as exc:
                raise AuthError(
                    f"cannot read docker config {path}: {exc.strerror}",
                    hint="check the permissions of the file, or point DOCKER_CONFIG elsewhere",
                ) from exc
            if text.strip():
                try:
                    loaded = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise AuthError(
                        f"docker config {path} is not valid JSON "
                        f"(line {exc.lineno}, column {exc.colno})",
                        hint="fix the file; it should look like "
                        '{"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}',
                    ) from None
                if not isinstance(loaded, dict):
                    raise AuthError(
                        f"docker config {path} must hold a JSON object",
                        hint='expected {"auths": {...}, "credHelpers": {...}}',
                    )
                config = loaded
        self._config = config
        return config

    def resolve(self, registry: str) -> Credential | None:
        """Credentials for ``registry`` (``host[:port]``), or None for anonymous access."""
        host = normalize_registry(registry)
        cached = self._cache.get(host)
        if host not in self._cache or (cached is not None and cached.expired):
            self._cache[host] = self._resolve(host)
        return self._cache[host]

    def _resolve(self, host: str) -> Credential | None:
        config = self._load()
        server_url = DOCKER_HUB_AUTH_KEY if host == "index.docker.io" else host

        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _auth_key_host(str(key)) == host and isinstance(helper, str) and helper:
                    return self._from_helper(helper, server_url, host)

        auths = config.get("auths")
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if _auth_key_host(str(key)) != host or not isinstance(entry, dict):
                    continue
                cred = self._from_entry(entry, host)
                if cred is not None:
                    _log.debug("using credentials from %s for %s", self.config_path, host)
                    return cred

        store = config.get("credsStore")
        stored = (
            self._from_helper(store, server_url, host) if isinstance(store, str) and store else None
        )
        if stored is not None:
            return stored
        from lamina.registry._cloud import cloud_credential  # kaniko: cloud helpers come last

        cloud = cloud_credential(host, self._environ)
        if cloud is not None:
            return cloud
        _log.debug("no credentials for %s: anonymous access", host)
        return None

    def _from_entry(self, entry: Mapping[str, Any], host: str) -> Credential | None:
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if ":" not in decoded:
                raise AuthError(
                    f"the 'auth' value for {host} in {self.config_path} is not "
                    "base64 of 'username:password'",
                    hint="regenerate it with: printf 'user:password' | base64 -w0",
                )
            username, password = decoded.split(":", 1)
        identity = str(entry.get("identitytoken") or "")
        registry_token = str(entry.get("registrytoken") or "")
        if not (username or password or identity or registry_token):
            return None
        return Credential(
            username=username,
            password=password,
            identity_token=identity,
            registry_token=registry_token,
        )

    def _from_helper(self, helper: str, server_url: str, host: str) -> Credential | None:
        program = f"docker-credential-{helper}"
        try:
            proc = subprocess.run(
                [program, "get"],
                input=server_url.encode(),
                capture_output=True,
                timeout=_HELPER_TIMEOUT,
                env=self._environ,
                check=False,
            )
        except FileNotFoundError:
            raise AuthError(
                f"credential helper {program} (configured for {host} in "
                f"{self.config_path}) is not on PATH",
                hint=f"install {program} or remove it from credHelpers/credsStore",
            ) from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuthError(
                f"credential helper {program} failed for {host}: {type(exc).__name__}",
                hint=f"run 'echo {server_url} | {program} get' to see what goes wrong",
            ) from None
        stdout = proc.stdout.decode("utf-8", errors="replace").strip()
        if proc.returncode != 0:
            # protocol: "credentials not found in native keychain" means anonymous
            if "credentials not found" in stdout.lower():
                _log.debug("%s has no credentials for %s", program, host)
                return None
            raise AuthError(
                f"credential helper {program} exited with status {proc.returncode} for {host}",
                hint=f"run 'echo {server_url} | {program} get' to see what goes wrong",
            )
        try:
            answer = json.loads(stdout)
            username = str(answer.get("Username") or "")
            secret = str(answer.get("Secret") or "")
        except (json.JSONDecodeError, AttributeError):
            raise AuthError(
                f"credential helper {program} answered for {host} with something "
                "that is not the credential-helper JSON",
                hint='it must print {"ServerURL": ..., "Username": ..., "Secret": ...}',
            ) from None
        if not secret:
            return None
        _log.debug("using credentials from %s for %s", program, host)
        if username == "<token>":
            return Credential(identity_token=secret)
        return Credential(username=username, password=secret)
