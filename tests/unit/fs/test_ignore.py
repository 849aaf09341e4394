from __future__ import annotations

import pytest

from lamina.errors import FilesystemError
from lamina.fs import IgnoreList, default_ignore_list, mount_points_from_mountinfo

MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/root rw
23 22 0:5 / /proc rw,nosuid - proc proc rw
24 22 0:6 / /dev rw - tmpfs tmpfs rw
25 24 0:7 / /dev/shm rw - tmpfs shm rw
26 22 8:1 /data/hosts /etc/hosts rw - ext4 /dev/root rw
27 22 8:2 / /my\\040volume rw - ext4 /dev/sdb rw
"""


def test_mount_points() -> None:
    assert mount_points_from_mountinfo(MOUNTINFO) == [
        "/",
        "/proc",
        "/dev",
        "/dev/shm",
        "/etc/hosts",
        "/my volume",
    ]


def test_default_list() -> None:
    ign = default_ignore_list(mountinfo=MOUNTINFO, extra_paths=["/cache/"])
    for p in [
        "/kaniko",
        "/kaniko/x",
        "/etc/mtab",
        "/proc/1/fd",
        "/dev/shm",
        "/etc/hosts",
        "/my volume/f",
        "/var/run/x",
        "/cache",
        "/tmp/apt-key-gpghome.abc",
    ]:
        assert ign.matches(p), p
    for p in ["/", "/etc", "/etc/hostsx", "/procfoo", "/var", "/tmp/apt", "/usr"]:
        assert not ign.matches(p), p
    assert not default_ignore_list(mountinfo="", ignore_var_run=False).matches("/var/run")


def test_volumes_and_below() -> None:
    ign = IgnoreList.of(["/proc"]).with_paths("/data")
    assert ign.matches("data/x")
    assert ign.matches("/data")
    assert ign.has_ignored_below("/")
    assert not ign.has_ignored_below("/data")
    assert not IgnoreList.of().matches("/x")


def test_dotdot_refused() -> None:
    with pytest.raises(FilesystemError):
        IgnoreList.of(["/a/../b"])
