"""The namespace sandbox's root is ``nodev``, and its upper falls back to a tmpfs.

Device nodes aimed at are inert ones only (``c 1 3`` = /dev/null, ``c 1 5`` =
/dev/zero), created inside the test's own rootfs.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from lamina.fs import changes_from_upper
from lamina.sandbox import BindMount, NamespaceRunner, RunSpec, namespace_probe
from tests.integration.test_sandbox_namespace import BUSYBOX, Collected, make_rootfs

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.skipif(not BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mknod and overlay as root"),
    pytest.mark.timeout(120),
]


def _run(rootfs: Path, tmp: Path, script: str, *, userns: bool = False) -> tuple[int, str, Path]:
    """Run ``script`` as root in ``rootfs`` over an overlay whose upper is made in ``tmp``."""
    upper, work = tmp / "upper", tmp / "work"
    index = 0
    while upper.exists():
        index += 1
        upper, work = tmp / f"upper{index}", tmp / f"work{index}"
    upper.mkdir()
    work.mkdir()
    out = Collected()
    result = NamespaceRunner(user_namespace=userns).run(
        RunSpec(rootfs=rootfs, argv=("/bin/sh", "-c", script), upper=upper, work=work),
        on_output=out,
    )
    return result.exit_code, out.text, upper


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_a_device_node_made_by_the_step_does_not_open(tmp_path: Path, userns: bool) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    code, output, _ = _run(
        rootfs,
        tmp_path,
        "mknod /x c 1 5 2>/dev/null || exit 0; "  # no CAP_MKNOD (user namespace): nothing to open
        "if head -c 1 /x >/dev/null 2>&1; then echo OPENED; fi; "
        "if echo hi > /x 2>/dev/null; then echo WROTE; fi",
        userns=userns,
    )
    assert code == 0, output
    assert "OPENED" not in output
    assert "WROTE" not in output


def test_a_device_node_in_the_image_does_not_open(tmp_path: Path) -> None:
    rootfs = make_rootfs(tmp_path / "rootfs")
    os.mknod(rootfs / "null-in-image", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    code, output, _ = _run(
        rootfs, tmp_path, "echo hi > /null-in-image && echo WROTE; test -c /dev/null && echo DEV"
    )
    assert "WROTE" not in output
    assert "DEV" in output
    # the sandbox's own /dev still works, and nothing of it lands in the upper
    code, output, upper = _run(rootfs, tmp_path, "echo x > /dev/null")
    assert code == 0, output
    assert not (upper / "dev").exists()


def _overlay_root(tmp_path: Path) -> Path:
    """A directory on an overlay filesystem (refused as an overlay's upper directory)."""
    parts = {n: tmp_path / "ovl" / n for n in ("lower", "upper", "work", "merged")}
    for p in parts.values():
        p.mkdir(parents=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={parts['lower']},upperdir={parts['upper']},workdir={parts['work']}",
            str(parts["merged"]),
        ],
        check=True,
    )
    return parts["merged"]


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_upper_on_an_overlay_is_staged_on_a_tmpfs(tmp_path: Path, userns: bool) -> None:
    """The container case: the build directory is on the container's overlay root."""
    rootfs = make_rootfs(tmp_path / "rootfs")
    (rootfs / "gone").mkdir()
    (rootfs / "gone/file").write_text("old\n")
    (rootfs / "replaced").mkdir()
    (rootfs / "replaced/old").write_text("old\n")
    (rootfs / "etc/motd").write_text("hello\n")
    merged = _overlay_root(tmp_path)
    try:
        code, output, upper = _run(
            rootfs,
            merged,
            "echo new > /new && rm -r /gone && rm -r /replaced && mkdir /replaced && "
            "echo n > /replaced/n && rm /etc/motd && mkdir -p /a/b && ln /new /a/b/link && "
            "ln -s /new /sym && chown 0:0 /new && chmod 4755 /new",
            userns=userns,
        )
        assert code == 0, output
        assert (upper / "new").read_text() == "new\n"
        assert stat.S_IMODE((upper / "new").stat().st_mode) == 0o4755
        assert (upper / "a/b/link").stat().st_ino == (upper / "new").stat().st_ino
        assert os.readlink(upper / "sym") == "/new"
        # whiteouts: an overlay refuses 0/0 devices on itself, so the xattr form
        changes = {c.path.as_posix(): c.kind.value for c in changes_from_upper(upper, lower=rootfs)}
        # as root the overlay has index=on, which marks new directories opaque: one that
        # hides nothing in the lower directory is a plain addition
        assert changes == {
            "/a": "add",
            "/a/b": "add",
            "/a/b/link": "add",
            "/etc": "add",
            "/etc/motd": "delete",
            "/gone": "delete",
            "/new": "add",
            "/replaced": "opaque",
            "/replaced/n": "add",
            "/sym": "add",
        }
        assert (upper / "replaced/n").read_text() == "n\n"
        assert not (upper / "dev").exists()
        assert not (upper / "proc").exists()
    finally:
        subprocess.run(["umount", str(merged)], check=False)


def test_probe_checks_the_run_environment() -> None:
    found = namespace_probe(user_namespace=False)
    assert found.reason is None, found
    assert found.proc == "fresh"
    assert found.describe().startswith("namespace (root")


@pytest.mark.parametrize("readonly", [True, False], ids=["ro", "rw"])
def test_a_device_node_in_a_bind_mount_does_not_open(tmp_path: Path, readonly: bool) -> None:
    """``RUN --mount=type=bind,from=<stage>``: the bound stage may hold device nodes."""
    rootfs = make_rootfs(tmp_path / "rootfs")
    (rootfs / "mnt").mkdir()
    source = tmp_path / "stage"
    source.mkdir()
    os.mknod(source / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    out = Collected()
    result = NamespaceRunner(user_namespace=False).run(
        RunSpec(
            rootfs=rootfs,
            argv=("/bin/sh", "-c", "head -c 1 /mnt/zero > /dev/null 2>&1 && echo OPENED; true"),
            upper=upper,
            work=work,
            mounts=(BindMount(source=source, target="/mnt", readonly=readonly),),
        ),
        on_output=out,
    )
    assert result.ok, out.text
    assert "OPENED" not in out.text
