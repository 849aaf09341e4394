"""Which git lamina runs and what it passes on from its environment (the executor image's
relocated git lives in ``$GIT_EXEC_PATH``; TLS trust from ``SSL_CERT_FILE``/``SSL_CERT_DIR``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lamina.context._git import _installation_env, find_git

_VARS = (
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_git_from_git_exec_path_first(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    core = tmp_path / "git-core"
    core.mkdir()
    env.setenv("GIT_EXEC_PATH", str(core))
    assert find_git() == shutil.which("git")  # no git there: PATH's
    (core / "git").write_text("#!/bin/false\n")
    (core / "git").chmod(0o755)
    assert find_git() == str(core / "git")


def test_environment_passed_to_git(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    assert _installation_env(tmp_path) == {}  # nothing set: git's own defaults
    assert list(tmp_path.iterdir()) == []
    env.setenv("GIT_EXEC_PATH", "/kaniko/git/libexec/git-core")
    env.setenv("GIT_TEMPLATE_DIR", "/kaniko/git/templates")
    certs = tmp_path / "certs"
    certs.mkdir()
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (certs / "extra.crt").write_text(pem)
    env.setenv("SSL_CERT_DIR", str(certs))
    home = tmp_path / "home"
    home.mkdir()
    got = _installation_env(home)
    assert got == {
        "GIT_EXEC_PATH": "/kaniko/git/libexec/git-core",
        "GIT_TEMPLATE_DIR": "/kaniko/git/templates",
        "GIT_SSL_CAINFO": str(home / "ca-certificates.pem"),
    }
    assert pem in (home / "ca-certificates.pem").read_text()
    env.setenv("GIT_SSL_CAINFO", "/my/ca.pem")  # the user's choice wins
    assert _installation_env(home)["GIT_SSL_CAINFO"] == "/my/ca.pem"


def test_ssh_remote_without_an_ssh_program(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    """The executor images have no ssh: a clear error, not git's "cannot run ssh"."""
    from lamina.context import _git
    from lamina.errors import BuildStepError

    source = _git.GitSource(
        remote="git@example.com:org/repo.git", ref=None, subdir="", keep_git_dir=False,
        checksum=None, submodules=False, mtime=None, ssh=True,
    )  # fmt: skip
    real_which = shutil.which

    def which(name: str, mode: int = os.F_OK | os.X_OK, path: str | None = None) -> str | None:
        return None if name == "ssh" else real_which(name, mode, path)

    env.setattr(shutil, "which", which)
    with pytest.raises(BuildStepError) as info:
        _git._Git(
            source, home=tmp_path, auth_header=None, ssh_socket=tmp_path / "agent.sock",
            location=None, timeout=1,
        )  # fmt: skip
    assert "needs the ssh program" in str(info.value)
    assert "https://" in (info.value.hint or "")
