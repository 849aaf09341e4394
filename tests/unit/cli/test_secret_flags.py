"""``--secret`` and ``--ssh``: syntax, sources, errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.builder import SecretSource, SSHSource
from lamina.cli._flags import parse_flags
from lamina.cli._options import executor_config, parse_secrets, parse_ssh
from lamina.cli._specs import BUILD_FLAGS
from lamina.errors import NotSupportedError, UsageError


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    try:
        yield path
    finally:
        sock.close()


def test_file_secret(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("s3cr3t")
    for spec in (f"id=tok,src={f}", f"id=tok,source={f}", f"type=file,id=tok,src={f}"):
        (got,) = parse_secrets([spec], {})
        assert got == SecretSource(id="tok", path=f)


def test_file_secret_defaults_to_the_id_as_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tok").write_text("x")
    (got,) = parse_secrets(["id=tok"], {})
    assert got.path == tmp_path / "tok"


def test_env_secret() -> None:
    env = {"TOKEN": "s3cr3t", "tok": "from-id"}
    assert parse_secrets(["id=tok,env=TOKEN"], env)[0].value == b"s3cr3t"
    assert parse_secrets(["id=tok,type=env,src=TOKEN"], env)[0].value == b"s3cr3t"
    assert parse_secrets(["id=tok,type=env"], env)[0].value == b"from-id"
    # buildx: no src/env/type and a variable named like the id → that variable
    assert parse_secrets(["id=tok"], env)[0].value == b"from-id"
    # an unset variable: the secret is missing (an error only where required)
    missing = parse_secrets(["id=tok,env=NOPE"], env)[0]
    assert missing.value is None
    assert missing.env == "NOPE"


def test_secret_value_not_in_repr() -> None:
    (got,) = parse_secrets(["id=tok,env=TOKEN"], {"TOKEN": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(got)


def test_later_secret_with_same_id_wins(tmp_path: Path) -> None:
    got = parse_secrets(["id=a,env=X", "id=b,env=Y", "id=a,env=Z"], {"X": "1", "Y": "2", "Z": "3"})
    assert [(s.id, s.value) for s in got] == [("b", b"2"), ("a", b"3")]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("src=/etc/hostname", "id is missing"),
        ("id=x,bogus=1", "unexpected key 'bogus'"),
        ("id=x,type=vault", "unsupported secret type"),
        ("id=x,justaword", "key=value"),
        ("id=x,src=a,env=B", "either src= or env="),
        ("id=x,type=file,env=B", "type=env"),
        ("id=x,src=/no/such/file", "does not exist"),
    ],
)
def test_bad_secret_flags(spec: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_secrets([spec], {})
    assert words in info.value.message
    assert "--secret" in info.value.message


def test_ssh_default_from_env(agent_socket: Path) -> None:
    (got,) = parse_ssh(["default"], {"SSH_AUTH_SOCK": str(agent_socket)})
    assert got == SSHSource(id="default", socket=agent_socket)
    (named,) = parse_ssh([f"gh={agent_socket}"], {})
    assert named == SSHSource(id="gh", socket=agent_socket)


def test_ssh_errors(tmp_path: Path, agent_socket: Path) -> None:
    with pytest.raises(UsageError, match="SSH_AUTH_SOCK is not set"):
        parse_ssh(["default"], {})
    with pytest.raises(UsageError, match="id is missing"):
        parse_ssh([f"={agent_socket}"], {})
    with pytest.raises(UsageError, match="--ssh"):
        parse_ssh([f"default={tmp_path / 'nope'}"], {})
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(NotSupportedError, match="key files") as info:
        parse_ssh([f"default={key}"], {})
    assert info.value.hint is not None
    assert "ssh-add" in info.value.hint
    with pytest.raises(NotSupportedError, match="several"):
        parse_ssh([f"default={agent_socket},{agent_socket}"], {})


def test_flags_reach_build_options(tmp_path: Path, agent_socket: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    secret = tmp_path / "tok"
    secret.write_text("x")
    parsed = parse_flags(
        [
            f"--context={ctx}",
            "--no-push",
            "--secret",
            f"id=tok,src={secret}",
            "--secret=id=e,env=E",
            "--ssh",
            "default",
        ],
        BUILD_FLAGS,
        command="executor",
    )
    config = executor_config(parsed, {"E": "v", "SSH_AUTH_SOCK": str(agent_socket)})
    assert config.build.secrets == (
        SecretSource(id="tok", path=secret),
        SecretSource(id="e", env="E", value=b"v"),
    )
    assert config.build.ssh == (SSHSource(id="default", socket=agent_socket),)


def test_missing_secret_file_names_the_flag(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    parsed = parse_flags(
        [f"--context={ctx}", "--no-push", f"--secret=id=x,src={tmp_path}/gone"],
        BUILD_FLAGS,
        command="executor",
    )
    with pytest.raises(UsageError, match=r"--secret.*gone"):
        executor_config(parsed, {})
