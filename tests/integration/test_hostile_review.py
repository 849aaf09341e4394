"""Host devices lamina itself must never open (issue 12, "the rest of its class").

A RUN as root in the namespace sandbox has CAP_MKNOD: its root is ``nodev``,
so a device node it makes does not open *inside* the sandbox. But lamina
works on the same files from the host afterwards (copying a bind source,
seeding or moving a cache, reading ``/etc/passwd``), where the node opens the
host device it names. Each test here gives a RUN the numbers of a loop device
the test itself sets up over a file in ``tmp_path`` holding a marker, and
asserts the marker never reaches the build (output, image, cache store) and
the backing file is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.oci.oci_layout import OCILayout
from tests.integration.test_hostile_restores import (
    CHROOT_MODES,
    _needs_setpriv,
    cli_build,
    context,
    layer_entries,
    log_of,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mknod as root"),
    pytest.mark.skipif(shutil.which("losetup") is None, reason="needs losetup (util-linux)"),
    pytest.mark.timeout(300),
]

MARKER = b"HOSTDISK-CANARY-7f3a"
#: what the loop device holds: a passwd line first (for the USER lookup), the marker after
DISK = b"intruder:x:4242:4242::/:/bin/sh\n" + MARKER + b"\n"


@dataclass(frozen=True, slots=True)
class Loop:
    device: str
    backing: Path
    major: int
    minor: int

    def digest(self) -> str:
        return hashlib.sha256(self.backing.read_bytes()).hexdigest()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    """A loop device over a 64 KiB file of the test's own (detached afterwards)."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(DISK.ljust(65536, b"\0"))
    proc = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        st = os.stat(device)
        yield Loop(device, backing, os.major(st.st_rdev), os.minor(st.st_rdev))
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def _marker_below(root: Path) -> list[str]:
    """Regular files below ``root`` holding the marker."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as fh:
                if MARKER in fh.read(1 << 20):
                    found.append(str(path))
    return found


def _check(
    tmp_path: Path, proc: subprocess.CompletedProcess[bytes], loop: Loop, before: str
) -> None:
    log = log_of(proc)
    assert MARKER.decode() not in log, log
    assert not _marker_below(tmp_path / "out"), "the host device's data reached the image"
    assert loop.digest() == before


def test_a_writable_bind_of_a_device_node_does_not_read_the_host_device(
    tmp_path: Path, loop: Loop
) -> None:
    """``--mount=type=bind,from=<stage>,source=<device node>,rw``: lamina copies a
    writable file bind's source for the step; a device node must not be read."""
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base AS dev
RUN mknod /disk b {loop.major} {loop.minor}
FROM base
RUN --mount=type=bind,from=dev,source=/disk,target=/d,rw head -c 64 /d; true
RUN echo done
""",
    )
    before = loop.digest()
    proc = cli_build(tmp_path, ctx, isolation="namespace")
    _check(tmp_path, proc, loop, before)


def test_a_cache_seeded_from_a_stage_does_not_read_a_device_node(
    tmp_path: Path, loop: Loop
) -> None:
    """``--mount=type=cache,from=<stage>,source=<dir>``: the new cache is filled with a
    copy of the directory; a device node in it is no file to read."""
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base AS dev
RUN mkdir /seed && mknod /seed/disk b {loop.major} {loop.minor}
FROM base
RUN --mount=type=cache,id=seeded,target=/c,from=dev,source=/seed head -c 64 /c/disk; true
RUN echo done
""",
    )
    before = loop.digest()
    proc = cli_build(
        tmp_path, ctx, f"--cache-mount-dir={tmp_path / 'caches'}", isolation="namespace"
    )
    _check(tmp_path, proc, loop, before)
    assert not _marker_below(tmp_path / "caches")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of the test's own: a cache directory on another filesystem."""
    where = tmp_path / "caches"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_cache_on_another_filesystem_does_not_read_a_device_node_the_step_left(
    tmp_path: Path, loop: Loop, other_fs: Path
) -> None:
    """A cache directory on another filesystem than the build directory is copied
    out after the step (and in before the next): a device node the step made in
    the cache must not be read as a file."""
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base
RUN --mount=type=cache,id=c,target=/c mknod /c/disk b {loop.major} {loop.minor}
RUN --mount=type=cache,id=c,target=/c head -c 64 /c/disk; true
""",
    )
    before = loop.digest()
    proc = cli_build(tmp_path, ctx, f"--cache-mount-dir={other_fs}", isolation="namespace")
    _check(tmp_path, proc, loop, before)
    assert not _marker_below(other_fs)


def test_a_device_node_as_etc_passwd_is_not_read_for_user(tmp_path: Path, loop: Loop) -> None:
    """``USER intruder`` resolves the name through the image's /etc/passwd, read
    by lamina on the host: a device node there must not open (its first line
    would make the step run as 4242)."""
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base
RUN rm -f /etc/passwd; mkdir -p /etc; mknod /etc/passwd b {loop.major} {loop.minor}
USER intruder
RUN echo "uid=$(id -u)"
""",
    )
    before = loop.digest()
    proc = cli_build(tmp_path, ctx, isolation="namespace")
    assert "uid=4242" not in log_of(proc)
    _check(tmp_path, proc, loop, before)


def test_a_fifo_as_etc_passwd_does_not_hang_the_build(tmp_path: Path) -> None:
    """A FIFO at /etc/passwd: opening it for the USER lookup would block forever."""
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN rm -f /etc/passwd; mkdir -p /etc; mkfifo /etc/passwd
USER intruder
RUN id -u
""",
    )
    try:
        proc = cli_build(tmp_path, ctx, isolation="namespace", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the build hung on a FIFO at /etc/passwd")
    assert proc.returncode != 0
    assert "/etc/passwd of the image is not a regular file" in log_of(proc)
    assert "Traceback" not in log_of(proc)


# ------------------------------------------------------------------ destinations


def test_add_archive_through_a_destination_symlink_keeps_its_files_in_the_layer(
    tmp_path: Path,
) -> None:
    """``ADD a.tar /dst`` where an earlier RUN made /dst a symlink to /real: the
    archive lands in /real (symlinks followed inside the root, as BuildKit) and
    the layer must hold what was extracted, not only the unchanged symlink."""
    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    (tree / "inner/f").write_bytes(b"from the archive\n")
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN mkdir /real && ln -s /real /dst
ADD a.tar /dst
""",
    )
    with tarfile.open(ctx / "a.tar", "w") as tar:
        tar.add(tree / "inner", arcname="inner")
    proc = cli_build(tmp_path, ctx, isolation="namespace")
    assert proc.returncode == 0, log_of(proc)
    image = OCILayout.open(tmp_path / "out").image()
    added = layer_entries(image, len(image.layers()) - 1)
    assert added.get("real/inner/f") == (tarfile.REGTYPE, ""), added


def test_a_device_node_in_the_context_is_not_read_for_a_context_mount(
    tmp_path: Path, loop: Loop
) -> None:
    """With a .dockerignore, a RUN's context bind mount is a filtered copy of the
    context: a device node in it (a context unpacked from an archive) is not read."""
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN --mount=type=bind,target=/ctx head -c 64 /ctx/disk; true
""",
        {".dockerignore": b"ignored.txt\n", "ignored.txt": b"no\n"},
    )
    os.mknod(ctx / "disk", 0o600 | stat.S_IFBLK, os.makedev(loop.major, loop.minor))
    before = loop.digest()
    proc = cli_build(tmp_path, ctx, isolation="namespace")
    _check(tmp_path, proc, loop, before)


# ------------------------------------------------------------------ chroot's own writes


def _node_archive(path: Path, members: dict[str, tuple[bytes, int, int]]) -> None:
    """A tar of device/FIFO entries: name -> (tar type, major, minor)."""
    with tarfile.open(path, "w") as tar:
        for name, (kind, major, minor) in members.items():
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor, info.mode = kind, major, minor, 0o644
            tar.addfile(info)


@pytest.mark.parametrize("mount_rights", CHROOT_MODES)
def test_chroot_does_not_write_its_hosts_file_into_a_device_node(
    tmp_path: Path, loop: Loop, mount_rights: bool
) -> None:
    """The chroot mode puts its own /etc/hosts and /etc/resolv.conf into the root
    for each RUN; where the image has a device node there (from an archive),
    lamina's write on the host would go to the device (a disk) whatever ``nodev``
    says inside, and a FIFO would block the build."""
    _needs_setpriv(mount_rights)
    ctx = context(
        tmp_path / "ctx",
        """FROM base
ADD nodes.tar /
RUN echo next
""",
    )
    _node_archive(
        ctx / "nodes.tar",
        {
            "etc/hosts": (tarfile.BLKTYPE, loop.major, loop.minor),
            "etc/resolv.conf": (tarfile.FIFOTYPE, 0, 0),
        },
    )
    before = loop.digest()
    try:
        proc = cli_build(tmp_path, ctx, isolation="chroot", mount_rights=mount_rights, timeout=60)
    except subprocess.TimeoutExpired:
        assert loop.digest() == before, "lamina wrote into the host's device"
        pytest.fail("the build hung on a FIFO at /etc/resolv.conf")
    _check(tmp_path, proc, loop, before)
    assert proc.returncode == 0, log_of(proc)


# ------------------------------------------------------------------ caches apart


@pytest.mark.parametrize(
    ("isolation", "mount_rights"),
    [
        pytest.param("namespace", True, id="namespace"),
        pytest.param("chroot", True, id="chroot-mount-rights"),
        pytest.param("chroot", False, id="chroot-no-mount-rights"),
    ],
)
def test_a_cache_mounted_inside_another_keeps_its_own_content(
    tmp_path: Path, isolation: str, mount_rights: bool
) -> None:
    """Two caches, one mounted inside the other's target: what a step writes into
    the inner cache stays in it and never lands in the outer cache (which may be
    shared with other builds)."""
    _needs_setpriv(mount_rights)
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN --mount=type=cache,id=outer,target=/a --mount=type=cache,id=inner,target=/a/b \\
    echo inner-data > /a/b/f
RUN --mount=type=cache,id=inner,target=/c --mount=type=cache,id=outer,target=/d \\
    echo "inner: $(cat /c/f)"; test ! -e /d/b/f || echo LEAK""ED
""",
    )
    proc = cli_build(
        tmp_path,
        ctx,
        f"--cache-mount-dir={tmp_path / 'caches'}",
        isolation=isolation,
        mount_rights=mount_rights,
    )
    assert proc.returncode == 0, log_of(proc)
    assert "inner: inner-data" in log_of(proc)
    assert "LEAKED" not in log_of(proc)


def test_one_cache_mounted_twice_in_a_run_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """The second mount of a cache would wait for the lock its first mount holds."""
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN --mount=type=cache,id=x,target=/a --mount=type=cache,id=x,target=/b echo two
""",
    )
    try:
        proc = cli_build(
            tmp_path,
            ctx,
            f"--cache-mount-dir={tmp_path / 'caches'}",
            isolation="namespace",
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the build hung on its own cache lock")
    assert proc.returncode != 0
    assert "mounts the cache 'x' twice" in log_of(proc)
    assert "Traceback" not in log_of(proc)


def test_a_cache_target_that_is_a_symlink_to_the_root_is_refused(tmp_path: Path) -> None:
    """``/c -> /``: the cache would replace the step's whole upper directory (the
    image hidden below an opaque root, the cache lost); a clear error instead."""
    ctx = context(
        tmp_path / "ctx",
        """FROM base
RUN ln -s / /c
RUN --mount=type=cache,id=root,target=/c echo hi > /x
""",
    )
    caches = tmp_path / "caches"
    proc = cli_build(tmp_path, ctx, f"--cache-mount-dir={caches}", isolation="namespace")
    assert proc.returncode != 0
    assert "cache mount target /c is the root directory" in log_of(proc)
    assert "bug in lamina" not in log_of(proc)
    assert [p.name for p in caches.glob("*/data")] == ["data"]  # the cache is still there


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
def test_a_mount_target_that_is_a_symlink_to_the_root_is_a_clear_error(
    tmp_path: Path, kind: str
) -> None:
    """A tmpfs or bind mounted over the step's whole root: refused by name."""
    ctx = context(
        tmp_path / "ctx",
        f"""FROM base
RUN ln -s / /c
RUN --mount=type={kind},target=/c echo hi > /x
""",
    )
    proc = cli_build(tmp_path, ctx, isolation="namespace")
    assert proc.returncode != 0
    assert "mount target /c is the root directory" in log_of(proc)
