"""fs.copy_entry / copy_tree: only regular files are read, other nodes re-made."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lamina.fs import copy_entry, copy_tree


def test_a_tree_with_a_fifo_is_copied_without_opening_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/file").write_bytes(b"data")
    os.chmod(src / "d/file", 0o751)
    os.utime(src / "d/file", ns=(1_000_000_000, 2_000_000_000))
    os.mkfifo(src / "d/fifo", 0o640)  # opening it to read would block forever
    os.symlink("/etc/passwd", src / "d/link")
    copy_tree(src, tmp_path / "dst")
    dst = tmp_path / "dst/d"
    assert (dst / "file").read_bytes() == b"data"
    st = os.lstat(dst / "file")
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime_ns == 2_000_000_000
    fifo = os.lstat(dst / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode)
    assert stat.S_IMODE(fifo.st_mode) == 0o640
    assert os.readlink(dst / "link") == "/etc/passwd"


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod as root")
def test_a_device_node_is_re_made_not_read(tmp_path: Path) -> None:
    """/dev/zero's numbers: reading it would never end; the copy is a node again."""
    node = tmp_path / "zero"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    copy_entry(node, tmp_path / "copy")
    st = os.lstat(tmp_path / "copy")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(1, 5)


def test_the_destination_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "src").write_bytes(b"new")
    os.symlink(victim, tmp_path / "dst")
    with pytest.raises(OSError, match="symbolic links"):
        copy_entry(tmp_path / "src", tmp_path / "dst")
    assert victim.read_bytes() == b"keep"
