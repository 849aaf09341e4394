"""ACR credentials: the identity chosen from the environment, the AAD token exchanged at
``/oauth2/exchange`` (an httpx mock transport), and the errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from lamina.errors import AuthError
from lamina.registry._acr import USERNAME, aad_credential, credential

AAD = "aad-access-token-xyz"
REFRESH = "acr-refresh-token-abc"


class FakeAad:
    """A TokenCredential answering ``token``, or raising ``error``."""

    def __init__(self, token: str = AAD, error: Exception | None = None) -> None:
        self.token, self.error, self.scopes = token, error, list[tuple[str, ...]]()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        if self.error is not None:
            raise self.error
        return AccessToken(self.token, int(time.time()) + 3600)


def _exchange(status: int = 200, seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(req)
        if status != 200:
            return httpx.Response(status, json={"errors": [{"code": "UNAUTHORIZED"}]})
        return httpx.Response(200, json={"refresh_token": REFRESH})

    return httpx.MockTransport(handler)


def test_aad_token_exchanged_for_a_refresh_token() -> None:
    seen: list[httpx.Request] = []
    aad = FakeAad()
    env = {"AZURE_TENANT_ID": "tenant-1"}
    cred = credential("myreg.azurecr.io", env, aad=(aad, "test"), transport=_exchange(seen=seen))
    assert cred is not None
    assert (cred.username, cred.password) == (USERNAME, REFRESH)
    assert cred.expires_at is not None
    assert cred.expires_at > time.monotonic() + 3600
    (req,) = seen
    assert str(req.url) == "https://myreg.azurecr.io/oauth2/exchange"
    form = parse_qs(req.content.decode())
    assert form == {
        "grant_type": ["access_token"],
        "service": ["myreg.azurecr.io"],
        "access_token": [AAD],
        "tenant": ["tenant-1"],
    }
    assert aad.scopes == [("https://management.azure.com/.default",)]


def test_sovereign_cloud_scope() -> None:
    aad = FakeAad()
    credential("reg.azurecr.cn", {}, aad=(aad, "test"), transport=_exchange())
    assert aad.scopes == [("https://management.chinacloudapi.cn/.default",)]


def test_exchange_refused_names_the_registry_and_the_answer() -> None:
    with pytest.raises(AuthError) as err:
        credential(
            "myreg.azurecr.io", {}, aad=(FakeAad(), "AZURE_CLIENT_SECRET"), transport=_exchange(401)
        )
    msg = err.value.message
    assert "https://myreg.azurecr.io/oauth2/exchange" in msg
    assert "401" in msg
    assert "UNAUTHORIZED" in msg
    assert "AZURE_CLIENT_SECRET" in msg
    assert AAD not in msg
    assert err.value.exit_code == 4


def test_exchange_endpoint_down() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(AuthError, match="ConnectError"):
        credential("r.azurecr.io", {}, aad=(FakeAad(), "x"), transport=httpx.MockTransport(handler))


def test_aad_refusal_is_an_auth_error_naming_the_source() -> None:
    aad = FakeAad(error=ClientAuthenticationError("AADSTS7000215: Invalid client secret"))
    with pytest.raises(AuthError) as err:
        credential("r.azurecr.io", {}, aad=(aad, "AZURE_CLIENT_SECRET (…)"), transport=_exchange())
    assert "AADSTS7000215" in err.value.message
    assert "AZURE_CLIENT_SECRET" in err.value.message


def test_no_managed_identity_is_anonymous() -> None:
    aad = FakeAad(error=CredentialUnavailableError("no IMDS endpoint"))
    assert credential("r.azurecr.io", {}, aad=(aad, "the managed identity")) is None


def test_identity_chosen_from_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("jwt", encoding="utf-8")
    base = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c"}
    wi, source = aad_credential({**base, "AZURE_FEDERATED_TOKEN_FILE": str(token_file)})
    assert isinstance(wi, WorkloadIdentityCredential)
    assert str(token_file) in source
    cs, source = aad_credential({**base, "AZURE_CLIENT_SECRET": "s3cret"})
    assert isinstance(cs, ClientSecretCredential)
    assert "s3cret" not in source
    mi, source = aad_credential({})
    assert isinstance(mi, ManagedIdentityCredential)
    assert source == "the managed identity"
