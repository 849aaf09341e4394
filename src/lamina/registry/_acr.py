"""Azure Container Registry credentials (``*.azurecr.io``, ``.azurecr.cn``, ``.azurecr.us``).

An Entra ID (AAD) access token from azure-identity, chosen by the ``environ`` given:
``AZURE_FEDERATED_TOKEN_FILE`` (AKS workload identity) or ``AZURE_CLIENT_SECRET``, each
with ``AZURE_TENANT_ID`` and ``AZURE_CLIENT_ID``, else the managed identity
(``AZURE_CLIENT_ID`` picks a user-assigned one). ``AZURE_AUTHORITY_HOST`` replaces the
cloud's login host. The token is exchanged at ``https://<registry>/oauth2/exchange``
(``grant_type=access_token``) for an ACR refresh token; the registry login is then
``00000000-0000-0000-0000-000000000000`` with the refresh token as password, as
``az acr login`` and the ACR credential helper do.

Secrets never reach a log line or an error message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from lamina.errors import AuthError, LaminaError

from ._auth import Credential

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["SOURCE", "USERNAME", "aad_credential", "aad_token", "credential", "exchange"]

USERNAME = "00000000-0000-0000-0000-000000000000"
SOURCE = "ACR's /oauth2/exchange (with an Azure identity)"
#: registry suffix -> (login host, Azure Resource Manager audience) of its cloud
_CLOUDS = {
    ".azurecr.io": ("login.microsoftonline.com", "https://management.azure.com/.default"),
    ".azurecr.cn": ("login.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
    ".azurecr.us": ("login.microsoftonline.us", "https://management.usgovcloudapi.net/.default"),
}
#: ACR refresh tokens live three hours; refetched well before
_REFRESH_LIFETIME = 2 * 3600.0
_TIMEOUT = 30.0
_HINT = (
    "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a service principal) "
    "or AZURE_FEDERATED_TOKEN_FILE (workload identity), or run where a managed identity "
    "has the AcrPush role; or log in with a docker config.json entry"
)


def _cloud(host: str) -> tuple[str, str]:
    name = host.lower().rsplit(":", 1)[0]
    for suffix, cloud in _CLOUDS.items():
        if name.endswith(suffix):
            return cloud
    return _CLOUDS[".azurecr.io"]


def azure_trust(environ: Mapping[str, str]) -> dict[str, Any]:
    """azure-core's ``connection_verify`` option giving its requests transport lamina's
    trust (``SSL_CERT_FILE``, every file in ``SSL_CERT_DIR`` -- the executor image's
    ``/kaniko/ssl/certs`` -- and the system store) instead of certifi's bundle; nothing when
    the user chose a bundle for requests (``REQUESTS_CA_BUNDLE``) or set neither variable."""
    if environ.get("REQUESTS_CA_BUNDLE"):
        return {}
    from ._tls import trust_bundle_file

    bundle = trust_bundle_file(environ)
    return {} if bundle is None else {"connection_verify": bundle}


def aad_credential(
    environ: Mapping[str, str], *, login_host: str = "login.microsoftonline.com"
) -> tuple[TokenCredential, str]:
    """The azure-identity credential the environment configures, and what it read."""
    from azure.identity import (
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    tenant = environ.get("AZURE_TENANT_ID", "")
    client = environ.get("AZURE_CLIENT_ID", "")
    configured = environ.get("AZURE_AUTHORITY_HOST", "")
    authority = configured or login_host
    # a configured authority (sovereign cloud, Azure Stack) is not looked up in the
    # public cloud's instance discovery
    extra: dict[str, Any] = {"disable_instance_discovery": True} if configured else {}
    extra.update(azure_trust(environ))
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE", "")
    secret = environ.get("AZURE_CLIENT_SECRET", "")
    if tenant and client and token_file:
        return WorkloadIdentityCredential(
            tenant_id=tenant,
            client_id=client,
            token_file_path=token_file,
            authority=authority,
            **extra,
        ), f"AZURE_FEDERATED_TOKEN_FILE={token_file}"
    if tenant and client and secret:
        return ClientSecretCredential(
            tenant, client, secret, authority=authority, **extra
        ), f"AZURE_CLIENT_SECRET (AZURE_CLIENT_ID={client}, AZURE_TENANT_ID={tenant})"
    return ManagedIdentityCredential(
        client_id=client or None, **azure_trust(environ)
    ), "the managed identity"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300]


def aad_token(
    aad: TokenCredential,
    source: str,
    scope: str,
    *,
    what: str,
    error: type[LaminaError] = AuthError,
) -> str | None:
    """An access token for ``scope``; None when the managed identity is not available."""
    from azure.core.exceptions import AzureError
    from azure.identity import CredentialUnavailableError

    try:
        return aad.get_token(scope).token
    except CredentialUnavailableError:
        if source == "the managed identity":
            return None  # not on Azure and nothing configured: anonymous, as kaniko
        raise error(
            f"Azure credentials from {source} for {what} are incomplete or unreadable",
            hint=_HINT,
        ) from None
    except (AzureError, ValueError, OSError) as exc:
        raise error(
            f"Azure credentials from {source}: the token request for {what} failed: "
            f"{_first_line(exc)}",
            hint=_HINT,
        ) from None


def exchange(
    host: str,
    access_token: str,
    *,
    source: str,
    tenant: str = "",
    transport: httpx.BaseTransport | None = None,
) -> str:
    """The ACR refresh token ``https://host/oauth2/exchange`` gives for ``access_token``."""
    if transport is None:
        from ._tls import system_trust_context

        client = httpx.Client(verify=system_trust_context(), timeout=_TIMEOUT)
    else:
        client = httpx.Client(transport=transport, timeout=_TIMEOUT)
    form = {"grant_type": "access_token", "service": host, "access_token": access_token}
    if tenant:
        form["tenant"] = tenant
    url = f"https://{host}/oauth2/exchange"
    try:
        with client:
            resp = client.post(url, data=form)
    except httpx.HTTPError as exc:
        raise AuthError(
            f"ACR token exchange at {url} (AAD token from {source}) failed: {type(exc).__name__}",
            hint="check the registry name and the network",
        ) from None
    refresh = ""
    if resp.status_code == 200:
        try:
            refresh = str(resp.json().get("refresh_token") or "")
        except (ValueError, AttributeError):
            refresh = ""
    if not refresh:
        answer = resp.text[:300].strip() or resp.reason_phrase
        raise AuthError(
            f"ACR token exchange at {url} (AAD token from {source}) failed: "
            f"HTTP {resp.status_code}: {answer}",
            hint="the identity needs a role on the registry (AcrPush / AcrPull); " + _HINT,
        )
    return refresh


def credential(
    host: str,
    environ: Mapping[str, str],
    *,
    aad: tuple[TokenCredential, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Credential | None:
    """The ACR login for ``host``, or None (no Azure identity: anonymous)."""
    login_host, scope = _cloud(host)
    token_credential, source = aad or aad_credential(environ, login_host=login_host)
    access = aad_token(token_credential, source, scope, what=f"the registry {host}")
    if access is None:
        return None
    refresh = exchange(
        host, access, source=source, tenant=environ.get("AZURE_TENANT_ID", ""), transport=transport
    )
    return Credential(
        username=USERNAME, password=refresh, expires_at=time.monotonic() + _REFRESH_LIFETIME
    )
