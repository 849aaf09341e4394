"""Per-registry HTTP endpoints: scheme, TLS, User-Agent and authentication.

One :class:`Endpoint` per (registry host, purpose) where purpose is ``pull`` or
``push`` (kaniko's flags set TLS and plain-HTTP separately for both). An
endpoint pings ``/v2/`` once to learn the scheme and the auth challenge, then
adds ``Authorization`` to each request for the scopes it needs: Basic from
the keychain, or a Bearer token fetched from the challenge's realm and cached
per scope set, refreshed once on a 401.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal, TypeVar

import httpx

import lamina
from lamina.errors import AuthError, RegistryError

from ._auth import Credential, CredentialSource, Keychain, normalize_registry
from ._challenge import Challenge, TokenCache, parse_challenge, parse_token_response
from ._errors import (
    auth_error,
    error_from_response,
    error_from_transport,
    is_cert_error,
    is_tls_error,
)
from ._options import RegistryOptions
from ._tls import SystemTrustContext

__all__ = [
    "Body",
    "Endpoint",
    "Purpose",
    "RegistryTransport",
    "SystemTrustContext",
    "user_agent",
]

_log = logging.getLogger("lamina.registry")

Purpose = Literal["pull", "push"]
#: a request body: bytes, or a factory giving a fresh byte iterator (re-sendable)
Body = bytes | Iterator[bytes] | Callable[[], Iterable[bytes]] | None

_DOCKER_HUB_API = "registry-1.docker.io"
_V = TypeVar("_V")


def basic_header(cred: Credential) -> str:
    raw = f"{cred.username}:{cred.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def user_agent(suffix: str = "") -> str:
    base = f"lamina/{lamina.__version__}"
    return f"{base} {suffix}".strip() if suffix else base


def _in(registry: str, names: Iterable[str]) -> bool:
    key = normalize_registry(registry)
    return any(normalize_registry(n) == key for n in names)


def _lookup(registry: str, table: Mapping[str, _V]) -> _V | None:
    key = normalize_registry(registry)
    for name, value in table.items():
        if normalize_registry(name) == key:
            return value
    return None


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Endpoint:
    """Talks to one registry for one purpose; thread-safe."""

    def __init__(
        self,
        *,
        registry: str,
        purpose: Purpose,
        client: httpx.Client,
        schemes: tuple[str, ...],
        insecure: bool = False,
        keychain: Keychain,
    ) -> None:
        self.registry = registry
        self.purpose = purpose
        self.client = client
        self._schemes = schemes
        self._insecure = insecure
        self._keychain = keychain
        self._lock = threading.Lock()
        self._base_url: str | None = None
        self._challenge: Challenge | None = None
        self._tokens = TokenCache()

    @property
    def api_host(self) -> str:
        return (
            _DOCKER_HUB_API
            if normalize_registry(self.registry) == "index.docker.io"
            else (self.registry)
        )

    # ------------------------------------------------------------------ ping
    def base_url(self, what: str) -> str:
        with self._lock:
            if self._base_url is None:
                self._ping(what)
            assert self._base_url is not None
            return self._base_url

    def _ping(self, what: str) -> None:
        last: RegistryError | None = None
        tls_error: RegistryError | None = None
        for i, scheme in enumerate(self._schemes):
            url = f"{scheme}://{self.api_host}/v2/"
            more = i + 1 < len(self._schemes)
            try:
                response = self.client.get(url)
            except httpx.TransportError as exc:
                last = error_from_transport(exc, what, self.registry)
                if scheme == "https" and is_tls_error(exc):
                    # a certificate or handshake problem is only worth a plain-HTTP try
                    # when the server may not speak TLS at all
                    if is_cert_error(exc) and not self._insecure:
                        raise last from None
                    tls_error = last
                _log.debug("ping %s failed: %s", url, exc)
                continue
            if response.status_code == 400 and scheme == "http" and (more or tls_error):
                # "Client sent an HTTP request to an HTTPS server"
                response.close()
                if tls_error is not None:
                    raise tls_error
                continue
            if response.status_code == 401:
                self._challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            elif response.status_code != 200:
                raise error_from_response(response, f"{what}: pinging {url}")
            self._base_url = f"{scheme}://{self.api_host}"
            _log.debug(
                "registry %s at %s (auth: %s)",
                self.registry,
                self._base_url,
                self._challenge.scheme if self._challenge else "none",
            )
            return
        assert last is not None
        raise last

    # ------------------------------------------------------------------ auth
    def _credential(self) -> Credential | None:
        return self._keychain.resolve(self.registry)

    def _credentials_sent(self, source: CredentialSource) -> bool:
        """Whether requests to this registry carry (or were issued for) the credentials."""
        if not source.found or self._challenge is None:
            return False
        cred = self._credential()
        if cred is None:
            return False
        return cred.has_basic if self._challenge.scheme == "basic" else True

    def error(self, response: httpx.Response, what: str) -> RegistryError:
        """The error for an unexpected ``response``; a 401 or 403 says which
        credentials were sent, from which file, or that there were none."""
        if response.status_code not in (401, 403):
            return error_from_response(response, what)
        source = self._keychain.describe(self.registry)
        return error_from_response(
            response,
            what,
            credentials=source,
            sent=self._credentials_sent(source),
            asked=self._challenge is not None,
        )

    def _authorization(self, scopes: tuple[str, ...], what: str, *, fresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        cred = self._credential()
        if challenge.scheme == "basic":
            if cred is None or not cred.has_basic:
                return None
            return basic_header(cred)
        if challenge.scheme != "bearer":
            raise AuthError(
                f"{what}: {self.registry} asks for unsupported authentication {challenge.scheme!r}",
                hint="lamina supports Basic and Bearer token authentication",
            )
        if cred is not None and cred.registry_token:
            return f"Bearer {cred.registry_token}"
        if fresh:
            self._tokens.drop(scopes)
        token = self._tokens.get(scopes)
        if token is None:
            with self._lock:
                token = self._tokens.get(scopes)
                if token is None:
                    token, lifetime = self._fetch_token(challenge, scopes, cred, what)
                    self._tokens.put(scopes, token, lifetime)
        return f"Bearer {token}"

    def _fetch_token(
        self,
        challenge: Challenge,
        scopes: tuple[str, ...],
        cred: Credential | None,
        what: str,
    ) -> tuple[str, float]:
        realm = challenge.realm
        if not realm.startswith(("https://", "http://")):
            raise AuthError(
                f"{what}: {self.registry} sent a Bearer challenge without a usable realm",
                hint="the registry's token service is misconfigured",
            )
        try:
            if cred is not None and cred.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": cred.identity_token,
                    "service": challenge.service,
                    "scope": " ".join(scopes),
                    "client_id": "lamina",
                }
                response = self.client.post(realm, data=form)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = []
                if challenge.service:
                    params.append(("service", challenge.service))
                params.extend(("scope", s) for s in scopes)
                auth = (
                    httpx.BasicAuth(cred.username, cred.password)
                    if cred and cred.has_basic
                    else None
                )
                response = self.client.get(realm, params=params, auth=auth)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, f"{what}: fetching a token", self.registry) from None
        if response.status_code in (401, 403):
            source = self._keychain.describe(self.registry)
            raise auth_error(
                f"{what}: the token service of {self.registry} refused the request "
                f"({response.status_code})",
                response.status_code,
                source,
                sent=cred is not None,
            )
        if response.status_code != 200:
            raise error_from_response(response, f"{what}: fetching a token from {self.registry}")
        try:
            return parse_token_response(json.loads(response.content))
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(
                f"{what}: the token service of {self.registry} returned no usable token",
            ) from None

    # ------------------------------------------------------------------ requests
    def url(self, path: str, what: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url(what) + path

    def send(
        self,
        method: str,
        path: str,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        follow_redirects: bool = False,
        replayable: bool = True,
    ) -> httpx.Response:
        """Send a request with authentication; the caller checks the status.

        With ``stream=True`` the caller must close the response. A 401 is retried
        once with a fresh token (and a challenge learnt from it); a second 401
        is returned to the caller.
        """
        url = self.url(path, what)
        # credentials go to the registry only, never to another host named in a Location
        same_host = httpx.URL(url).netloc == httpx.URL(self.base_url(what)).netloc
        response: httpx.Response | None = None
        for attempt in range(2):
            header_values = dict(headers or {})
            auth = self._authorization(scopes, what, fresh=attempt > 0) if same_host else None
            if auth is not None:
                header_values["Authorization"] = auth
            content: bytes | Iterable[bytes] | None = body() if callable(body) else body
            request = self.client.build_request(
                method, url, headers=header_values, params=params, content=content
            )
            try:
                response = self.client.send(
                    request, stream=stream, follow_redirects=follow_redirects
                )
            except httpx.TransportError as exc:
                raise error_from_transport(exc, what, self.registry) from None
            if response.status_code != 401 or attempt > 0 or not replayable:
                return response
            new = parse_challenge(response.headers.get("www-authenticate", ""))
            old = self._challenge
            if new is None or (old is not None and old.scheme == new.scheme == "basic"):
                return response  # nothing else to try: the credentials were refused
            if old is None or old.scheme != new.scheme:
                self._challenge = new
            response.close()
        assert response is not None
        return response


class RegistryTransport:
    """Creates and caches :class:`Endpoint` objects for the given options."""

    def __init__(
        self,
        options: RegistryOptions,
        keychain: Keychain,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.options = options
        self.keychain = keychain
        self._transport = transport
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, Purpose], Endpoint] = {}
        self._clients: list[httpx.Client] = []
        self._ssl_contexts: dict[object, ssl.SSLContext] = {}

    def endpoint(self, registry: str, purpose: Purpose) -> Endpoint:
        key = (normalize_registry(registry), purpose)
        with self._lock:
            found = self._endpoints.get(key)
            if found is None:
                found = self._make_endpoint(registry, purpose)
                self._endpoints[key] = found
            return found

    def _insecure(self, registry: str, purpose: Purpose) -> bool:
        opts = self.options
        flag = opts.insecure if purpose == "push" else opts.insecure_pull
        return flag or _in(registry, opts.insecure_registries)

    def _skip_verify(self, registry: str, purpose: Purpose) -> bool:
        opts = self.options
        if opts.skip_tls_verify or _in(registry, opts.skip_tls_verify_registries):
            return True
        return purpose == "pull" and opts.skip_tls_verify_pull

    def _ssl_context(self, registry: str, purpose: Purpose) -> ssl.SSLContext:
        """The TLS settings for ``registry``, one shared context per distinct setting."""
        ca = _lookup(registry, self.options.registry_certificates)
        client_cert = _lookup(registry, self.options.registry_client_certs)
        skip = self._skip_verify(registry, purpose)
        key = (ca, client_cert, skip)
        found = self._ssl_contexts.get(key)
        if found is not None:
            return found
        ctx = SystemTrustContext()
        if ca is not None:
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(
                    f"cannot load the CA certificate {ca} given for {registry}: {exc}",
                    hint="--registry-certificate expects registry=/path/to/ca.pem (PEM)",
                ) from None
        if client_cert is not None:
            cert, key_file = client_cert
            try:
                ctx.load_cert_chain(certfile=str(cert), keyfile=str(key_file))
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(
                    f"cannot load the client certificate {cert} / key {key_file} for "
                    f"{registry}: {exc}",
                    hint="--registry-client-cert expects registry=/path/cert.pem,/path/key.pem",
                ) from None
        if skip:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._ssl_contexts[key] = ctx
        return ctx

    def _make_endpoint(self, registry: str, purpose: Purpose) -> Endpoint:
        # registries marked insecure: plain HTTP first, HTTPS if that fails (an
        # HTTPS-only server answers 400); loopback ones: HTTPS first, then HTTP
        insecure = self._insecure(registry, purpose)
        if insecure:
            schemes: tuple[str, ...] = ("http", "https")
        elif _is_local(registry):
            schemes = ("https", "http")
        else:
            schemes = ("https",)
        client = httpx.Client(
            verify=self._ssl_context(registry, purpose),
            headers={"User-Agent": user_agent(self.options.user_agent_suffix)},
            timeout=httpx.Timeout(self.options.timeout),
            transport=self._transport,
            limits=httpx.Limits(
                max_connections=self.options.max_parallel_transfers + 4,
                max_keepalive_connections=self.options.max_parallel_transfers + 4,
            ),
        )
        self._clients.append(client)
        return Endpoint(
            registry=registry,
            purpose=purpose,
            client=client,
            schemes=schemes,
            insecure=insecure,
            keychain=self.keychain,
        )

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
            self._endpoints.clear()
