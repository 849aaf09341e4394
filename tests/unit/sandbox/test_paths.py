"""resolve_in_root: symlinks are followed as inside a chroot, never out of the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.sandbox._init import resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/bin").mkdir(parents=True)
    (r / "bin").symlink_to("usr/bin")
    (r / "abs").symlink_to("/usr")
    (r / "up").symlink_to("../../../..")
    (r / "loop").symlink_to("loop")
    return r


def test_plain_and_missing(root: Path) -> None:
    assert resolve_in_root(str(root), "/usr/bin/x") == str(root / "usr/bin/x")
    assert resolve_in_root(str(root), "/") == str(root)
    assert resolve_in_root(str(root), "a/./b//c") == str(root / "a/b/c")


def test_relative_and_absolute_symlinks(root: Path) -> None:
    assert resolve_in_root(str(root), "/bin/sh") == str(root / "usr/bin/sh")
    assert resolve_in_root(str(root), "/abs/bin") == str(root / "usr/bin")


def test_dotdot_and_symlinks_cannot_escape(root: Path) -> None:
    assert resolve_in_root(str(root), "/../../etc/passwd") == str(root / "etc/passwd")
    assert resolve_in_root(str(root), "/up/etc") == str(root / "etc")


def test_last_component_not_followed_on_request(root: Path) -> None:
    assert resolve_in_root(str(root), "/bin", follow_last=False) == str(root / "bin")


def test_symlink_loop(root: Path) -> None:
    with pytest.raises(OSError, match="symbolic links") as err:
        resolve_in_root(str(root), "/loop/x")
    assert err.value.errno == 40
    assert os.path.islink(root / "loop")
