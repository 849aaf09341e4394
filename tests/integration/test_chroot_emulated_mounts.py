"""``--isolation=chroot``: RUN mounts the chroot runner does not mount are emulated.

Without mount rights (the CLI runs under ``setpriv`` with CAP_SYS_ADMIN
dropped from the bounding and inheritable sets, so the chroot runner's mount
probe fails) every mount is; with them, cache, tmpfs and writable bind mounts
are (read-only binds and secrets are real mounts). The builder places them
with ``InPlaceMounts`` in the stage's private rootfs, as for ``--isolation=none``.
Nothing at a mount target may reach a layer; the image's own files at a
target are hidden for the step and back afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.oci.oci_layout import OCILayout
from tests.integration.test_build_engine import BUSYBOX, Built, make_context

SETPRIV = shutil.which("setpriv")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root"),
]

BASE = """FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def context(where: Path, body: str) -> Path:
    """A build context with busybox and the Dockerfile ``BASE + body``."""
    ctx = make_context(where, BASE + body)
    shutil.copy(BUSYBOX, ctx / "busybox")
    os.chmod(ctx / "busybox", 0o755)
    return ctx


def build_without_mount_rights(
    tmp_path: Path, ctx: Path, out: Path, *extra: str, rights: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """``lamina build --isolation=chroot`` with CAP_SYS_ADMIN dropped (no mount namespace),
    or with it (``rights``)."""
    drop = [SETPRIV or "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    command = [
        *([] if rights else drop),
        sys.executable,
        "-m",
        "lamina",
        "build",
        f"--context={ctx}",
        f"--dockerfile={ctx / 'Dockerfile'}",
        "--isolation=chroot",
        "--no-push",
        f"--kaniko-dir={tmp_path / 'kaniko'}",
        f"--oci-layout-path={out}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(command, capture_output=True, env=env, timeout=180, check=False)


def built_ok(proc: subprocess.CompletedProcess[bytes], out: Path) -> Built:
    log_text = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, log_text[-3000:]
    image = OCILayout.open(out).image()
    return Built(result=None, layout=out, image=image)  # type: ignore[arg-type]


@pytest.mark.parametrize("rights", [False, True], ids=["no-mount-rights", "mount-rights"])
def test_cache_mount_persists_between_builds_and_stays_out_of_layers(
    tmp_path: Path, rights: bool
) -> None:
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN mkdir -p /var/cache/pkg && echo image > /var/cache/pkg/img
ARG N
RUN --mount=type=cache,id=pkgs,target=/var/cache/pkg \\
    ls /var/cache/pkg > /seen && echo "$N" > /var/cache/pkg/from-$N
RUN ls /var/cache/pkg > /after
""",
    )
    caches = tmp_path / "caches"
    first = built_ok(
        build_without_mount_rights(
            tmp_path,
            ctx,
            tmp_path / "out1",
            "--build-arg=N=1",
            f"--cache-mount-dir={caches}",
            rights=rights,
        ),
        tmp_path / "out1",
    )
    n = len(first.image.layers())
    assert first.read_file(n - 2, "seen") == b""  # the image's img is hidden, the cache new
    assert set(first.layer_files(n - 2)) == {"seen"}
    assert first.read_file(n - 1, "after") == b"img\n"
    second = built_ok(
        build_without_mount_rights(
            tmp_path,
            ctx,
            tmp_path / "out2",
            "--build-arg=N=2",
            f"--cache-mount-dir={caches}",
            rights=rights,
        ),
        tmp_path / "out2",
    )
    assert second.read_file(n - 2, "seen") == b"from-1\n"
    assert set(second.layer_files(n - 2)) == {"seen"}
    assert second.read_file(n - 1, "after") == b"img\n"
    data = [p.name for p in caches.glob("*/data/*")]
    assert sorted(data) == ["from-1", "from-2"]


@pytest.mark.parametrize("rights", [False, True], ids=["no-mount-rights", "mount-rights"])
def test_bind_from_context_and_heredoc_script(tmp_path: Path, rights: bool) -> None:
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN mkdir -p /etc && echo mine > /etc/one
RUN --mount=type=bind,source=data,target=/mnt/data,rw \\
    --mount=type=bind,source=one.txt,target=/etc/one \\
    cat /mnt/data/a /etc/one > /got && echo scribbled > /mnt/data/a
RUN <<EOF
#!/bin/sh
echo from-script > /script
EOF
RUN cat /etc/one > /after && test ! -e /mnt/data
""",
    )
    (ctx / "data").mkdir()
    (ctx / "data" / "a").write_text("from-context\n")
    (ctx / "one.txt").write_text("one\n")
    built = built_ok(
        build_without_mount_rights(tmp_path, ctx, tmp_path / "out", rights=rights),
        tmp_path / "out",
    )
    n = len(built.image.layers())
    assert built.read_file(n - 3, "got") == b"from-context\none\n"
    assert set(built.layer_files(n - 3)) == {"got"}  # no mnt/, no etc/one
    assert built.read_file(n - 2, "script") == b"from-script\n"
    assert set(built.layer_files(n - 2)) == {"script"}
    assert built.read_file(n - 1, "after") == b"mine\n"
    assert (ctx / "data" / "a").read_text() == "from-context\n"  # rw writes are discarded


@pytest.mark.parametrize("rights", [False, True], ids=["no-mount-rights", "mount-rights"])
def test_tmpfs_is_empty_sticky_and_discarded(tmp_path: Path, rights: bool) -> None:
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN mkdir -p /work && echo kept > /work/keep
RUN --mount=type=tmpfs,target=/work \\
    stat -c %a /work > /mode && ls -A /work > /listing && echo junk > /work/junk
RUN --mount=type=tmpfs,target=/scratch/deep touch /scratch/deep/x && echo ok > /done
RUN ls /work > /after && test ! -e /scratch
""",
    )
    built = built_ok(
        build_without_mount_rights(tmp_path, ctx, tmp_path / "out", rights=rights),
        tmp_path / "out",
    )
    n = len(built.image.layers())
    assert built.read_file(n - 3, "mode") == b"1777\n"
    assert built.read_file(n - 3, "listing") == b""
    assert set(built.layer_files(n - 3)) == {"mode", "listing"}
    assert set(built.layer_files(n - 2)) == {"done"}
    assert built.read_file(n - 1, "after") == b"keep\n"


def test_what_stays_impossible_names_the_line(tmp_path: Path) -> None:
    """No namespaces, no private network: refused before the step, with its line."""
    ctx = context(tmp_path / "ctx", "FROM base\nRUN --network=none true\n")
    proc = build_without_mount_rights(tmp_path, ctx, tmp_path / "out")
    text = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert "Dockerfile:5" in text
    assert "RUN --network=none with --isolation=chroot" in text
