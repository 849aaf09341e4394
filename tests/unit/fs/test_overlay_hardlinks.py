"""keep_link_groups: a hardlinked file changed through one name keeps its group (issue 12 #16).

The upper directories here are made by hand in the shape overlayfs leaves after a
copy-up without ``index=on``: the changed name as a new inode, nothing else.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from lamina.fs import apply_upper, changes_from_upper
from lamina.fs._overlay import keep_link_groups

IS_ROOT = os.geteuid() == 0


def _lower(root: Path) -> None:
    (root / "hl" / "sub").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "hl" / "link1").write_text("original\n")
    for name in ("hl/link2", "hl/sub/link3", "other/link4", "other/gone"):
        os.link(root / "hl" / "link1", root / name)
    os.utime(root / "other", ns=(1_000_000_000, 1_000_000_000))
    os.chmod(root / "other", 0o750)


def _copy_up(upper: Path, name: str, content: str, lower: Path | None = None) -> Path:
    """``name`` as overlayfs copies it up: the lower file's atime (and mtime, when the
    content is unchanged) on a new inode. Without ``lower``: a new file (a replacement)."""
    path = upper / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if lower is not None:
        low = os.lstat(lower / name)
        mtime = low.st_mtime_ns if content == "original\n" else os.lstat(path).st_mtime_ns
        os.utime(path, ns=(low.st_atime_ns, mtime))
    return path


def _ino(path: Path) -> int:
    return os.lstat(path).st_ino


def test_every_other_name_becomes_a_link_to_the_changed_copy(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    changed = _copy_up(upper, "hl/link2", "modified\n", lower)
    os.utime(upper / "hl", ns=(5_000_000_000, 5_000_000_000))
    assert keep_link_groups(upper, lower) == 4
    for name in ("hl/link1", "hl/link2", "hl/sub/link3", "other/link4", "other/gone"):
        assert _ino(upper / name) == _ino(changed), name
        assert (upper / name).read_text() == "modified\n"
    # an upper dir the step made keeps its times; created parents copy the lower's
    assert os.lstat(upper / "hl").st_mtime_ns == 5_000_000_000
    other = os.lstat(upper / "other")
    assert (other.st_mtime_ns, stat.S_IMODE(other.st_mode)) == (1_000_000_000, 0o750)
    assert os.lstat(upper / "hl" / "sub").st_mtime_ns == os.lstat(lower / "hl" / "sub").st_mtime_ns


def test_names_the_step_deleted_or_hid_are_left_alone(tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("hand-made whiteouts need mknod (root)")
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    _copy_up(upper, "hl/link2", "modified\n", lower)
    time.sleep(0.05)  # ctime ticks are coarse
    latest = _copy_up(upper, "hl/link1", "written again\n", lower)
    os.mknod(upper / "other", stat.S_IFCHR, os.makedev(0, 0))  # /other deleted
    (upper / "hl" / "sub").mkdir()
    os.setxattr(upper / "hl" / "sub", "trusted.overlay.opaque", b"y")  # lower hidden
    assert keep_link_groups(upper, lower) == 1  # two writes: the latest is the group's
    assert not (upper / "hl" / "sub" / "link3").exists()
    assert stat.S_ISCHR(os.lstat(upper / "other").st_mode)
    assert _ino(upper / "hl" / "link2") == _ino(latest)
    assert latest.read_text() == "written again\n"


def test_no_link_group_no_walk_and_symlinks_in_the_lower_not_followed(tmp_path: Path) -> None:
    lower, upper, outside = tmp_path / "lower", tmp_path / "upper", tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("host\n")
    os.link(outside / "f", outside / "g")
    lower.mkdir()
    (lower / "alone").write_text("one name\n")
    os.symlink(outside, lower / "sym")  # upper/sym/f must not be compared with the host file
    _copy_up(upper, "alone", "changed\n", lower)
    _copy_up(upper, "sym/f", "a directory replacing the symlink\n")
    assert keep_link_groups(upper, lower) == 0
    assert sorted(p.name for p in outside.iterdir()) == ["f", "g"]


def test_changes_and_merge_keep_the_group_in_layer_and_rootfs(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    _copy_up(upper, "hl/link2", "modified\n", lower)
    changes = changes_from_upper(upper, lower=lower)
    paths = {str(c.path) for c in changes}
    assert {"/hl/link1", "/hl/link2", "/hl/sub/link3", "/other/link4", "/other/gone"} <= paths
    apply_upper(upper, lower)
    inodes = {_ino(lower / n) for n in ("hl/link1", "hl/link2", "hl/sub/link3", "other/link4")}
    assert len(inodes) == 1
    assert (lower / "other" / "gone").read_text() == "modified\n"
    assert os.lstat(lower / "hl" / "link1").st_nlink == 5


def test_names_changed_separately_are_merged_against_the_lower_file(tmp_path: Path) -> None:
    """A write through one name, chmod and chown through others: POSIX's one inode has all."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    chmodded = _copy_up(upper, "other/link4", "original\n", lower)
    os.chmod(chmodded, 0o600)
    time.sleep(0.05)  # ctime ticks are coarse
    written = _copy_up(upper, "hl/link2", "modified\n", lower)
    time.sleep(0.05)
    chowned = _copy_up(upper, "hl/link1", "original\n", lower)
    os.chown(chowned, 7, 8)
    assert keep_link_groups(upper, lower) == 4  # link1, link4 relinked; link3, gone added
    names = ("hl/link1", "hl/link2", "hl/sub/link3", "other/link4", "other/gone")
    assert {_ino(upper / n) for n in names} == {_ino(written)}
    st = os.lstat(written)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o600)
    assert written.read_text() == "modified\n"


def test_equal_copies_of_one_group_are_joined_again(tmp_path: Path) -> None:
    """``chown -R`` over a group copies every name up on its own: one inode again."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    copies = [_copy_up(upper, name, "original\n", lower) for name in ("hl/link1", "hl/link2")]
    for copy in copies:
        os.chmod(copy, 0o600)
    os.utime(upper / "hl", ns=(7_000_000_000, 7_000_000_000))
    assert keep_link_groups(upper, lower) == 4
    group = {_ino(upper / n) for n in ("hl/link1", "hl/link2", "hl/sub/link3", "other/link4")}
    assert len(group) == 1
    assert os.lstat(upper / "hl").st_mtime_ns == 7_000_000_000
    assert not [p for p in (upper / "hl").iterdir() if p.name.startswith(".lamina")]


def test_a_name_replaced_by_a_new_file_leaves_the_group(tmp_path: Path) -> None:
    """``sed -i``, ``rm`` + create, ``mv new name``: POSIX gives that name a new inode."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    replaced = _copy_up(upper, "hl/link2", "new file\n")  # its own atime and mtime
    chmodded = _copy_up(upper, "other/link4", "original\n", lower)
    os.chmod(chmodded, 0o600)
    assert keep_link_groups(upper, lower) == 3  # link1, link3, gone join link4's copy
    assert _ino(upper / "hl" / "link2") == _ino(replaced)
    assert replaced.read_text() == "new file\n"
    group = {_ino(upper / n) for n in ("hl/link1", "hl/sub/link3", "other/link4", "other/gone")}
    assert group == {_ino(chmodded)}


def test_a_touched_copy_equal_to_the_lower_file_joins_its_group(tmp_path: Path) -> None:
    """``touch`` moves both times of the copy; equal content, mode and owner still tell."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    _lower(lower)
    touched = _copy_up(upper, "hl/link2", "original\n")  # new times, nothing else changed
    assert keep_link_groups(upper, lower) == 4
    assert _ino(upper / "other" / "link4") == _ino(touched)
