"""Credentials where kaniko users put them, against the htpasswd registry.

The executor reads ``$DOCKER_CONFIG/config.json``, else ``$DOCKER_CONFIG/.dockerconfigjson``
(a ``kubernetes.io/dockerconfigjson`` secret mounted whole), else
``$HOME/.docker/config.json``; an authentication failure names the file it read, or says
none was found, and tells "no credentials" from "credentials rejected".
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lamina.cli import run as cli_run
from tests.support.registry import RegistryServer, skopeo

pytestmark = [pytest.mark.registry]


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from the credentials test\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    return ctx


def _auths(server: RegistryServer, password: str | None = None) -> str:
    secret = server.password if password is None else password
    token = base64.b64encode(f"{server.username}:{secret}".encode()).decode()
    return json.dumps({"auths": {server.host: {"auth": token}}})


def _build(ctx: Path, server: RegistryServer, tag: str, env: dict[str, str], tmp_path: Path) -> int:
    return cli_run(
        [
            f"--context={ctx}",
            f"--destination={server.host}/creds/app:{tag}",
            f"--insecure-registry={server.host}",
            f"--kaniko-dir={tmp_path / ('k-' + tag)}",
        ],
        env,
        prog="executor",
    )


def _pushed(server: RegistryServer, tag: str) -> bool:
    out = skopeo("inspect", *server.skopeo_args(), f"docker://{server.host}/creds/app:{tag}")
    return bool(json.loads(out)["Digest"])


def test_dockerconfigjson_secret_mounted_whole(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = tmp_path / "kaniko" / ".docker"
    docker.mkdir(parents=True)
    (docker / ".dockerconfigjson").write_text(_auths(registry_htpasswd))
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home")}
    assert _build(ctx, registry_htpasswd, "secret", env, tmp_path) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"reading credentials from {docker / '.dockerconfigjson'}" in err
    assert _pushed(registry_htpasswd, "secret")


def test_home_docker_config_when_docker_config_has_none(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Older GitLab docs write /root/.docker/config.json; DOCKER_CONFIG is /kaniko/.docker."""
    docker = tmp_path / "kaniko" / ".docker"
    docker.mkdir(parents=True)
    home = tmp_path / "root"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(_auths(registry_htpasswd))
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(home)}
    assert _build(ctx, registry_htpasswd, "home", env, tmp_path) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"reading credentials from {home / '.docker' / 'config.json'}" in err
    assert _pushed(registry_htpasswd, "home")


def test_no_credentials_anywhere(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = tmp_path / "kaniko" / ".docker"
    docker.mkdir(parents=True)
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home")}
    assert _build(ctx, registry_htpasswd, "none", env, tmp_path) == 4
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err
    assert "no credentials: no docker config found (looked for " in err
    assert str(docker / "config.json") in err
    assert str(docker / ".dockerconfigjson") in err
    assert "rejected" not in err


def test_no_entry_for_the_registry(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {"elsewhere.test": {}}}))
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home")}
    assert _build(ctx, registry_htpasswd, "other", env, tmp_path) == 4
    err = capsys.readouterr().err
    assert f"no credentials for {registry_htpasswd.host} in {docker / 'config.json'}" in err


def test_rejected_credentials_name_the_file(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(_auths(registry_htpasswd, "not-the-password"))
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home")}
    assert _build(ctx, registry_htpasswd, "wrong", env, tmp_path) == 4
    err = capsys.readouterr().err
    assert (
        f"the registry rejected the credentials for {registry_htpasswd.host} "
        f"from {docker / 'config.json'}"
    ) in err
    assert "not-the-password" not in err


def test_malformed_secret_file(
    ctx: Path, registry_htpasswd: RegistryServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / ".dockerconfigjson").write_text('{"auths": ')
    env = {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path / "home")}
    assert _build(ctx, registry_htpasswd, "bad", env, tmp_path) == 4
    err = capsys.readouterr().err
    assert f"docker config {docker / '.dockerconfigjson'} is not valid JSON" in err
    assert "Traceback" not in err
