from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from lamina.errors import AuthError
from lamina.registry._auth import Keychain, default_docker_config_dir, normalize_registry


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
