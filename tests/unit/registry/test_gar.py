"""Google registry credentials: the provider chosen by host, the ADC file chain, the JWT
grant checked by a fake token endpoint (an httpx mock transport), and the errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from lamina.errors import AuthError
from lamina.registry._auth import Credential, Keychain
from lamina.registry._cloud import provider_for
from lamina.registry._gar import HttpxRequest, google_token
from tests.support.google_fakes import FakeGoogle, check_jwt_grant, make_service_account_key

TOKEN_URI = "https://oauth2.fake.test/token"
NO_GCE = "http://127.0.0.1:9/"  # nothing answers: the metadata probe fails at once


@pytest.mark.parametrize(
    ("host", "module"),
    [
        ("gcr.io", "lamina.registry._gar"),
        ("eu.gcr.io", "lamina.registry._gar"),
        ("europe-west1-docker.pkg.dev", "lamina.registry._gar"),
        ("GCR.IO:443", "lamina.registry._gar"),
        ("myreg.azurecr.io", "lamina.registry._acr"),
        ("myreg.azurecr.cn", "lamina.registry._acr"),
        ("myreg.azurecr.us", "lamina.registry._acr"),
        ("evilgcr.io", None),
        ("gcr.io.example.com", None),
        ("pkg.dev", None),
        ("azurecr.io", None),
        ("127.0.0.1:5000", None),
        ("index.docker.io", None),
    ],
)
def test_provider_by_host(host: str, module: str | None) -> None:
    assert provider_for(host) == module


def _key_file(tmp_path: Path) -> tuple[Path, object]:
    info, public = make_service_account_key(TOKEN_URI)
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info), encoding="utf-8")
    return path, public


def _request(handler: object) -> HttpxRequest:
    return HttpxRequest(httpx.Client(transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]


def test_service_account_key_signed_jwt_exchanged(tmp_path: Path) -> None:
    key, public = _key_file(tmp_path)
    seen: list[dict[str, object]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        assert str(req.url) == TOKEN_URI
        seen.append(check_jwt_grant(req.content, public, TOKEN_URI))  # type: ignore[arg-type]
        return httpx.Response(200, json={"access_token": "ya29.fake", "expires_in": 3600})

    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "HOME": str(tmp_path)}
    token = google_token(env, what="the registry gcr.io", request=_request(handler))
    assert token is not None
    assert token.token == "ya29.fake"
    assert "ya29" not in repr(token)
    assert token.expires_at is not None
    assert 3000 < token.expires_at - time.monotonic() <= 3600
    assert len(seen) == 1


def test_gcloud_adc_file_is_read_when_the_variable_is_unset(tmp_path: Path) -> None:
    info, public = make_service_account_key(TOKEN_URI)
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir()
    adc.write_text(json.dumps(info), encoding="utf-8")

    def handler(req: httpx.Request) -> httpx.Response:
        check_jwt_grant(req.content, public, TOKEN_URI)
        return httpx.Response(200, json={"access_token": "from-adc", "expires_in": 60})

    env = {"CLOUDSDK_CONFIG": str(adc.parent)}
    token = google_token(env, what="x", request=_request(handler))
    assert token is not None
    assert token.token == "from-adc"
    assert "gcloud ADC file" in token.source


def test_malformed_key_file_names_the_variable_and_file(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text('{"type": "service_account", "private_key": "not a key"}', encoding="utf-8")
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    with pytest.raises(AuthError) as err:
        google_token(env, what="the registry gcr.io", request=_request(lambda r: None))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err.value.message
    assert str(key) in err.value.message
    assert err.value.exit_code == 4
    assert err.value.hint
    key.write_text("{not json", encoding="utf-8")
    with pytest.raises(AuthError, match="not a JSON credentials file"):
        google_token(env, what="x", request=_request(lambda r: None))
    with pytest.raises(AuthError, match="cannot read"):
        google_token(
            {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")},
            what="x",
            request=_request(lambda r: None),
        )


def test_token_endpoint_403_is_reported_with_its_answer(tmp_path: Path) -> None:
    key, _ = _key_file(tmp_path)

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403, json={"error": "access_denied", "error_description": "account disabled"}
        )

    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    with pytest.raises(AuthError) as err:
        google_token(env, what="the registry gcr.io", request=_request(handler))
    msg = err.value.message
    assert "access_denied" in msg
    assert f"GOOGLE_APPLICATION_CREDENTIALS={key}" in msg
    assert "gcr.io" in msg
    assert "PRIVATE KEY" not in msg


def test_token_endpoint_down(tmp_path: Path) -> None:
    key, _ = _key_file(tmp_path)

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    with pytest.raises(AuthError, match=r"token exchange .* failed: .*ConnectError"):
        google_token(env, what="the registry gcr.io", request=_request(handler))


def test_no_credentials_anywhere_is_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no metadata server", request=req)

    token = google_token({"HOME": str(tmp_path)}, what="x", request=_request(handler))
    assert token is None


def test_config_json_entry_wins_over_the_provider(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"gcr.io": {"username": "_json_key", "password": "{}"}}}),
        encoding="utf-8",
    )
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")}
    cred = Keychain(tmp_path, environ=env).resolve("gcr.io")
    assert cred is not None
    assert cred.username == "_json_key"
    # without the entry, the provider is asked (and names the missing file)
    with pytest.raises(AuthError, match=r"missing\.json"):
        Keychain(tmp_path / "none", environ=env).resolve("gcr.io")


def test_expiry() -> None:
    assert not Credential(username="u", password="p").expired
    assert Credential(username="u", password="p", expires_at=time.monotonic() + 30).expired
    assert not Credential(username="u", password="p", expires_at=time.monotonic() + 600).expired


def test_workload_identity_federation_file(tmp_path: Path) -> None:
    """An ``external_account`` file: the subject token read from its file is exchanged at
    the STS ``token_url`` (RFC 8693), as google-auth does for workload identity pools."""
    subject = tmp_path / "oidc-token"
    subject.write_text("subject-jwt-from-the-platform", encoding="utf-8")
    sts = "https://sts.fake.test/v1/token"
    config = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/"
        "workloadIdentityPools/p/providers/q",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": sts,
        "credential_source": {"file": str(subject)},
    }
    path = tmp_path / "wif.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    forms: list[dict[str, list[str]]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        from urllib.parse import parse_qs

        assert str(req.url) == sts
        forms.append(parse_qs(req.content.decode()))
        return httpx.Response(
            200,
            json={
                "access_token": "federated-token",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    token = google_token(
        {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}, what="x", request=_request(handler)
    )
    assert token is not None
    assert token.token == "federated-token"
    (form,) = forms
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]
    assert form["subject_token"] == ["subject-jwt-from-the-platform"]


@pytest.mark.parametrize(("expires_in", "grants"), [(3600, 1), (30, 2)])
def test_keychain_keeps_the_token_for_its_lifetime(
    tmp_path: Path, expires_in: int, grants: int
) -> None:
    """One exchange per registry while the token lives; an expiring one is fetched again
    (a fake token endpoint on loopback, the key's token_uri)."""
    fake = FakeGoogle(expires_in=expires_in).start()
    try:
        info, fake.public_key = make_service_account_key(fake.token_uri)
        key = tmp_path / "key.json"
        key.write_text(json.dumps(info), encoding="utf-8")
        env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "NO_PROXY": "*"}
        keychain = Keychain(tmp_path / "no-config", environ=env)
        first = keychain.resolve("europe-docker.pkg.dev")
        second = keychain.resolve("europe-docker.pkg.dev")
        assert first is not None
        assert second is not None
        assert (second.username, second.password) == ("oauth2accesstoken", fake.access_token)
        assert fake.grants == grants
        assert (
            "Google Application Default Credentials"
            in keychain.describe("europe-docker.pkg.dev").summary()
        )
    finally:
        fake.stop()
