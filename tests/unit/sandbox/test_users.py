"""USER resolution against a temporary image rootfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.errors import BuildStepError, LaminaError
from lamina.sandbox import ResolvedUser, read_image_file, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nohome:x:1001:1001:::/bin/sh
broken line
"""
GROUP = """\
root:x:0:
wheel:x:10:root,alice
staff:x:50:alice
alice:x:1000:
devs:x:2000:bob, alice
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


def test_empty_user_is_root(rootfs: Path) -> None:
    assert resolve_user(rootfs, "") == ResolvedUser(
        uid=0, gid=0, groups=(0, 10), home="/root", name="root"
    )


def test_name_with_supplementary_groups(rootfs: Path) -> None:
    user = resolve_user(rootfs, "alice")
    assert (user.uid, user.gid, user.groups, user.home) == (
        1000,
        1000,
        (1000, 10, 50, 2000),
        "/home/alice",
    )


def test_numeric_uid_with_entry_uses_entry(rootfs: Path) -> None:
    user = resolve_user(rootfs, "1000")
    assert (user.uid, user.gid, user.home, user.name) == (1000, 1000, "/home/alice", "alice")


def test_numeric_uid_without_entry_gets_gid_0_and_home_slash(rootfs: Path) -> None:
    user = resolve_user(rootfs, "4242")
    assert (user.uid, user.gid, user.groups, user.home, user.name) == (4242, 0, (), "/", None)


def test_explicit_group_replaces_supplementary_groups(rootfs: Path) -> None:
    user = resolve_user(rootfs, "alice:staff")
    assert (user.uid, user.gid, user.groups) == (1000, 50, ())


def test_numeric_group_not_in_file(rootfs: Path) -> None:
    user = resolve_user(rootfs, "4242:777")
    assert (user.uid, user.gid) == (4242, 777)


def test_empty_home_field_defaults_to_slash(rootfs: Path) -> None:
    assert resolve_user(rootfs, "nohome").home == "/"


def test_unknown_user_is_dockers_error(rootfs: Path) -> None:
    with pytest.raises(BuildStepError) as err:
        resolve_user(rootfs, "foo")
    assert str(err.value) == "unable to find user foo: no matching entries in passwd file"
    assert err.value.hint


def test_unknown_group_is_an_error(rootfs: Path) -> None:
    with pytest.raises(BuildStepError, match="unable to find group nope: no matching entries"):
        resolve_user(rootfs, "alice:nope")


def test_missing_passwd_file(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, "12").uid == 12
    assert resolve_user(tmp_path, "").home == "/"
    with pytest.raises(BuildStepError):
        resolve_user(tmp_path, "alice")


def test_out_of_range_uid(rootfs: Path) -> None:
    with pytest.raises(LaminaError, match="out of range"):
        resolve_user(rootfs, "99999999999")


def test_passwd_symlink_cannot_escape_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:0:0::/evil:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").symlink_to("../../outside/passwd")
    with pytest.raises(BuildStepError):
        resolve_user(root, "evil")
    os.symlink("/etc2", root / "etc/group")
    assert read_image_file(root, "/etc/group") is None


def test_upper_copy_wins_and_whiteout_hides(rootfs: Path, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("bob:x:7:8::/b:/bin/sh\n")
    assert resolve_user(rootfs, "bob", upper=upper).uid == 7
    if os.geteuid() == 0:
        os.mknod(upper / "etc/group", 0o600 | 0o020000, os.makedev(0, 0))
        assert read_image_file(rootfs, "/etc/group", upper=upper) is None


def test_a_fifo_as_passwd_is_an_error_not_a_hang(rootfs: Path) -> None:
    """A node the image (or a RUN) put at /etc/passwd is never opened (a FIFO would block)."""
    (rootfs / "etc/passwd").unlink()
    os.mkfifo(rootfs / "etc/passwd")
    with pytest.raises(LaminaError, match="not a regular file"):
        read_image_file(rootfs, "/etc/passwd")
    with pytest.raises(LaminaError, match="not a regular file"):
        resolve_user(rootfs, "alice")
