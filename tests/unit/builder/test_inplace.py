"""The in-place (``--isolation=none``) ignore list and the wipe between stages."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lamina.builder._inplace import InPlace, ignore_list_for, in_image_path, wipe_root
from lamina.builder.options import BuildOptions

MOUNTINFO = """\
22 1 8:1 / / rw - overlay overlay rw
23 22 0:5 / /proc rw - proc proc rw
26 22 8:1 /x/hosts /etc/hosts rw - ext4 /dev/root rw
27 22 8:1 /ctx /workspace rw - ext4 /dev/root rw
"""


def test_in_image_path(tmp_path: Path) -> None:
    assert in_image_path(tmp_path, tmp_path / "kaniko" / "x") == PurePosixPath("/kaniko/x")
    assert in_image_path(tmp_path, tmp_path) == PurePosixPath("/")
    assert in_image_path(tmp_path / "root", tmp_path / "elsewhere") is None


def test_ignore_list_follows_kaniko(tmp_path: Path) -> None:
    build = BuildOptions(
        dockerfile="Dockerfile",
        context="/workspace",
        kaniko_dir=Path("/kaniko"),
        ignore_paths=("/cache", "/opt/keep/"),
    )
    ignore = ignore_list_for(build, Path("/"), [Path("/srv/ctx")], mountinfo=MOUNTINFO)
    for kept in (
        "/kaniko/lamina-x/layers",
        "/proc/1",
        "/etc/hosts",
        "/workspace/Dockerfile",
        "/var/run/lock",
        "/etc/mtab",
        "/tmp/apt-key-gpghome.Ab12",
        "/cache",
        "/opt/keep/a",
        "/srv/ctx/file",
    ):
        assert ignore.matches(kept), kept
    for snapshotted in ("/etc/passwd", "/var/lib/x", "/opt/other", "/srv", "/"):
        assert not ignore.matches(snapshotted), snapshotted
    no_var_run = ignore_list_for(
        BuildOptions(dockerfile="D", context=".", ignore_var_run=False),
        Path("/"),
        [],
        mountinfo=MOUNTINFO,
    )
    assert not no_var_run.matches("/var/run/lock")


def test_ignore_list_below_a_test_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build = BuildOptions(dockerfile="D", context=".", kaniko_dir=root / "kaniko")
    ignore = ignore_list_for(build, root, [tmp_path / "ctx"], mountinfo="")
    assert ignore.matches("/kaniko/build")
    assert not ignore.matches("/ctx")  # outside the root: nothing to protect


def test_wipe_keeps_only_the_ignore_list(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for d in ("etc", "kaniko/build", "usr/bin", "var/run", "var/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "kaniko/build/layer").write_text("blob")
    (root / "var/run/pid").write_text("1")
    (root / "usr/bin/sh").symlink_to("/kaniko/build/layer")
    build = BuildOptions(dockerfile="D", context=".", kaniko_dir=root / "kaniko")
    ignore = ignore_list_for(build, root, [], mountinfo=MOUNTINFO)
    wipe_root(InPlace(root=root, ignore=ignore))
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == [
        "etc",
        "etc/hosts",
        "kaniko",
        "kaniko/build",
        "kaniko/build/layer",
        "var",
        "var/run",
        "var/run/pid",
    ]
