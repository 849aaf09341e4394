from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from lamina.errors import AuthError
from lamina.registry._auth import (
    SECRET_FILE,
    DockerConfigLocation,
    Keychain,
    default_docker_config,
    default_docker_config_dir,
    normalize_registry,
)


def _write(d: Path, obj: object) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(obj), encoding="utf-8")
    return d


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_auth_field(tmp_path: Path) -> None:
    d = _write(tmp_path, {"auths": {"reg.example:5000": {"auth": _b64("alice:s3:cret")}}})
    cred = Keychain(d).resolve("reg.example:5000")
    assert cred is not None
    assert (cred.username, cred.password) == ("alice", "s3:cret")
    assert "s3:cret" not in repr(cred)
    assert Keychain(d).resolve("other.example") is None


def test_username_password_and_url_keys(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        {"auths": {"https://reg.example/v2/": {"username": "bob", "password": "pw"}}},
    )
    cred = Keychain(d).resolve("reg.example")
    assert cred is not None
    assert cred.username == "bob"


def test_identity_token(tmp_path: Path) -> None:
    d = _write(tmp_path, {"auths": {"reg.example": {"identitytoken": "refresh-me"}}})
    cred = Keychain(d).resolve("reg.example")
    assert cred is not None
    assert cred.identity_token == "refresh-me"
    assert not cred.has_basic


def test_docker_hub_key(tmp_path: Path) -> None:
    d = _write(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": _b64("hub:pw")}}})
    for name in ("index.docker.io", "docker.io", "registry-1.docker.io"):
        cred = Keychain(d).resolve(name)
        assert cred is not None
        assert cred.username == "hub"
    assert normalize_registry("Docker.IO") == "index.docker.io"


def test_missing_file_is_anonymous(tmp_path: Path) -> None:
    assert Keychain(tmp_path / "nope").resolve("x") is None
    assert Keychain(None).resolve("x") is None


def test_malformed_json(tmp_path: Path) -> None:
    tmp_path.joinpath("config.json").write_text('{"auths": {', encoding="utf-8")
    with pytest.raises(AuthError, match=r"not valid JSON") as info:
        Keychain(tmp_path).resolve("x")
    assert str(tmp_path / "config.json") in str(info.value)


def test_bad_auth_value_names_host_not_secret(tmp_path: Path) -> None:
    d = _write(tmp_path, {"auths": {"reg.example": {"auth": _b64("nocolon")}}})
    with pytest.raises(AuthError) as info:
        Keychain(d).resolve("reg.example")
    assert "reg.example" in str(info.value)
    assert "nocolon" not in str(info.value)


def _helper(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _env(bindir: Path) -> dict[str, str]:
    return {"PATH": f"{bindir}:{os.environ.get('PATH', '')}"}


def test_cred_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _helper(
        bindir,
        "fake",
        'read url; [ "$1" = get ] || exit 3\n'
        'printf \'{"ServerURL":"%s","Username":"helper-user","Secret":"helper-pw"}\' "$url"\n',
    )
    monkeypatch.setenv("PATH", _env(bindir)["PATH"])
    d = _write(tmp_path / "cfg", {"credHelpers": {"reg.example": "fake"}})
    cred = Keychain(d, environ=_env(bindir)).resolve("reg.example")
    assert cred is not None
    assert (cred.username, cred.password) == ("helper-user", "helper-pw")


def test_creds_store_token_and_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _helper(
        bindir,
        "store",
        'read url\nif [ "$url" = "https://index.docker.io/v1/" ]; then\n'
        '  echo \'{"Username":"<token>","Secret":"idtok"}\'; exit 0; fi\n'
        "echo 'credentials not found in native keychain'; exit 1\n",
    )
    monkeypatch.setenv("PATH", _env(bindir)["PATH"])
    d = _write(tmp_path / "cfg", {"credsStore": "store"})
    kc = Keychain(d, environ=_env(bindir))
    hub = kc.resolve("docker.io")
    assert hub is not None
    assert hub.identity_token == "idtok"
    assert kc.resolve("reg.example") is None


def test_helper_missing_and_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    _helper(bindir, "broken", "echo 'secret-ish output'; exit 7\n")
    monkeypatch.setenv("PATH", _env(bindir)["PATH"])
    d = _write(tmp_path / "cfg", {"credHelpers": {"a.example": "absent", "b.example": "broken"}})
    kc = Keychain(d, environ=_env(bindir))
    with pytest.raises(AuthError, match="docker-credential-absent"):
        kc.resolve("a.example")
    with pytest.raises(AuthError, match="status 7") as info:
        kc.resolve("b.example")
    assert "secret-ish" not in str(info.value)


def test_default_config_dir(tmp_path: Path) -> None:
    assert default_docker_config_dir({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path
    got = default_docker_config_dir({"HOME": str(tmp_path)})
    assert got in (Path("/kaniko/.docker"), tmp_path / ".docker")


# --------------------------------------------------------------- where config.json is


def _auths(host: str, user: str) -> dict[str, object]:
    return {"auths": {host: {"auth": _b64(f"{user}:pw")}}}


def test_config_json_wins_over_dockerconfigjson(tmp_path: Path) -> None:
    d = _write(tmp_path / "docker", _auths("reg.example", "from-config"))
    (d / SECRET_FILE).write_text(json.dumps(_auths("reg.example", "from-secret")))
    kc = Keychain(d)
    cred = kc.resolve("reg.example")
    assert cred is not None
    assert cred.username == "from-config"
    assert kc.config_path == d / "config.json"


def test_dockerconfigjson_secret_is_read_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kubernetes.io/dockerconfigjson secret mounted whole at the directory."""
    d = tmp_path / "docker"
    d.mkdir()
    (d / SECRET_FILE).write_text(json.dumps(_auths("reg.example", "from-secret")))
    caplog.set_level(logging.INFO, logger="lamina.registry")
    kc = Keychain(DockerConfigLocation(d, tmp_path / "home" / ".docker" / "config.json"))
    cred = kc.resolve("reg.example")
    assert cred is not None
    assert cred.username == "from-secret"
    assert kc.config_path == d / SECRET_FILE
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        f"reading credentials from {d / SECRET_FILE} "
        "(a dockerconfigjson secret; no config.json beside it)"
    ]
    kc.resolve("other.example")  # read once, said once
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1


def test_home_fallback_when_the_directory_has_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Older GitLab recipes write /root/.docker/config.json while DOCKER_CONFIG is
    /kaniko/.docker."""
    kaniko = tmp_path / "kaniko" / ".docker"
    kaniko.mkdir(parents=True)
    home = _write(tmp_path / "root" / ".docker", _auths("reg.example", "from-home"))
    location = default_docker_config({"DOCKER_CONFIG": str(kaniko), "HOME": str(tmp_path / "root")})
    assert location.candidates() == (
        kaniko / "config.json",
        kaniko / SECRET_FILE,
        home / "config.json",
    )
    caplog.set_level(logging.INFO, logger="lamina.registry")
    kc = Keychain(location)
    cred = kc.resolve("reg.example")
    assert cred is not None
    assert cred.username == "from-home"
    assert f"reading credentials from {home / 'config.json'} (no docker config in {kaniko})" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.INFO
    ]
    # a config.json in the directory hides the home one
    _write(kaniko, _auths("reg.example", "from-kaniko"))
    cred = Keychain(location).resolve("reg.example")
    assert cred is not None
    assert cred.username == "from-kaniko"


def test_home_directory_is_not_searched_twice(tmp_path: Path) -> None:
    """Without DOCKER_CONFIG (and no /kaniko) the directory is ~/.docker itself."""
    docker = tmp_path / ".docker"
    location = DockerConfigLocation(docker, docker / "config.json")
    assert location.candidates() == (docker / "config.json", docker / SECRET_FILE)


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    d = _write(tmp_path, _auths("reg.example", "u"))
    path = d / "config.json"
    if os.geteuid() == 0:  # root reads mode-000 files: make it unreadable another way
        path.unlink()
        path.symlink_to(path)  # a symlink loop: ELOOP
    else:
        path.chmod(0)
    with pytest.raises(AuthError, match="cannot read docker config") as info:
        Keychain(d).resolve("reg.example")
    assert str(path) in info.value.message
    assert info.value.exit_code == 4


def test_config_json_that_is_a_directory(tmp_path: Path) -> None:
    """A secret mounted at .../config.json makes a directory of its keys."""
    (tmp_path / "config.json").mkdir()
    with pytest.raises(AuthError, match="is a directory") as info:
        Keychain(tmp_path).resolve("reg.example")
    assert str(tmp_path / "config.json") in info.value.message
    assert info.value.hint is not None
    assert "subPath" in info.value.hint


def test_malformed_dockerconfigjson_names_it(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("auths: {}\n")
    with pytest.raises(AuthError, match="not valid JSON") as info:
        Keychain(tmp_path).resolve("reg.example")
    assert str(tmp_path / SECRET_FILE) in info.value.message
    (tmp_path / SECRET_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(AuthError, match="not UTF-8"):
        Keychain(tmp_path).resolve("reg.example")


def test_describe_says_where_or_that_none_was_found(tmp_path: Path) -> None:
    d = _write(tmp_path / "cfg", _auths("reg.example", "u"))
    kc = Keychain(d)
    found = kc.describe("reg.example")
    assert found.found
    assert found.summary() == f"credentials for reg.example from {d / 'config.json'}"
    assert kc.describe("other.example").summary() == (
        f"no credentials for other.example in {d / 'config.json'}"
    )
    empty = tmp_path / "empty"
    none = Keychain(DockerConfigLocation(empty, tmp_path / "h" / "config.json"))
    text = none.describe("reg.example").summary()
    assert text.startswith("no credentials: no docker config found (looked for ")
    assert str(empty / "config.json") in text
    assert str(empty / SECRET_FILE) in text
    assert str(tmp_path / "h" / "config.json") in text


def test_docker_config_naming_a_file(tmp_path: Path) -> None:
    """DOCKER_CONFIG=/kaniko/.docker/config.json: a clear error, not anonymous access."""
    path = _write(tmp_path, _auths("reg.example", "u")) / "config.json"
    with pytest.raises(AuthError, match="is a file") as info:
        Keychain(default_docker_config({"DOCKER_CONFIG": str(path)})).resolve("reg.example")
    assert str(path) in info.value.message
    assert info.value.hint is not None
    assert "DOCKER_CONFIG" in info.value.hint
