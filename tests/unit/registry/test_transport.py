from __future__ import annotations

import base64
import datetime
import json
import logging
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from lamina.errors import AuthError, RegistryError
from lamina.registry._auth import Keychain
from lamina.registry._options import RegistryOptions
from lamina.registry._transport import RegistryTransport, SystemTrustContext, user_agent

SECRET = "pa55-w0rd-XYZ"


def _keychain(tmp_path: Path, host: str, password: str = SECRET) -> Keychain:
    auth = base64.b64encode(f"user:{password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return Keychain(tmp_path)


def _basic_ok(request: httpx.Request, password: str = SECRET) -> bool:
    want = "Basic " + base64.b64encode(f"user:{password}".encode()).decode()
    return bool(request.headers.get("authorization") == want)


def test_basic_flow_and_user_agent(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not _basic_ok(request):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, json={})

    t = RegistryTransport(
        RegistryOptions(insecure_pull=True, user_agent_suffix="ci/1"),
        _keychain(tmp_path, "reg.test"),
        transport=httpx.MockTransport(handler),
    )
    ep = t.endpoint("reg.test", "pull")
    resp = ep.send("GET", "/v2/a/tags/list", scopes=("repository:a:pull",), what="x")
    assert resp.status_code == 200
    # ping: insecure -> plain HTTP first
    assert str(seen[0].url) == "http://reg.test/v2/"
    assert seen[-1].headers["user-agent"] == user_agent("ci/1")
    assert seen[-1].headers["user-agent"].startswith("lamina/")
    assert seen[-1].headers["user-agent"].endswith(" ci/1")
    t.close()


def test_bearer_flow_caches_per_scope_and_refreshes(tmp_path: Path) -> None:
    issued: list[str] = []
    valid: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            assert _basic_ok(request)
            token = f"tok{len(issued)}"
            issued.append(",".join(request.url.params.get_list("scope")))
            valid.add(token)
            return httpx.Response(200, json={"token": token, "expires_in": 300})
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in valid:
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.test/token",service="svc"'
                },
            )
        return httpx.Response(200, json={})

    t = RegistryTransport(
        RegistryOptions(),
        _keychain(tmp_path, "reg.test"),
        transport=httpx.MockTransport(handler),
    )
    ep = t.endpoint("reg.test", "push")
    pull = ("repository:a:pull",)
    assert ep.send("GET", "/v2/a/x", scopes=pull, what="x").status_code == 200
    assert ep.send("GET", "/v2/a/y", scopes=pull, what="x").status_code == 200
    assert issued == ["repository:a:pull"]  # cached
    push = ("repository:a:pull,push", "repository:b:pull")
    assert ep.send("GET", "/v2/a/z", scopes=push, what="x").status_code == 200
    assert issued[-1] == "repository:a:pull,push,repository:b:pull"
    valid.clear()  # server revokes: a 401 triggers one refresh
    assert ep.send("GET", "/v2/a/x", scopes=pull, what="x").status_code == 200
    assert len(issued) == 3
    t.close()


def test_wrong_credentials_token_error_has_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(401, json={"details": "bad"})
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="s"'}
        )

    caplog.set_level(logging.DEBUG)
    t = RegistryTransport(
        RegistryOptions(),
        _keychain(tmp_path, "reg.test"),
        transport=httpx.MockTransport(handler),
    )
    ep = t.endpoint("reg.test", "pull")
    with pytest.raises(AuthError) as info:
        ep.send(
            "GET", "/v2/a/manifests/1", scopes=("repository:a:pull",), what="pulling reg.test/a:1"
        )
    text = info.value.render()
    assert "pulling reg.test/a:1" in text
    assert "the registry rejected the credentials for reg.test from" in text
    assert "config.json" in text
    assert SECRET not in text
    assert base64.b64encode(f"user:{SECRET}".encode()).decode() not in caplog.text
    assert SECRET not in caplog.text
    t.close()


def test_https_then_http_fallback_for_loopback_only() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        if request.url.scheme == "https":
            raise httpx.ConnectError("wrong version number")
        return httpx.Response(200)

    t = RegistryTransport(RegistryOptions(), Keychain(None), transport=httpx.MockTransport(handler))
    assert t.endpoint("127.0.0.1:5000", "pull").base_url("x") == "http://127.0.0.1:5000"
    assert urls == ["https://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/"]
    with pytest.raises(RegistryError, match=r"cannot connect \(reg.test\)"):
        t.endpoint("reg.test", "pull").base_url("pulling reg.test/a")
    t.close()


def test_docker_hub_uses_registry_1() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200)

    t = RegistryTransport(RegistryOptions(), Keychain(None), transport=httpx.MockTransport(handler))
    assert t.endpoint("index.docker.io", "pull").base_url("x") == "https://registry-1.docker.io"
    t.close()


def test_bad_ca_file(tmp_path: Path) -> None:
    opts = RegistryOptions(registry_certificates={"reg.test": tmp_path / "missing.pem"})
    t = RegistryTransport(opts, Keychain(None))
    with pytest.raises(RegistryError, match=r"missing\.pem"):
        t.endpoint("reg.test", "pull")
    t.close()


def test_identity_token_uses_refresh_grant(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"reg.test": {"identitytoken": "refresh-secret"}}})
    )
    forms: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            assert request.method == "POST"
            forms.append(request.content)
            return httpx.Response(200, json={"access_token": "acc"})
        if request.headers.get("authorization") != "Bearer acc":
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="s"'}
            )
        return httpx.Response(200)

    t = RegistryTransport(
        RegistryOptions(), Keychain(tmp_path), transport=httpx.MockTransport(handler)
    )
    ep = t.endpoint("reg.test", "pull")
    assert ep.send("GET", "/v2/a/x", scopes=("repository:a:pull",), what="x").status_code == 200
    assert b"grant_type=refresh_token" in forms[0]
    assert b"refresh_token=refresh-secret" in forms[0]
    t.close()


def test_anonymous_bearer_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            assert "authorization" not in request.headers
            return httpx.Response(200, json={"token": "anon"})
        if request.headers.get("authorization") != "Bearer anon":
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="s"'}
            )
        return httpx.Response(200)

    t = RegistryTransport(RegistryOptions(), Keychain(None), transport=httpx.MockTransport(handler))
    ep = t.endpoint("index.docker.io", "pull")
    scopes = ("repository:library/busybox:pull",)
    assert (
        ep.send("GET", "/v2/library/busybox/manifests/1", scopes=scopes, what="x").status_code
        == 200
    )
    t.close()


def test_insecure_registry_serving_https() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        if request.url.scheme == "http":
            return httpx.Response(400, text="Client sent an HTTP request to an HTTPS server.")
        return httpx.Response(200)

    opts = RegistryOptions(insecure_registries=frozenset({"reg.test"}))
    t = RegistryTransport(opts, Keychain(None), transport=httpx.MockTransport(handler))
    assert t.endpoint("reg.test", "push").base_url("x") == "https://reg.test"
    assert urls == ["http://reg.test/v2/", "https://reg.test/v2/"]
    # --insecure-pull does not make pushes insecure
    opts = RegistryOptions(insecure_pull=True)
    urls.clear()
    t = RegistryTransport(opts, Keychain(None), transport=httpx.MockTransport(handler))
    assert t.endpoint("reg.test", "push").base_url("x") == "https://reg.test"
    assert urls == ["https://reg.test/v2/"]
    t.close()


def test_no_credentials_to_other_hosts(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "reg.test" and not _basic_ok(request):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200)

    t = RegistryTransport(
        RegistryOptions(), _keychain(tmp_path, "reg.test"), transport=httpx.MockTransport(handler)
    )
    ep = t.endpoint("reg.test", "push")
    ep.send("PUT", "https://storage.test/upload?x=1", scopes=("s",), what="x", body=b"data")
    assert seen[-1].url.host == "storage.test"
    assert "authorization" not in seen[-1].headers
    ep.send("GET", "https://reg.test/v2/a", scopes=("s",), what="x")
    assert _basic_ok(seen[-1])
    t.close()


def _handshake_start(ctx: ssl.SSLContext) -> None:
    """Make the context start a client handshake in memory (no network needed)."""
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="reg.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()


def test_system_trust_loaded_on_first_handshake_only() -> None:
    if ssl.create_default_context().cert_store_stats()["x509_ca"] == 0:
        pytest.skip("this machine has no system CA certificates")
    ctx = SystemTrustContext()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing loaded while unused
    _handshake_start(ctx)
    assert ctx.cert_store_stats()["x509_ca"] > 0
    skipping = SystemTrustContext()
    skipping.check_hostname = False
    skipping.verify_mode = ssl.CERT_NONE
    _handshake_start(skipping)
    assert skipping.cert_store_stats()["x509_ca"] == 0  # not verifying: never loaded


def test_endpoints_share_tls_contexts_per_setting(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    t = RegistryTransport(
        RegistryOptions(registry_certificates={"own.test": ca}), Keychain(tmp_path)
    )
    try:
        contexts = {
            (host, purpose): t.endpoint(host, purpose).client._transport._pool._ssl_context  # type: ignore[attr-defined]
            for host in ("a.test", "b.test", "own.test")
            for purpose in ("pull", "push")
        }
        shared = contexts["a.test", "pull"]
        assert all(contexts[h, p] is shared for h in ("a.test", "b.test") for p in ("pull", "push"))
        own = contexts["own.test", "pull"]
        assert own is not shared
        assert contexts["own.test", "push"] is own
        assert own.cert_store_stats()["x509_ca"] == 1  # the given CA: loaded at once
    finally:
        t.close()
