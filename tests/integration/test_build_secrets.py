"""Real builds with RUN --mount=type=secret (``--secret``) and type=ssh (``--ssh``).

The secret must reach the RUN that mounts it and nothing else: no layer (not
even an empty mount point), no config or history entry, no log line, no
error message, no file left in the build directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets as pysecrets
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.builder import SecretSource, SSHSource
from lamina.errors import BuildStepError
from lamina.oci.oci_layout import OCILayout
from tests.integration.test_build_engine import BUSYBOX, Built, make_context, run_build
from tests.integration.test_chroot_emulated_mounts import SETPRIV, build_without_mount_rights

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

BASE = """FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def _ctx(tmp_path: Path, body: str) -> Path:
    ctx = make_context(tmp_path / "ctx", BASE + body)
    shutil.copy(BUSYBOX, ctx / "busybox")
    os.chmod(ctx / "busybox", 0o755)
    return ctx


def _token() -> bytes:
    return b"lamina-secret-" + pysecrets.token_hex(16).encode()


def _assert_nowhere(built: Built, value: bytes, tmp_path: Path, log_text: str) -> None:
    """``value`` is in no layer (uncompressed), blob, config, history, log or leftover file."""
    for i, layer in enumerate(built.image.layers()):
        with layer.uncompressed() as f:
            assert value not in f.read(), f"secret in layer {i}"
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            names = [m.name.removeprefix("./") for m in tar]
        # no mount point (file or directory) of a secret or ssh mount reaches a layer
        assert not any(n == "run" or n.startswith(("run/", "w/rel")) for n in names), (i, names)
    for path in built.layout.rglob("*"):
        if path.is_file():
            assert value not in path.read_bytes(), f"secret in {path}"
    config = built.config
    assert not any(value.decode() in e for e in config.config.env or ())
    for h in config.history:
        assert value.decode() not in (h.created_by or "")
    assert value.decode() not in log_text
    for path in (tmp_path / "kaniko").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert value not in path.read_bytes(), f"secret left in {path}"


def _sha(value: bytes) -> bytes:
    return hashlib.sha256(value).hexdigest().encode() + b"\n"


@pytest.mark.parametrize("isolation", ["namespace", "chroot"])
def test_secrets_reach_the_step_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, isolation: str
) -> None:
    caplog.set_level(logging.DEBUG)
    file_value, env_value = _token(), _token()
    secret_file = tmp_path / "tok.txt"
    secret_file.write_bytes(file_value)
    ctx = _ctx(
        tmp_path,
        """FROM base
ARG VISIBLE=1
WORKDIR /w
RUN --mount=type=secret,id=tok \\
    sha256sum /run/secrets/tok | cut -d' ' -f1 > /file-sum && \\
    stat -c '%a %u %g' /run/secrets/tok > /file-perm && \\
    ! touch /run/secrets/tok 2>/dev/null
RUN --mount=type=secret,id=tok,target=rel/key,mode=0440,uid=7,gid=8 \\
    stat -c '%a %u %g' /w/rel/key > /custom-perm
RUN --mount=type=secret,id=envtok,env=TOKEN \\
    printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1 > /env-sum && \\
    test ! -e /run/secrets/envtok
RUN --mount=type=secret,id=absent --mount=type=secret,id=absent-env,env=NOPE \\
    test ! -e /run/secrets/absent && test -z "${NOPE+set}" && touch /optional-ok
RUN test ! -e /run/secrets && test -z "${TOKEN+set}" && ls -a /w > /w-listing
""",
    )
    built = run_build(
        tmp_path,
        ctx,
        isolation=isolation,
        secrets=(
            SecretSource(id="tok", path=secret_file),
            SecretSource(id="envtok", env="T", value=env_value),
            SecretSource(id="absent-env", env="NOPE", value=None),
        ),
    )
    n = len(built.image.layers())
    assert built.read_file(n - 5, "file-sum") == _sha(file_value)
    assert built.read_file(n - 5, "file-perm") == b"400 0 0\n"
    assert built.read_file(n - 4, "custom-perm") == b"440 7 8\n"
    assert built.read_file(n - 3, "env-sum") == _sha(env_value)
    assert "optional-ok" in built.layer_files(n - 2)
    assert built.read_file(n - 1, "w-listing").split() == [b".", b".."]
    for i in range(n - 5, n):
        names = set(built.layer_files(i))
        assert not any(x == "run" or x.startswith(("run/", "w/rel")) for x in names), names
    history = [h.created_by or "" for h in built.config.history]
    assert history[-3].startswith("RUN |1 VISIBLE=1 /bin/sh -c printf")
    _assert_nowhere(built, file_value, tmp_path, caplog.text)
    _assert_nowhere(built, env_value, tmp_path, caplog.text)


def test_failing_step_error_has_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    value = _token()
    ctx = _ctx(
        tmp_path,
        """FROM base
RUN --mount=type=secret,id=tok,env=TOKEN --mount=type=secret,id=tok \\
    echo about to fail && test -n "$TOKEN" && false
""",
    )
    with pytest.raises(BuildStepError) as info:
        run_build(tmp_path, ctx, secrets=(SecretSource(id="tok", env="T", value=value),))
    text = f"{info.value} {info.value.hint or ''} {info.value.message}"
    assert "about to fail" in text
    assert info.value.location is not None
    assert info.value.location.line == 5
    assert value.decode() not in text
    assert value.decode() not in caplog.text
    for path in (tmp_path / "kaniko").rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert value not in path.read_bytes(), f"secret left in {path}"


def test_required_secret_missing_names_line_and_id(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base\nRUN --mount=type=secret,id=api-key,required=true true\n")
    with pytest.raises(BuildStepError) as info:
        run_build(tmp_path, ctx)
    assert "api-key" in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 5


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("ssh-agent") is None:  # pragma: no cover - environment guard
        pytest.skip("ssh-agent (openssh-client) is not installed")
    sock = tmp_path / "agent" / "agent.sock"
    sock.parent.mkdir(mode=0o700)
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("ssh-agent did not start")
            time.sleep(0.05)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.parametrize("isolation", ["namespace", "chroot"])
def test_ssh_agent_socket_is_forwarded(tmp_path: Path, ssh_agent: Path, isolation: str) -> None:
    listed = subprocess.run(
        ["ssh-add", "-l"], env={"SSH_AUTH_SOCK": str(ssh_agent)}, capture_output=True, check=False
    )
    assert listed.returncode == 1  # the agent answers: no identities
    ctx = _ctx(
        tmp_path,
        """FROM base
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /sock
RUN --mount=type=ssh,id=other,target=/tmp/agent --mount=type=ssh,id=gone \\
    test -S /tmp/agent && echo "$SSH_AUTH_SOCK" > /sock2 && test ! -e /run/buildkit/ssh_agent.1
RUN test -z "${SSH_AUTH_SOCK+set}" && test ! -e /run/buildkit && touch /after
""",
    )
    built = run_build(
        tmp_path,
        ctx,
        isolation=isolation,
        ssh=(SSHSource(id="default", socket=ssh_agent), SSHSource(id="other", socket=ssh_agent)),
    )
    n = len(built.image.layers())
    assert built.read_file(n - 3, "sock") == b"/run/buildkit/ssh_agent.0\n"
    assert built.read_file(n - 2, "sock2") == b"/tmp/agent\n"
    assert set(built.layer_files(n - 3)) == {"sock"}
    assert set(built.layer_files(n - 2)) == {"sock2"}
    assert set(built.layer_files(n - 1)) == {"after"}


def test_required_ssh_missing(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base\nRUN --mount=type=ssh,required true\n")
    with pytest.raises(BuildStepError, match="'default'") as info:
        run_build(tmp_path, ctx)
    assert info.value.location is not None
    assert info.value.location.line == 5


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")
def test_chroot_without_mount_rights_copies_the_secret_in_and_out(tmp_path: Path) -> None:
    """No CAP_SYS_ADMIN (no private mount namespace): the secret file is copied to its
    target for the step, with its mode and owner, and taken out before the snapshot
    (an image file at the target is restored); the ssh agent socket is hard-linked in."""
    value = _token()
    secret_file = tmp_path / "tok.txt"
    secret_file.write_bytes(value)
    ctx = _ctx(
        tmp_path,
        """FROM base
RUN mkdir -p /etc && echo original > /etc/existing
RUN --mount=type=secret,id=tok,mode=0440,uid=7,gid=8 \\
    sha256sum /run/secrets/tok | cut -d' ' -f1 > /sum && \\
    stat -c '%a %u %g' /run/secrets/tok > /perm
RUN --mount=type=secret,id=tok,target=/etc/existing sha256sum /etc/existing | cut -c1-64 > /sum2
RUN test ! -e /run/secrets && cat /etc/existing > /after
""",
    )
    out = tmp_path / "out"
    proc = build_without_mount_rights(tmp_path, ctx, out, f"--secret=id=tok,src={secret_file}")
    log_text = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, log_text[-3000:]
    image = OCILayout.open(out).image()
    built = Built(result=None, layout=out, image=image)  # type: ignore[arg-type]
    n = len(image.layers())
    assert built.read_file(n - 3, "sum") == _sha(value)
    assert built.read_file(n - 3, "perm") == b"440 7 8\n"
    assert built.read_file(n - 2, "sum2") == _sha(value)
    assert built.read_file(n - 1, "after") == b"original\n"
    _assert_nowhere(built, value, tmp_path, log_text)

    ssh_ctx = _ctx(
        tmp_path / "ssh",
        "FROM base\n"
        'RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /sock\n',
    )
    sock = tmp_path / "fake.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        out = tmp_path / "out-ssh"
        proc = build_without_mount_rights(tmp_path, ssh_ctx, out, f"--ssh=default={sock}")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    built = Built(result=None, layout=out, image=OCILayout.open(out).image())  # type: ignore[arg-type]
    n = len(built.image.layers())
    assert built.read_file(n - 1, "sock") == b"/run/buildkit/ssh_agent.0\n"
    assert set(built.layer_files(n - 1)) == {"sock"}
