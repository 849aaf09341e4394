"""RUN --mount=type=secret|ssh: what a step gets (files, env, sockets) and what is refused."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.builder import SecretSource, SSHSource
from lamina.builder._mounts import secret_mounts, unsupported_mount
from lamina.builder._runcmd import check_secret_mounts
from lamina.dockerfile import Mount, parse_mount
from lamina.errors import BuildStepError, SourceLocation

LOC = SourceLocation(file="Dockerfile", line=7)
VALUE = b"hunter2-\x00-not-printable"


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    try:
        yield path
    finally:
        sock.close()


def _mounts(*specs: str) -> list[Mount]:
    return [parse_mount(s) for s in specs]


def test_secret_and_ssh_are_supported() -> None:
    assert unsupported_mount(parse_mount("type=secret,id=x")) is None
    assert unsupported_mount(parse_mount("type=ssh")) is None


def test_file_secret_default_target_mode_owner(tmp_path: Path) -> None:
    src = tmp_path / "tok"
    src.write_bytes(VALUE)
    got = secret_mounts(
        _mounts("type=secret,id=tok"),
        secrets=[SecretSource(id="tok", path=src)],
        agents=[],
        workdir="/w",
        run_env={},
        scratch=tmp_path / "scratch",
        location=LOC,
    )
    assert got.env == {}
    (bind,) = got.mounts
    assert bind.target == "/run/secrets/tok"
    assert bind.readonly
    assert bind.source.read_bytes() == VALUE
    st = bind.source.stat()
    assert stat.S_IMODE(st.st_mode) == 0o400
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 0)
    # a private directory of the step's scratch directory, not the source itself
    assert bind.source.parent.parent == tmp_path / "scratch"
    assert stat.S_IMODE(bind.source.parent.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_file_secret_custom_target_mode_owner(tmp_path: Path) -> None:
    got = secret_mounts(
        _mounts("type=secret,id=tok,target=rel/key,mode=0440,uid=1000,gid=1001"),
        secrets=[SecretSource(id="tok", env="T", value=b"v")],
        agents=[],
        workdir="/w",
        run_env={},
        scratch=tmp_path,
        location=LOC,
    )
    (bind,) = got.mounts
    assert bind.target == "/w/rel/key"
    st = bind.source.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 1000, 1001)


def test_env_secret_has_no_file_unless_a_target_is_given(tmp_path: Path) -> None:
    secrets = [SecretSource(id="tok", env="T", value=b"s3cr3t")]
    got = secret_mounts(
        _mounts("type=secret,id=tok,env=TOKEN"),
        secrets=secrets,
        agents=[],
        workdir="/",
        run_env={},
        scratch=tmp_path / "s",
        location=LOC,
    )
    assert got.mounts == ()
    assert got.env == {"TOKEN": "s3cr3t"}
    assert "s3cr3t" not in repr(got)
    assert not (tmp_path / "s").exists()
    both = secret_mounts(
        _mounts("type=secret,id=tok,env=TOKEN,target=/t"),
        secrets=secrets,
        agents=[],
        workdir="/",
        run_env={},
        scratch=tmp_path / "s",
        location=LOC,
    )
    assert [m.target for m in both.mounts] == ["/t"]
    assert both.env == {"TOKEN": "s3cr3t"}


def test_missing_optional_secret_is_skipped(tmp_path: Path) -> None:
    got = secret_mounts(
        _mounts("type=secret,id=nope", "type=secret,id=unset,env=X"),
        secrets=[SecretSource(id="unset", env="X", value=None)],
        agents=[],
        workdir="/",
        run_env={},
        scratch=tmp_path,
        location=LOC,
    )
    assert got.mounts == ()
    assert got.env == {}


def test_missing_required_secret_names_id_and_line(tmp_path: Path) -> None:
    mounts = _mounts("type=secret,id=api-key,required=true")
    with pytest.raises(BuildStepError) as info:
        check_secret_mounts(mounts, [], [], LOC)
    assert "api-key" in info.value.message
    assert info.value.location == LOC
    # an env secret whose variable is unset counts as missing at run time
    with pytest.raises(BuildStepError, match="api-key"):
        secret_mounts(
            mounts,
            secrets=[SecretSource(id="api-key", env="X", value=None)],
            agents=[],
            workdir="/",
            run_env={},
            scratch=tmp_path,
            location=LOC,
        )
    check_secret_mounts(mounts, [SecretSource(id="api-key", env="X", value=b"1")], [], LOC)


def test_error_messages_never_show_the_value(tmp_path: Path) -> None:
    with pytest.raises(BuildStepError) as info:
        secret_mounts(
            _mounts("type=secret,id=tok,env=TOKEN"),
            secrets=[SecretSource(id="tok", env="T", value=b"s3cr3t\x00x")],
            agents=[],
            workdir="/",
            run_env={},
            scratch=tmp_path,
            location=LOC,
        )
    assert "s3cr3t" not in str(info.value)
    assert "NUL" in info.value.message


def test_ssh_default_target_and_auth_sock(tmp_path: Path, agent_socket: Path) -> None:
    agents = [SSHSource(id="default", socket=agent_socket), SSHSource(id="b", socket=agent_socket)]
    got = secret_mounts(
        _mounts("type=ssh", "type=ssh,id=b", "type=ssh,id=b,target=/s"),
        secrets=[],
        agents=agents,
        workdir="/",
        run_env={},
        scratch=tmp_path,
        location=LOC,
    )
    assert [(m.source, m.target) for m in got.mounts] == [
        (agent_socket, "/run/buildkit/ssh_agent.0"),
        (agent_socket, "/run/buildkit/ssh_agent.1"),
        (agent_socket, "/s"),
    ]
    assert got.env == {"SSH_AUTH_SOCK": "/run/buildkit/ssh_agent.0"}
    kept = secret_mounts(
        _mounts("type=ssh"),
        secrets=[],
        agents=agents,
        workdir="/",
        run_env={"SSH_AUTH_SOCK": "/mine"},
        scratch=tmp_path,
        location=LOC,
    )
    assert kept.env == {}


def test_ssh_missing(tmp_path: Path) -> None:
    got = secret_mounts(
        _mounts("type=ssh,id=gh"),
        secrets=[],
        agents=[],
        workdir="/",
        run_env={},
        scratch=tmp_path,
        location=LOC,
    )
    assert got.mounts == ()
    with pytest.raises(BuildStepError, match="'gh'") as info:
        check_secret_mounts(_mounts("type=ssh,id=gh,required"), [], [], LOC)
    assert info.value.hint is not None
    assert "--ssh gh=" in info.value.hint
