"""The namespace runner as an unprivileged user, through a user namespace.

The test process is root; it runs a small lamina program as uid/gid 65534
with ``setpriv``. Subordinate ids are given by bind-mounting temporary
``/etc/subuid``/``/etc/subgid`` files in a private mount namespace, so the
host's files are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import lamina
from tests.integration.test_sandbox_namespace import BUSYBOX, _processes_with, make_rootfs

NOBODY = 65534
SRC = Path(lamina.__file__).resolve().parents[1]
SETPRIV = shutil.which("setpriv")
UNSHARE = shutil.which("unshare")

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to uid 65534 with setpriv"),
    pytest.mark.skipif(SETPRIV is None or UNSHARE is None, reason="needs util-linux"),
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
    pytest.mark.timeout(120),
]

PROGRAM = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from lamina.errors import LaminaError
    from lamina.sandbox import NamespaceRunner, RunSpec, probe_namespace
    if sys.argv[1] == "probe":
        print(json.dumps({"probe": probe_namespace(user_namespace=True)}))
        sys.exit(0)
    base = Path(__file__).parent
    spec = RunSpec(
        rootfs=base / "rootfs", upper=base / "upper", work=base / "work",
        argv=("/bin/sh", "-c", sys.argv[1]), user=sys.argv[2], network=sys.argv[3],
        extra_files={"/etc/resolv.conf": b"nameserver 192.0.2.9\\n"},
    )
    out = []
    try:
        result = NamespaceRunner().run(spec, on_output=out.append)
    except LaminaError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"exit": result.exit_code, "out": b"".join(out).decode()}))
    """
)


def _python_for_nobody() -> str | None:
    """A Python >= 3.11 that uid 65534 may execute, and re-execute as ``sys.executable``.

    The venv's interpreter may live under /root, out of nobody's reach.
    """
    check = (
        "import subprocess, sys; sys.exit(sys.version_info < (3, 11) "
        "or subprocess.run([sys.executable, '-c', '']).returncode)"
    )
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/bin/python3.11"):
        command = [SETPRIV or "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}"]
        command += ["--clear-groups", "env", candidate, "-c", check]
        try:
            proc = subprocess.run(command, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            return candidate
    return None


PYTHON = _python_for_nobody() if os.geteuid() == 0 and SETPRIV else None


@pytest.fixture
def base() -> Iterator[Path]:
    if PYTHON is None:
        pytest.skip("no Python >= 3.11 that uid 65534 can run")
    path = Path(tempfile.mkdtemp(prefix="lamina-rootless-"))
    try:
        make_rootfs(path / "rootfs")
        (path / "upper").mkdir()
        (path / "work").mkdir()
        (path / "tmp").mkdir()
        (path / "subuid").write_text(f"nobody:200000:65536\n{NOBODY}:200000:65536\n")
        (path / "program.py").write_text(PROGRAM)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, NOBODY, NOBODY)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(base: Path, *args: str, subids: bool = False) -> dict[str, object]:
    assert PYTHON is not None
    command = [
        SETPRIV or "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "env",
        f"PYTHONPATH={SRC}",
        f"TMPDIR={base / 'tmp'}",
        PYTHON,
        str(base / "program.py"),
        *args,
    ]
    if subids:
        # a private mount namespace in which /etc/subuid and /etc/subgid grant nobody a range
        script = (
            f'mount --bind "{base}/subuid" /etc/subuid && '
            f'mount --bind "{base}/subuid" /etc/subgid && exec "$@"'
        )
        command = [UNSHARE or "unshare", "--mount", "sh", "-c", script, "sh", *command]
    proc = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout.decode().splitlines()[-1])
    assert isinstance(result, dict)
    # the sandbox's scratch directories (overlay leaves a mode-000 work/work) are gone
    assert list((base / "tmp").iterdir()) == []
    return result


def test_rootless_namespace_runner(base: Path) -> None:
    probe = as_nobody(base, "probe")
    if probe["probe"] is not None:
        pytest.skip(f"unprivileged user namespaces are not allowed here: {probe['probe']}")
    result = as_nobody(
        base,
        "id -u; echo pid=$$; cat /etc/resolv.conf; echo x > /dev/null && echo devnull; "
        "echo new > /created; rm /bin/ls; rm -r /usr/sbin && mkdir /usr/sbin; "
        "sleep 23456 & cat /proc/net/dev | grep -c :",
        "",
        "none",
    )
    assert result.get("exit") == 0, result
    assert str(result["out"]).splitlines() == ["0", "pid=2", "nameserver 192.0.2.9", "devnull", "1"]
    upper = base / "upper"
    assert (upper / "created").read_text() == "new\n"
    assert (upper / "created").stat().st_uid == NOBODY  # root inside is nobody outside
    assert (upper / "bin/ls").lstat().st_rdev == 0
    # a lower directory removed and made again: opaque, marked with a user.* xattr
    assert os.getxattr(upper / "usr/sbin", "user.overlay.opaque") == b"y"
    assert not (upper / "etc").exists()
    assert not _processes_with("23456")


def test_rootless_user_without_subordinate_ids_is_a_clear_error(base: Path) -> None:
    subuid = Path("/etc/subuid")
    granted = subuid.exists() and any(
        line.split(":")[0] in ("nobody", str(NOBODY)) for line in subuid.read_text().splitlines()
    )
    if granted and shutil.which("newuidmap"):
        pytest.skip("this machine gives nobody subordinate ids")
    result = as_nobody(base, "id -u", "alice", "default")
    assert "cannot be used in this rootless sandbox" in str(result.get("error")), result


def test_rootless_user_switch_with_subordinate_ids(base: Path) -> None:
    if not (shutil.which("newuidmap") and shutil.which("newgidmap")):
        pytest.skip("needs newuidmap/newgidmap (uidmap)")
    result = as_nobody(base, "id -u; id -G; touch /tmp/mine", "alice", "default", subids=True)
    assert result.get("exit") == 0, result
    assert str(result["out"]).splitlines() == ["1000", "1000 50"]
    st = (base / "upper/tmp/mine").stat()
    assert (st.st_uid, st.st_gid) == (200000 + 999, 200000 + 999)
