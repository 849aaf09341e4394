"""Google Artifact Registry / Container Registry credentials (``gcr.io``, ``*.pkg.dev``).

Application Default Credentials, in google-auth's order, read from the ``environ``
given: the JSON file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (a service-account
key, whose signed JWT google-auth exchanges at the key's ``token_uri``; an
``external_account`` workload identity federation file; an ``authorized_user`` file),
then gcloud's ADC file (``$CLOUDSDK_CONFIG`` or ``~/.config/gcloud``), then the
metadata server (``GCE_METADATA_HOST`` honoured, as google-auth reads it). The
registry login is ``oauth2accesstoken`` with the access token as password, as
docker-credential-gcr does. google-auth talks HTTP through :class:`HttpxRequest`
(httpx, the system trust store), so ``requests`` is not needed.

Tokens and keys never reach a log line or an error message.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport
import httpx

from lamina.errors import AuthError, LaminaError

from ._auth import Credential

__all__ = ["SOURCE", "GoogleToken", "HttpxRequest", "credential", "google_token"]

USERNAME = "oauth2accesstoken"
SOURCE = "Google Application Default Credentials"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_TIMEOUT = 30.0
_HINT = (
    "check the file GOOGLE_APPLICATION_CREDENTIALS names (a service-account key or an "
    "external_account file from 'gcloud iam workload-identity-pools create-cred-config'), "
    "or log in with a docker config.json entry for the registry"
)


class _Response(google.auth.transport.Response):
    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    @property
    def data(self) -> bytes:
        return self._resp.content


class HttpxRequest(google.auth.transport.Request):
    """google-auth's HTTP transport over an httpx client (system trust, env proxies)."""

    def __init__(self, client: httpx.Client | None = None) -> None:
        if client is None:
            from ._tls import system_trust_context

            client = httpx.Client(verify=system_trust_context(), timeout=_TIMEOUT)
        self._client = client

    def close(self) -> None:
        self._client.close()

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            resp = self._client.request(
                method, url, content=body, headers=headers, timeout=timeout or _TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{type(exc).__name__} talking to {httpx.URL(url).copy_with(query=None)}"
            ) from None
        return _Response(resp)


@dataclass(frozen=True, slots=True, kw_only=True)
class GoogleToken:
    """An OAuth2 access token, where it came from, and when it expires (monotonic)."""

    token: str = field(repr=False)
    source: str
    expires_at: float | None


def _adc_file(environ: Mapping[str, str]) -> Path:
    configured = environ.get("CLOUDSDK_CONFIG")
    if configured:
        return Path(configured) / "application_default_credentials.json"
    home = environ.get("HOME")
    return (
        Path(home) if home else Path.home()
    ) / ".config/gcloud/application_default_credentials.json"


def _load_file(path: Path, source: str, error: type[LaminaError]) -> Any:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(
            f"Google credentials: cannot read {source} {path}: {exc.strerror or exc}",
            hint=_HINT,
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(
            f"Google credentials: {source} {path} is not a JSON credentials file",
            hint=_HINT,
        ) from None
    try:
        if isinstance(info, dict) and info.get("type") == "external_account":
            return _external_account(info)
        with warnings.catch_warnings():  # the user's own file: google-auth's caution is moot
            warnings.simplefilter("ignore", DeprecationWarning)
            creds, _ = google.auth.load_credentials_from_dict(info, scopes=_SCOPES)  # type: ignore[no-untyped-call]
    except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError, KeyError) as exc:
        raise error(
            f"Google credentials: {source} {path} is not a usable credentials file: "
            f"{_first_line(exc)}",
            hint=_HINT,
        ) from None
    return creds


def _external_account(info: dict[str, Any]) -> Any:
    """Workload identity federation credentials, built without google-auth's project-id
    lookup at load time (an extra STS and Resource Manager call over ``requests``)."""
    source = info.get("credential_source") or {}
    if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
        from google.auth import aws

        return aws.Credentials.from_info(info, scopes=_SCOPES)  # type: ignore[no-untyped-call]
    if isinstance(source, dict) and source.get("executable") is not None:
        from google.auth import pluggable

        return pluggable.Credentials.from_info(info, scopes=_SCOPES)  # type: ignore[no-untyped-call]
    from google.auth import identity_pool

    return identity_pool.Credentials.from_info(info, scopes=_SCOPES)  # type: ignore[no-untyped-call]


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _find(environ: Mapping[str, str], request: HttpxRequest, error: type[LaminaError]) -> Any:
    """``(credentials, source)`` by the ADC order, or None when nothing is configured."""
    configured = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if configured:
        source = "GOOGLE_APPLICATION_CREDENTIALS"
        return _load_file(Path(configured), source, error), f"{source}={configured}"
    adc = _adc_file(environ)
    if adc.is_file():
        return _load_file(adc, "the gcloud ADC file", error), f"the gcloud ADC file {adc}"
    from google.auth import compute_engine
    from google.auth.compute_engine import _metadata

    if not _metadata.is_on_gce(request):  # type: ignore[no-untyped-call]
        return None
    gce = compute_engine.Credentials(scopes=_SCOPES)  # type: ignore[no-untyped-call]
    return gce, "the GCE metadata server"


def google_token(
    environ: Mapping[str, str],
    *,
    what: str,
    error: type[LaminaError] = AuthError,
    request: HttpxRequest | None = None,
) -> GoogleToken | None:
    """An access token from Application Default Credentials, None when none is configured.

    ``what`` names the thing the token is for in errors, ``error`` is their type.
    """
    if request is None:
        own = HttpxRequest()
        try:
            return google_token(environ, what=what, error=error, request=own)
        finally:
            own.close()
    found = _find(environ, request, error)
    if found is None:
        return None
    creds, source = found
    try:
        creds.refresh(request)
    except (google.auth.exceptions.GoogleAuthError, ValueError) as exc:
        raise error(
            f"Google credentials from {source}: the token exchange for {what} failed: "
            f"{_first_line(exc)}",
            hint=_HINT,
        ) from None
    expires_at = None
    if isinstance(creds.expiry, dt.datetime):
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        expires_at = time.monotonic() + (creds.expiry - now).total_seconds()
    return GoogleToken(token=str(creds.token), source=source, expires_at=expires_at)


def credential(host: str, environ: Mapping[str, str]) -> Credential | None:
    """``oauth2accesstoken`` and an access token for ``host``, or None (anonymous)."""
    token = google_token(environ, what=f"the registry {host}")
    if token is None:
        return None
    return Credential(username=USERNAME, password=token.token, expires_at=token.expires_at)
