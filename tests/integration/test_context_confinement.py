"""A build context's Dockerfile and .dockerignore are read inside the context only, and
each remote context is unpacked into a private directory of its own build (issue 12,
items 7 and 8). Real builds through ``python -m lamina build``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_remote_context import SRC, image_files, lamina_build, targz

HOST_DOCKERFILE = b"HOST-FILE-FIRST-LINE do not show me\nFROM scratch\nCOPY . /host/\n"


def host_file(tmp_path: Path, name: str, data: bytes) -> Path:
    """A file outside every context, standing for a host file (owned by the test)."""
    host = tmp_path / "host"
    host.mkdir(exist_ok=True)
    path = host / name
    path.write_bytes(data)
    return path


def test_tar_context_dockerfile_symlink_to_a_host_file_is_not_read(tmp_path: Path) -> None:
    secret = host_file(tmp_path, "Dockerfile", HOST_DOCKERFILE)
    for target in (str(secret), "../" * 12 + str(secret).lstrip("/")):
        archive = tmp_path / "ctx.tar.gz"
        archive.write_bytes(targz({"Dockerfile": target, "a.txt": b"a\n"}))
        proc = lamina_build(tmp_path, f"--context=tar://{archive}", expect=3)
        err = proc.stderr.decode()
        assert "HOST-FILE-FIRST-LINE" not in err
        assert "is not in the build context" in err


def test_tar_context_dockerfile_symlink_inside_the_context_is_followed(tmp_path: Path) -> None:
    # an absolute target is taken inside the context, as if the context were /
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(
        targz(
            {
                "real/Dockerfile": b"FROM scratch\nCOPY a.txt /in/\n",
                "Dockerfile": "/real/Dockerfile",
                "a.txt": b"a\n",
            }
        )
    )
    lamina_build(tmp_path, f"--context=tar://{archive}")
    assert image_files(tmp_path / "out")["in/a.txt"] == b"a\n"


def test_tar_context_dockerignore_symlink_to_a_host_file_is_not_read(tmp_path: Path) -> None:
    ignore = host_file(tmp_path, "ignore", b"a.txt\n")
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(
        targz(
            {
                "Dockerfile": b"FROM scratch\nCOPY . /app/\n",
                ".dockerignore": str(ignore),
                "Dockerfile.dockerignore": str(ignore),
                "a.txt": b"a\n",
            }
        )
    )
    lamina_build(tmp_path, f"--context=tar://{archive}")
    # the host's rules did not apply: a.txt is in the image
    assert image_files(tmp_path / "out")["app/a.txt"] == b"a\n"


def test_local_context_dockerfile_and_dockerignore_stay_inside(tmp_path: Path) -> None:
    secret = host_file(tmp_path, "Dockerfile", HOST_DOCKERFILE)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_bytes(b"a\n")
    (ctx / "Dockerfile").symlink_to(secret)
    proc = lamina_build(tmp_path, f"--context={ctx}", expect=3)
    assert "HOST-FILE-FIRST-LINE" not in proc.stderr.decode()
    # --dockerfile naming the in-context symlink is resolved inside the context too
    proc = lamina_build(tmp_path, f"--context={ctx}", f"--dockerfile={ctx}/Dockerfile", expect=3)
    assert "HOST-FILE-FIRST-LINE" not in proc.stderr.decode()
    # a FIFO in the context is refused, not read (it would block)
    (ctx / "Dockerfile").unlink()
    os.mkfifo(ctx / "Dockerfile")
    proc = lamina_build(tmp_path, f"--context={ctx}", expect=3)
    assert "is not a regular file" in proc.stderr.decode()
    (ctx / "Dockerfile").unlink()
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\nCOPY . /app/\n")
    (ctx / ".dockerignore").symlink_to(host_file(tmp_path, "ignore", b"a.txt\n"))
    lamina_build(tmp_path, f"--context={ctx}")
    assert image_files(tmp_path / "out")["app/a.txt"] == b"a\n"
    # a Dockerfile the user names outside the context is read as given
    lamina_build(tmp_path, f"--context={ctx}", f"--dockerfile={secret}", expect=3)
    outside = host_file(tmp_path, "Outside.Dockerfile", b"FROM scratch\nCOPY a.txt /o/\n")
    lamina_build(tmp_path, f"--context={ctx}", f"--dockerfile={outside}")
    assert image_files(tmp_path / "out")["o/a.txt"] == b"a\n"


def test_a_planted_buildcontext_symlink_is_neither_followed_nor_fatal(tmp_path: Path) -> None:
    kaniko = tmp_path / "kaniko"
    kaniko.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_bytes(b"keep\n")
    (kaniko / "buildcontext").symlink_to(victim)
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(targz({"Dockerfile": b"FROM scratch\nCOPY . /app/\n", "a.txt": b"a\n"}))
    lamina_build(tmp_path, f"--context=tar://{archive}")
    assert image_files(tmp_path / "out")["app/a.txt"] == b"a\n"
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (kaniko / "buildcontext").is_symlink()


def test_concurrent_remote_builds_do_not_share_a_context_directory(tmp_path: Path) -> None:
    kaniko = tmp_path / "kaniko"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC)}
    procs = []
    for name in ("one", "two"):
        archive = tmp_path / f"{name}.tar.gz"
        archive.write_bytes(
            targz(
                {
                    "Dockerfile": b"FROM scratch\nCOPY . /app/\n",
                    f"{name}.txt": name.encode() * 200_000,
                }
            )
        )
        argv = [
            sys.executable, "-m", "lamina", "build", f"--context=tar://{archive}",
            "--no-push", f"--oci-layout-path={tmp_path / name}", f"--kaniko-dir={kaniko}",
            "--verbosity=debug",
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**env, "HOME": str(tmp_path)},
            )
        )
    dirs = []
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
        found = re.search(r"into (\S+)", err.decode())
        assert found is not None
        dirs.append(found.group(1))
    assert dirs[0] != dirs[1]
    for name in ("one", "two"):
        files = image_files(tmp_path / name)
        assert {k for k in files if k.startswith("app/")} == {f"app/{name}.txt", "app/Dockerfile"}
    assert list(kaniko.iterdir()) == []
