"""Restores after a hostile RUN stay inside the build root (issue 12, items 3-6).

Every RUN here replaces directories lamina restores afterwards with symlinks
to a *canary* tree the test owns (under ``tmp_path``), or tries to climb out of
a chroot into it. The canary's every entry (mode, owner, mtime, ctime,
content, existence) must be the same after the build as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lamina.builder import (
    BuildOptions,
    CacheOptions,
    OutputOptions,
    SecretSource,
    SSHSource,
    build_image,
)
from lamina.oci import Image
from lamina.oci.oci_layout import OCILayout
from lamina.sandbox import ChrootRunner, InPlaceRunner, RunSpec
from tests.integration.test_build_engine import BUSYBOX, make_context, run_build

SETPRIV = shutil.which("setpriv")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot and namespace builds as root"),
]

BASE = """FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""

Snapshot = dict[str, tuple[object, ...]]


# ------------------------------------------------------------------ the canary


def make_canary(where: Path) -> Path:
    """A tree of the names a hostile RUN aims at: etc/, dev/, cache/, data/ ..."""
    files = {
        "etc/hosts": b"canary hosts\n",
        "etc/resolv.conf": b"canary resolv\n",
        "etc/passwd": b"canary:x:0:0\n",
        "dev/null": b"canary null\n",
        "dev/zero": b"canary zero\n",
        "dev/tty": b"canary tty\n",
        "pkg/keep": b"canary pkg\n",
        "t/keep": b"canary tmpfs target\n",
        "sub/x/y/keep": b"canary copy\n",
        "secret": b"canary secret\n",
        "b/keep": b"canary bind\n",
        "agent": b"canary agent\n",
        "img/keep": b"canary image entry\n",
    }
    for name, data in files.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o640)
    for dirpath, dirnames, filenames in os.walk(where):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath) / name, ns=(1_000_000_000, 1_000_000_000))
    os.utime(where, ns=(1_000_000_000, 1_000_000_000))
    return where


def snapshot(root: Path) -> Snapshot:
    """Every entry below ``root`` (and ``root``): type, mode, owner, times, content."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            rel = os.path.normpath(os.path.relpath(path, root))
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns, content)
    return out


def assert_unchanged(before: Snapshot, root: Path) -> None:
    after = snapshot(root)
    changed = sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
    assert not changed, f"the canary changed: {changed}"


def layer_entries(image: Image, index: int) -> dict[str, tuple[bytes, str]]:
    """Layer ``index``: name -> (tar type, link target) of every member."""
    with (
        image.layers()[index].uncompressed() as f,
        tarfile.open(fileobj=f, mode="r|") as tar,
    ):
        return {m.name.removeprefix("./").rstrip("/"): (m.type, m.linkname) for m in tar}


def context(where: Path, body: str, files: dict[str, bytes] | None = None) -> Path:
    ctx = make_context(where, BASE + body, files)
    shutil.copy(BUSYBOX, ctx / "busybox")
    os.chmod(ctx / "busybox", 0o755)
    return ctx


def cli_build(
    tmp_path: Path,
    ctx: Path,
    *extra: str,
    isolation: str,
    mount_rights: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[bytes]:
    """``lamina build`` in a subprocess; ``mount_rights=False`` drops CAP_SYS_ADMIN."""
    drop = [SETPRIV or "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    command = [
        *([] if mount_rights else drop),
        sys.executable,
        "-m",
        "lamina",
        "build",
        f"--context={ctx}",
        f"--dockerfile={ctx / 'Dockerfile'}",
        f"--isolation={isolation}",
        "--no-push",
        f"--kaniko-dir={tmp_path / 'kaniko'}",
        f"--oci-layout-path={tmp_path / 'out'}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(command, capture_output=True, env=env, timeout=timeout, check=False)


def log_of(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace"))[-4000:]


CHROOT_MODES = [
    pytest.param(False, id="chroot-no-mount-rights"),
    pytest.param(True, id="chroot-mount-rights"),
]


def _needs_setpriv(mount_rights: bool) -> None:
    if not mount_rights and SETPRIV is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_SYS_ADMIN")


# ------------------------------------------------------------------ item 3: chroot clean-up


@pytest.mark.parametrize("mount_rights", CHROOT_MODES)
def test_chroot_restore_of_network_files_and_dev_stubs_stays_in_the_root(
    tmp_path: Path, mount_rights: bool
) -> None:
    """A RUN replaces /etc and /dev with symlinks to the canary: the restore of
    hosts (a setuid, foreign-owned file in the image) and the removal of the
    /dev stubs must not write, chmod, chown or delete anything there."""
    _needs_setpriv(mount_rights)
    canary = make_canary(tmp_path / "canary")
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base
COPY --chmod=4755 --chown=1234:1234 hosts /etc/hosts
RUN rm -rf /etc /dev; ln -s {canary}/etc /etc; ln -s {canary}/dev /dev; true
""",
        {"hosts": b"attacker hosts\n"},
    )
    before = snapshot(canary)
    proc = cli_build(tmp_path, ctx, isolation="chroot", mount_rights=mount_rights)
    assert_unchanged(before, canary)
    assert proc.returncode == 0, log_of(proc)


# ------------------------------------------------------------------ item 4: chroot escape


@pytest.mark.parametrize("mount_rights", CHROOT_MODES)
def test_chroot_in_chroot_escape_does_not_reach_the_host(
    tmp_path: Path, mount_rights: bool
) -> None:
    """The classic escape: chroot into a subdirectory while the working directory
    stays outside it (busybox ``nsenter -r -w``), climb with ``..``, chroot there.
    The RUN must not be able to write into the canary."""
    _needs_setpriv(mount_rights)
    canary = make_canary(tmp_path / "canary")
    up = "/".join([".."] * 40)
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base
RUN mkdir -p /y/bin && cp /bin/busybox /y/bin/busybox
RUN busybox nsenter -r/y -w/ /bin/busybox chroot {up} /bin/busybox sh -c \\
      'echo escaped > {canary}/pwned; chmod 4777 {canary}/etc/hosts' \\
    || echo "escape refused"
""",
    )
    before = snapshot(canary)
    proc = cli_build(tmp_path, ctx, isolation="chroot", mount_rights=mount_rights)
    assert_unchanged(before, canary)
    assert proc.returncode == 0, log_of(proc)
    assert "escape refused" in log_of(proc)


# ------------------------------------------------------------------ item 5: mount restores

#: a RUN whose every mount target's parent it replaces with a symlink to the canary
HOSTILE_MOUNTS = """FROM base
RUN mkdir -p /m6/img && echo image > /m6/img/keep
RUN --mount=type=tmpfs,target=/m1/t \\
    --mount=type=cache,id=c1,target=/m2/pkg \\
    --mount=type=secret,id=s,target=/m3/secret \\
    --mount=type=bind,source=bdir,target=/m4/b,rw \\
    --mount=type=ssh,target=/m5/agent \\
    --mount=type=bind,source=bdir,target=/m6/img \\
    for d in m1 m2 m3 m4 m5 m6; do rm -rf /$d; ln -s {canary} /$d; done; true
RUN echo after > /after
"""


def _mount_sources(tmp_path: Path) -> tuple[dict[str, bytes], list[str], socket.socket]:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"s3cret\n")
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(str(tmp_path / "agent.sock"))
    flags = [
        f"--secret=id=s,src={secret}",
        f"--ssh=default={tmp_path / 'agent.sock'}",
        f"--cache-mount-dir={tmp_path / 'caches'}",
    ]
    return {"bdir/file": b"bind source\n"}, flags, agent


@pytest.mark.parametrize(
    ("isolation", "mount_rights"),
    [
        pytest.param("namespace", True, id="namespace"),
        pytest.param("chroot", False, id="chroot-no-mount-rights"),
        pytest.param("chroot", True, id="chroot-mount-rights"),
    ],
)
def test_mount_restores_do_not_follow_planted_symlinks(
    tmp_path: Path, isolation: str, mount_rights: bool
) -> None:
    """Cache, tmpfs, secret, bind (copy and real), ssh and moved-aside image entries:
    after the RUN replaced each target's parent with a symlink to the canary, the
    restore moves, deletes and re-times nothing there, and the build goes on."""
    _needs_setpriv(mount_rights)
    canary = make_canary(tmp_path / "canary")
    files, flags, agent = _mount_sources(tmp_path)
    with agent:
        ctx = context(tmp_path / "ctx", HOSTILE_MOUNTS.format(canary=canary), files)
        before = snapshot(canary)
        proc = cli_build(tmp_path, ctx, *flags, isolation=isolation, mount_rights=mount_rights)
    assert_unchanged(before, canary)
    assert proc.returncode == 0, log_of(proc)
    cache_data = list((tmp_path / "caches").glob("*/data"))
    assert len(cache_data) == 1
    assert list(cache_data[0].iterdir()) == []  # the step removed its cache: it starts empty
    image = OCILayout.open(tmp_path / "out").image()
    assert len(image.layers()) == 5  # busybox, --install, /m6/img, the hostile RUN, /after
    hostile = layer_entries(image, 3)
    link = (tarfile.SYMTYPE, str(canary))
    for d in ("m1", "m2", "m3", "m4", "m5", "m6"):
        # a real mount point cannot be removed: the symlink then lands inside the target
        assert link in (hostile.get(d), hostile.get(f"{d}/canary")), (d, hostile)
    assert layer_entries(image, 4) == {"after": (tarfile.REGTYPE, "")}


def test_in_place_mount_restores_do_not_follow_planted_symlinks(tmp_path: Path) -> None:
    """``--isolation=none`` (an InPlaceRunner whose root is a test directory): the same
    hostile RUN; the emulation's restore stays inside the root."""
    canary = make_canary(tmp_path / "canary")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    files, _, _ = _mount_sources(tmp_path)
    ctx = context(tmp_path / "ctx", HOSTILE_MOUNTS.format(canary=canary), files)
    before = snapshot(canary)
    options = BuildOptions(
        dockerfile=str(ctx / "Dockerfile"),
        context=str(ctx),
        kaniko_dir=root / "kaniko",
        cache_mount_dir=tmp_path / "caches",
        secrets=(SecretSource(id="s", path=tmp_path / "secret.txt"),),
        ssh=(SSHSource(id="default", socket=root / "kaniko/agent.sock"),),
    )
    with socket.socket(socket.AF_UNIX) as agent:
        agent.bind(str(root / "kaniko/agent.sock"))
        result = build_image(
            options,
            CacheOptions(),
            OutputOptions(no_push=True),
            registry=None,
            runner=InPlaceRunner(root=root),
            log=logging.getLogger("lamina.tests.hostile"),
        )
    try:
        assert_unchanged(before, canary)
        assert layer_entries(result.image, 4) == {"after": (tarfile.REGTYPE, "")}
    finally:
        result.cleanup()


# ------------------------------------------------------------------ item 6: COPY's deferred times


def test_copy_later_symlink_replacing_a_copied_directory(tmp_path: Path) -> None:
    """``COPY a/ s/ /dst/`` where ``s/x`` (a symlink to a host directory) replaces the
    copied ``a/x/``: the later source wins (BuildKit), the deferred directory times
    are not applied through the symlink, and the layer is clean."""
    canary = make_canary(tmp_path / "canary")
    ctx = context(
        tmp_path / "ctx",
        """FROM scratch
COPY a/ s/ /dst/
""",
        {"a/x/y/file": b"from a\n", "a/x/z": b"z\n", "a/keep": b"keep\n"},
    )
    (ctx / "s").mkdir()
    (ctx / "s/x").symlink_to(canary / "sub/x")
    before = snapshot(canary)
    built = run_build(tmp_path, ctx)
    assert_unchanged(before, canary)
    entries = layer_entries(built.image, 0)
    assert entries.get("dst/x") == (tarfile.SYMTYPE, str(canary / "sub/x")), entries
    assert not [name for name in entries if name.startswith("dst/x/")], entries
    assert entries.get("dst/keep") == (tarfile.REGTYPE, "")


@pytest.mark.parametrize("mount_rights", [False, True], ids=["no-mount-rights", "mount-rights"])
def test_chroot_network_file_swap_keeps_other_hard_link_names(
    tmp_path: Path, mount_rights: bool
) -> None:
    """An image whose /etc/hosts is a hard link to another file: the step's hosts
    must not be written into that file, and the image's content comes back."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    (root / "etc").mkdir()
    (root / "etc/other").write_bytes(b"the image's file\n")
    os.link(root / "etc/other", root / "etc/hosts")
    os.utime(root / "etc", ns=(10**9, 10**9))
    seen: list[bytes] = []
    spec = RunSpec(
        rootfs=root,
        argv=("/bin/busybox", "cat", "/etc/hosts", "/etc/other"),
        extra_files={"/etc/hosts": b"the step's hosts\n"},
    )
    result = ChrootRunner(mount_rights=mount_rights).run(spec, on_output=seen.append)
    assert result.exit_code == 0
    assert b"".join(seen) == b"the step's hosts\nthe image's file\n"
    assert (root / "etc/other").read_bytes() == b"the image's file\n"
    assert (root / "etc/hosts").read_bytes() == b"the image's file\n"
    assert (root / "etc").stat().st_mtime_ns == 10**9


def test_chroot_with_mount_rights_opens_no_host_device(tmp_path: Path) -> None:
    """Pivoted chroot: the root is nodev, so a block device node the step makes (or
    the image holds) cannot reach the host's disk; /dev's own nodes still work."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin/busybox")
    seen: list[bytes] = []
    script = (
        "mknod /blk b 7 0 && (head -c 1 /blk > /dev/null && echo OPENED || echo REFUSED); "
        "echo x > /dev/null && head -c 4 /dev/zero | busybox wc -c"
    )
    spec = RunSpec(rootfs=root, argv=("/bin/busybox", "sh", "-c", script))
    result = ChrootRunner(mount_rights=True).run(spec, on_output=seen.append)
    text = b"".join(seen).decode(errors="replace")
    assert result.exit_code == 0, text
    assert "REFUSED" in text
    assert "OPENED" not in text
    assert text.strip().endswith("4"), text
