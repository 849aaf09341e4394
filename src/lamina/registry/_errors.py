"""Error construction and the retry loop."""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from lamina.errors import AuthError, RegistryError

from ._auth import CredentialSource

__all__ = [
    "TransientRegistryError",
    "auth_error",
    "error_from_response",
    "error_from_transport",
    "retry_after_seconds",
    "with_retries",
]

_log = logging.getLogger("lamina.registry")
_T = TypeVar("_T")

CONFIG_HINT = (
    "check the credentials for this registry in $DOCKER_CONFIG/config.json "
    "(default /kaniko/.docker/config.json, else ~/.docker/config.json)"
)
_ENTRY = '{{"auths": {{"{host}": {{"username": "...", "password": "..."}}}}}}'


class TransientRegistryError(RegistryError):
    """A failure worth retrying: 429, 5xx, a dropped or refused connection."""

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _registry_message(response: httpx.Response) -> str:
    """The ``errors[].message`` of a distribution-spec error body, if any."""
    try:
        if int(response.headers.get("content-length", "0") or 0) > 65536:
            return ""
        body = response.read()
    except (httpx.HTTPError, ValueError):
        return ""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = body.decode("utf-8", errors="replace").strip()
        return text[:200] if text and "<" not in text[:1] else ""
    parts: list[str] = []
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        for err in data["errors"]:
            if isinstance(err, dict):
                msg = str(err.get("message") or err.get("code") or "").strip()
                if msg and msg not in parts:
                    parts.append(msg)
    return "; ".join(parts)


def auth_error(
    message: str, status: int, source: CredentialSource, *, sent: bool, asked: bool = True
) -> AuthError:
    """A 401/403 that tells "no credentials" from "credentials rejected" and names the
    docker config file that was read (or that none was found). ``sent``: the
    credentials went with the request; ``asked``: the registry sent an auth challenge."""
    host = source.registry
    where = source.config_path or (source.searched[0] if source.searched else None)
    if sent and status == 403:
        return AuthError(
            f"{message}: the {source.summary()} are valid but lack permission for this repository",
            hint=f"grant that account access to the repository, or use other credentials "
            f"for {host}",
        )
    if sent:
        return AuthError(
            f"{message}: the registry rejected the {source.summary()}",
            hint=f"check the username and password (or token) for {host} in {source.source}",
        )
    if source.found and not asked:
        return AuthError(
            f"{message}: the registry asked for no credentials, so the {source.summary()} "
            "were not sent",
            hint="the registry (or a proxy in front of it) refuses access without asking "
            "for credentials; check its access rules",
        )
    if source.found:  # e.g. only an identity token, and the registry asks for Basic
        return AuthError(
            f"{message}: the {source.summary()} hold no username and password, "
            "which this registry asks for",
            hint=f"give {host} a username and password (or an 'auth' value) in {source.source}",
        )
    if source.config_path is not None:
        hint = f"add credentials for {host} to {source.config_path}: " + _ENTRY.format(host=host)
    elif where is not None:
        hint = (
            f"write them to {where} (" + _ENTRY.format(host=host) + "), or mount a "
            f"kubernetes.io/dockerconfigjson secret at {where.parent}"
        )
    else:
        hint = CONFIG_HINT
    return AuthError(f"{message}: {source.summary()}", hint=hint)


def error_from_response(
    response: httpx.Response,
    what: str,
    *,
    credentials: CredentialSource | None = None,
    sent: bool = False,
    asked: bool = True,
) -> RegistryError:
    """The error for an unexpected status; ``what`` is e.g. ``pulling host/repo:tag``.

    For a 401 or 403, ``credentials`` tells what the keychain had for the registry
    and ``sent`` whether they went with the request.
    """
    status = response.status_code
    reason = response.reason_phrase or httpx.codes.get_reason_phrase(status)
    detail = _registry_message(response)
    message = f"{what}: {status} {reason}" + (f": {detail}" if detail else "")
    if status in (401, 403) and credentials is not None:
        return auth_error(message, status, credentials, sent=sent, asked=asked)
    if status == 401:
        return AuthError(message, hint=CONFIG_HINT)
    if status == 403:
        return AuthError(
            message,
            hint="the credentials are valid but lack permission for this repository; "
            + CONFIG_HINT,
        )
    if status == 404:
        return RegistryError(message, hint="check the repository name and the tag or digest")
    if status == 429 or status >= 500:
        return TransientRegistryError(
            message,
            hint="the registry is overloaded or failing; retry later, or use "
            "--push-retry / --image-download-retry",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    return RegistryError(message)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def is_cert_error(exc: BaseException) -> bool:
    """The server's certificate could not be verified."""
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _chain(exc)
    )


def is_tls_error(exc: BaseException) -> bool:
    """Any TLS-level failure (handshake, alert, certificate)."""
    return any(
        isinstance(e, ssl.SSLError) or "[SSL" in str(e) or "SSL:" in str(e) for e in _chain(exc)
    )


def error_from_transport(exc: httpx.TransportError, what: str, host: str) -> RegistryError:
    if is_cert_error(exc):
        return RegistryError(
            f"{what}: TLS certificate of {host} could not be verified: {exc}",
            hint=f"pass the registry's CA with --registry-certificate {host}=/path/ca.pem, "
            f"or (unsafe) --skip-tls-verify-registry {host}",
        )
    if is_tls_error(exc):
        return RegistryError(
            f"{what}: TLS handshake with {host} failed: {exc}",
            hint=f"if the registry requires a client certificate, pass --registry-client-cert "
            f"{host}=/path/cert.pem,/path/key.pem; if it speaks plain HTTP, mark it with "
            f"--insecure-registry {host}",
        )
    if isinstance(exc, httpx.TimeoutException):
        kind = "timed out"
    elif isinstance(exc, httpx.ConnectError):
        kind = "cannot connect"
    elif isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        kind = "connection dropped"
    else:
        kind = "network error"
    return TransientRegistryError(
        f"{what}: {kind} ({host}): {exc or type(exc).__name__}",
        hint="check that the registry is reachable; use --push-retry / "
        "--image-download-retry to retry transient failures",
    )


def with_retries(
    operation: Callable[[], _T],
    *,
    retries: int,
    backoff: float,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run ``operation``, retrying on :class:`TransientRegistryError` with exponential backoff."""
    attempt = 0
    while True:
        try:
            return operation()
        except TransientRegistryError as exc:
            if attempt >= retries:
                raise
            delay = backoff * (2**attempt)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            delay = min(delay, max_delay)
            attempt += 1
            _log.warning("%s; retry %d/%d in %.1fs", exc.message, attempt, retries, delay)
            sleep(delay)
