"""Credentials from docker's ``config.json`` and credential helpers.

Lookup order for a registry host: ``credHelpers[host]``, then an ``auths``
entry holding credentials, then ``credsStore``, else anonymous. Docker Hub
entries live under the key ``https://index.docker.io/v1/``. When none of them
has credentials, :mod:`._cloud` asks GitLab CI's variables and the host's
cloud provider (ECR, Google, ACR), whose credentials are fetched again when they expire.

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
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.errors import AuthError

__all__ = [
    "CONFIG_FILE",
    "DOCKER_HUB_AUTH_KEY",
    "SECRET_FILE",
    "Credential",
    "CredentialSource",
    "DockerConfigLocation",
    "Keychain",
    "default_docker_config",
    "default_docker_config_dir",
    "normalize_registry",
]

_log = logging.getLogger("lamina.registry")

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_HELPER_TIMEOUT = 60.0
#: docker's file, and the key of a ``kubernetes.io/dockerconfigjson`` secret
CONFIG_FILE = "config.json"
SECRET_FILE = ".dockerconfigjson"
#: a docker config is a few kilobytes; anything far bigger is not one
_MAX_CONFIG_BYTES = 4 << 20


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


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialSource:
    """What the keychain knows about one registry's credentials (no secrets)."""

    registry: str
    #: credentials were found for the registry
    found: bool
    #: where they came from: the config file, or a credential helper and its file
    source: str = ""
    #: the docker config file that was read, if any
    config_path: Path | None = None
    #: the files looked for, in order
    searched: tuple[Path, ...] = ()

    def summary(self) -> str:
        if self.found:
            return f"credentials for {self.registry} from {self.source}"
        if self.config_path is not None:
            return f"no credentials for {self.registry} in {self.config_path}"
        if self.searched:
            names = ", ".join(str(p) for p in self.searched)
            return f"no credentials: no docker config found (looked for {names})"
        return "no credentials: no docker config directory"


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
    return _home(environ) / ".docker"


def _home(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME")
    return Path(home) if home else Path.home()


@dataclass(frozen=True, slots=True)
class DockerConfigLocation:
    """Where credentials are looked for, first existing file wins.

    ``directory/config.json``, then ``directory/.dockerconfigjson`` (the key of a
    ``kubernetes.io/dockerconfigjson`` secret mounted whole at the directory), then
    ``fallback`` (``$HOME/.docker/config.json``, where older CI recipes write it).
    """

    directory: Path | None
    fallback: Path | None = None

    def candidates(self) -> tuple[Path, ...]:
        found: list[Path] = []
        if self.directory is not None:
            found += [self.directory / CONFIG_FILE, self.directory / SECRET_FILE]
        if self.fallback is not None and self.fallback not in found:
            found.append(self.fallback)
        return tuple(found)


def default_docker_config(environ: Mapping[str, str]) -> DockerConfigLocation:
    """The executor's lookup: :func:`default_docker_config_dir`, then ``~/.docker/config.json``."""
    return DockerConfigLocation(
        default_docker_config_dir(environ), _home(environ) / ".docker" / CONFIG_FILE
    )


def credential_from_entry(entry: Mapping[str, Any], host: str, *, where: str) -> Credential | None:
    """The credential an ``auths`` entry of a docker config holds for ``host`` (``where``:
    the file or variable it came from, for messages), or None when it holds none."""
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
                f"the 'auth' value for {host} in {where} is not base64 of 'username:password'",
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


class Keychain:
    """Resolves credentials for a registry host from one docker config file.

    ``config`` is a :class:`DockerConfigLocation` (or a bare directory: its
    ``config.json``, then its ``.dockerconfigjson``); the first candidate that
    exists is read, once, on the first lookup.
    """

    def __init__(
        self,
        config: DockerConfigLocation | Path | None,
        *,
        environ: Mapping[str, str] | None = None,
    ):
        self._location = (
            config if isinstance(config, DockerConfigLocation) else DockerConfigLocation(config)
        )
        self._environ = dict(os.environ if environ is None else environ)
        self._config: dict[str, Any] | None = None
        self._path: Path | None = None
        self._cache: dict[str, Credential | None] = {}
        self._sources: dict[str, str] = {}
        self._lock = threading.RLock()  # endpoints resolve from several threads

    @property
    def config_path(self) -> Path | None:
        """The file credentials are read from (None: none of the candidates exists)."""
        with self._lock:
            self._load()
            return self._path

    def _load(self) -> dict[str, Any]:
        if self._config is not None:
            return self._config
        config: dict[str, Any] = {}
        candidates = self._location.candidates()
        for path in candidates:
            text = _read_config(path)
            if text is None:
                continue
            self._path = path
            if path.name == SECRET_FILE:
                _log.info(
                    "reading credentials from %s (a dockerconfigjson secret; no %s beside it)",
                    path,
                    CONFIG_FILE,
                )
            elif path != candidates[0]:
                _log.info(
                    "reading credentials from %s (no docker config in %s)",
                    path,
                    self._location.directory,
                )
            else:
                _log.debug("reading credentials from %s", path)
            config = _parse_config(path, text)
            break
        else:
            _log.debug("no docker config: none of %s exists", ", ".join(map(str, candidates)))
        self._config = config
        return config

    def describe(self, registry: str) -> CredentialSource:
        """Where the credentials for ``registry`` came from, for error messages."""
        host = normalize_registry(registry)
        found = self.resolve(registry) is not None
        return CredentialSource(
            registry=host,
            found=found,
            source=self._sources.get(host, ""),
            config_path=self._path,
            searched=self._location.candidates(),
        )

    def resolve(self, registry: str) -> Credential | None:
        """Credentials for ``registry`` (``host[:port]``), or None for anonymous access."""
        host = normalize_registry(registry)
        with self._lock:
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
                    _log.debug("using credentials from %s for %s", self._path, host)
                    self._sources[host] = str(self._path)
                    return cred

        store = config.get("credsStore")
        if isinstance(store, str) and store:
            stored = self._from_helper(store, server_url, host)
            if stored is not None:
                return stored
        from ._cloud import cloud_credential  # GitLab CI variables, cloud registries

        ambient = cloud_credential(host, self._environ)
        if ambient is not None:
            self._sources[host] = ambient[1]
            return ambient[0]
        _log.debug("no credentials for %s: anonymous access", host)
        return None

    def _from_entry(self, entry: Mapping[str, Any], host: str) -> Credential | None:
        return credential_from_entry(entry, host, where=str(self._path))

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
                f"{self._path}) is not on PATH",
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
        self._sources[host] = f"{program} (configured in {self._path})"
        if username == "<token>":
            return Credential(identity_token=secret)
        return Credential(username=username, password=secret)


def _read_config(path: Path) -> str | None:
    """The text of ``path``; None when it does not exist."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        if path.parent.exists():  # DOCKER_CONFIG names a file (often config.json itself)
            raise AuthError(
                f"the docker config directory {path.parent} is a file",
                hint="DOCKER_CONFIG names the directory holding config.json, "
                "e.g. DOCKER_CONFIG=/kaniko/.docker",
            ) from None
        return None
    except IsADirectoryError:
        raise AuthError(
            f"docker config {path} is a directory, not a file",
            hint="mount the secret's key as a file (subPath), or mount the whole secret "
            f"at {path.parent}",
        ) from None
    except OSError as exc:
        raise AuthError(
            f"cannot read docker config {path}: {exc.strerror or exc}",
            hint="check the permissions of the file, or point DOCKER_CONFIG elsewhere",
        ) from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise AuthError(
            f"docker config {path} is larger than {_MAX_CONFIG_BYTES >> 20} MiB",
            hint="point DOCKER_CONFIG at a directory holding the docker config.json",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AuthError(
            f"docker config {path} is not UTF-8 text",
            hint="it must be JSON such as "
            '{"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}',
        ) from None


def _parse_config(path: Path, text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthError(
            f"docker config {path} is not valid JSON (line {exc.lineno}, column {exc.colno})",
            hint="fix the file; it should look like "
            '{"auths": {"registry.example.com": {"auth": "<base64 user:password>"}}}',
        ) from None
    if not isinstance(loaded, dict):
        raise AuthError(
            f"docker config {path} must hold a JSON object",
            hint='expected {"auths": {...}, "credHelpers": {...}}',
        )
    return loaded
