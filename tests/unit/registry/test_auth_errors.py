"""401/403 errors say which credentials were sent, from which file, or that none were."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lamina.errors import AuthError
from lamina.oci import Platform, Reference
from lamina.registry import DockerConfigLocation, RegistryClient, RegistryOptions

HOST = "reg.test"
REF = Reference.parse(f"{HOST}/app:1")
AMD64 = Platform.parse("linux/amd64")
SECRET = "s3cret-pw-77"


def _config(d: Path, name: str, host: str, password: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"user:{password}".encode()).decode()
    (d / name).write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return d / name


def _basic_registry(*, forbid: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    want = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != want:
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Basic realm="r"'},
                json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            )
        if forbid:
            return httpx.Response(403, json={"errors": [{"message": "denied"}]})
        return httpx.Response(404)

    return handler


def _pull_error(
    config: DockerConfigLocation | Path, handler: Callable[[httpx.Request], httpx.Response]
) -> AuthError:
    with (
        RegistryClient(
            RegistryOptions(), docker_config_dir=config, transport=httpx.MockTransport(handler)
        ) as client,
        pytest.raises(AuthError) as info,
    ):
        client.pull(REF, platform=AMD64)
    return info.value


def test_no_docker_config_at_all(tmp_path: Path) -> None:
    location = DockerConfigLocation(tmp_path / "kaniko", tmp_path / "home" / "config.json")
    err = _pull_error(location, _basic_registry())
    assert err.exit_code == 4
    assert f"pulling {REF}: 401 Unauthorized: authentication required: no credentials: " in (
        err.message
    )
    assert "no docker config found" in err.message
    for path in location.candidates():
        assert str(path) in err.message
    assert err.hint is not None
    assert str(tmp_path / "kaniko" / "config.json") in err.hint
    assert "dockerconfigjson" in err.hint


def test_no_credentials_for_this_registry(tmp_path: Path) -> None:
    path = _config(tmp_path, "config.json", "other.test", SECRET)
    err = _pull_error(tmp_path, _basic_registry())
    assert err.message.endswith(f"no credentials for {HOST} in {path}")
    assert err.hint is not None
    assert f"add credentials for {HOST} to {path}" in err.hint
    assert "rejected" not in err.message


def test_credentials_rejected_names_the_secret_file(tmp_path: Path) -> None:
    path = _config(tmp_path, ".dockerconfigjson", HOST, "wrong-password")
    err = _pull_error(tmp_path, _basic_registry())
    assert err.message.endswith(f"the registry rejected the credentials for {HOST} from {path}")
    assert err.hint is not None
    assert str(path) in err.hint
    assert "wrong-password" not in err.render()


def test_valid_credentials_without_permission(tmp_path: Path) -> None:
    path = _config(tmp_path, "config.json", HOST, SECRET)
    err = _pull_error(tmp_path, _basic_registry(forbid=True))
    assert f"pulling {REF}: 403 Forbidden" in err.message
    assert f"the credentials for {HOST} from {path} are valid but lack permission" in err.message
    assert SECRET not in err.render()


def test_push_error_names_the_home_fallback(tmp_path: Path) -> None:
    """The push path (preflight) gives the same account of the credentials."""
    home = _config(tmp_path / "root" / ".docker", "config.json", HOST, "bad")
    location = DockerConfigLocation(tmp_path / "kaniko", home)
    with (
        RegistryClient(
            RegistryOptions(),
            docker_config_dir=location,
            transport=httpx.MockTransport(_basic_registry()),
        ) as client,
        pytest.raises(AuthError) as info,
    ):
        client.check_push_permission([REF])
    assert info.value.message.endswith(f"rejected the credentials for {HOST} from {home}")


def test_anonymous_token_refused_says_no_credentials(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            return httpx.Response(401)
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.test/t",service="s"'}
        )

    path = _config(tmp_path, "config.json", "other.test", SECRET)
    err = _pull_error(tmp_path, handler)
    assert "the token service of reg.test refused the request (401)" in err.message
    assert err.message.endswith(f"no credentials for {HOST} in {path}")


def test_refused_without_a_challenge(tmp_path: Path) -> None:
    """A 403 from a registry (or proxy) that never asked for credentials."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(403)

    path = _config(tmp_path, "config.json", HOST, SECRET)
    err = _pull_error(tmp_path, handler)
    assert err.message.endswith(
        f"the registry asked for no credentials, so the credentials for {HOST} from {path} "
        "were not sent"
    )
