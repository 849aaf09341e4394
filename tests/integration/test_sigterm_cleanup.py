"""SIGTERM (what Kubernetes and CI runners send) cleans up like SIGINT (issue 12, item 14).

A build whose RUN sleeps with a secret mounted is sent SIGTERM: the process
must end promptly with 143, and ``--kaniko-dir`` must hold neither the secret
nor the rootfs (nor any other part of the build directory).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_build_engine import BUSYBOX, make_context

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="namespace and chroot builds as root"),
]

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN --mount=type=secret,id=tok,target=/run/tok cat /run/tok > /dev/null && \\
    touch /started-{tag} && sleep 120
"""


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("isolation", ["namespace", "chroot"])
def test_sigterm_during_a_run_with_a_secret_cleans_up(tmp_path: Path, isolation: str) -> None:
    tag = os.urandom(6).hex()
    value = f"lamina-sigterm-secret-{tag}".encode()
    secret = tmp_path / "tok"
    secret.write_bytes(value)
    ctx = make_context(tmp_path / "ctx", DOCKERFILE.format(tag=tag))
    shutil.copy(BUSYBOX, ctx / "busybox")
    kaniko = tmp_path / "kaniko"
    command = [
        sys.executable,
        "-m",
        "lamina",
        "build",
        f"--context={ctx}",
        f"--dockerfile={ctx / 'Dockerfile'}",
        f"--isolation={isolation}",
        "--no-push",
        f"--kaniko-dir={kaniko}",
        f"--secret=id=tok,src={secret}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        started = _wait_for(lambda: any(kaniko.rglob(f"started-{tag}")), 120)
        assert started, "the RUN did not start"
        assert any(p.is_file() and p.read_bytes() == value for p in kaniko.rglob("*"))
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode(errors="replace")
    assert proc.returncode == 143, text[-3000:]
    assert took < 15, took
    assert "terminated" in text
    left = sorted(str(p.relative_to(kaniko)) for p in kaniko.rglob("*"))
    assert not [p for p in left if "lamina-" in p or "rootfs" in p], left
    assert not any(p.is_file() and value in p.read_bytes() for p in kaniko.rglob("*"))
