"""ConfinedRoot: recorded paths changed after a step, never through a planted symlink."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lamina.errors import FilesystemError
from lamina.fs import ConfinedRoot


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` with ``etc/hosts``, and an ``outside`` directory a step links to."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hosts").write_bytes(b"image\n")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "hosts").write_bytes(b"outside\n")
    os.utime(outside, ns=(10**9, 10**9))
    return root, outside


def _plant(root: Path, name: str, target: Path) -> None:
    """What a hostile step does: replace ``root/name`` with a symlink to ``target``."""
    path = root / name
    if path.is_dir() and not path.is_symlink():
        for p in sorted(path.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        path.rmdir()
    path.symlink_to(target)


def test_every_operation_refuses_a_parent_replaced_by_a_symlink(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    _plant(root, "etc", outside)
    before = sorted((p, p.lstat().st_mtime_ns, p.lstat().st_mode) for p in outside.rglob("*"))
    confined = ConfinedRoot(root)
    assert confined.lstat("/etc/hosts") is None
    assert not confined.set_times("/etc/hosts", (1, 1))
    assert not confined.set_times("/etc/sub", (1, 1))
    assert not confined.remove("/etc/hosts")
    assert not confined.rmdir("/etc/sub")
    assert not confined.rename_within("/etc/hosts", "moved")
    assert not confined.move_dir_out("/etc/sub", root.parent / "store")
    assert not confined.replace_file("/etc/hosts", b"x", mode=0o4755, owner=(0, 0))
    with confined.directory("/etc") as fd:
        assert fd is None
    confined.remove_xattr("/etc/sub", "user.x")
    after = sorted((p, p.lstat().st_mtime_ns, p.lstat().st_mode) for p in outside.rglob("*"))
    assert after == before
    assert outside.stat().st_mtime_ns == 10**9
    assert (outside / "hosts").read_bytes() == b"outside\n"
    assert not (root.parent / "store").exists()


def test_a_final_symlink_is_acted_on_itself(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "etc/hosts").unlink()
    (root / "etc/hosts").symlink_to(outside / "hosts")
    confined = ConfinedRoot(root)
    st = confined.lstat("/etc/hosts")
    assert st is not None
    assert stat.S_ISLNK(st.st_mode)
    assert confined.replace_file("/etc/hosts", b"restored\n", mode=0o644, times=(5, 5))
    assert not (root / "etc/hosts").is_symlink()
    assert (root / "etc/hosts").read_bytes() == b"restored\n"
    assert (outside / "hosts").read_bytes() == b"outside\n"
    (root / "etc/link").symlink_to(outside)
    assert confined.remove("/etc/link")
    assert outside.exists()
    assert (outside / "hosts").exists()


def test_replace_file_rewrites_a_lone_regular_file_in_place(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    confined = ConfinedRoot(root)
    ino = (root / "etc/hosts").stat().st_ino
    os.utime(root / "etc", ns=(7, 7))
    assert confined.replace_file("/etc/hosts", b"back\n", mode=0o600, times=(3, 4))
    st = (root / "etc/hosts").stat()
    assert (st.st_ino, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (ino, 0o600, 4)
    assert (root / "etc/hosts").read_bytes() == b"back\n"
    assert (root / "etc").stat().st_mtime_ns == 7  # the directory was not touched
    (root / "etc/d").mkdir()
    assert not confined.replace_file("/etc/d", b"x", mode=0o644)


def test_real_directories_are_changed(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    (root / "var/cache/pkg").mkdir(parents=True)
    (root / "var/cache/pkg/f").write_bytes(b"cached\n")
    confined = ConfinedRoot(root)
    assert confined.set_times(root / "var/cache", (2, 3))
    assert (root / "var/cache").stat().st_mtime_ns == 3
    assert confined.move_dir_out("/var/cache/pkg", tmp_path / "store")
    assert (tmp_path / "store/f").read_bytes() == b"cached\n"
    assert confined.rmdir("/var/cache")
    assert not (root / "var/cache").exists()
    assert not confined.rmdir("/var/missing")
    assert confined.remove("/etc")
    assert not (root / "etc").exists()


def test_dot_dot_in_a_recorded_path_is_a_bug(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(FilesystemError):
        ConfinedRoot(root).lstat("/etc/../../x")
    with pytest.raises(FilesystemError):
        ConfinedRoot(root).inside(root.parent / "x")


def test_set_directory_times_skips_what_is_no_longer_a_directory(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    for d in ("a/b/c", "a/d", "e"):
        (root / d).mkdir(parents=True)
    (root / "link").symlink_to(outside)
    (root / "a/f").write_bytes(b"file\n")
    ConfinedRoot(root).set_directory_times(
        [
            ("/a/b/c", (1, 11)),
            ("/a", (2, 12)),
            ("/link", (3, 13)),
            ("/link/sub", (4, 14)),
            ("/a/f", (5, 15)),
            ("/a/d", (6, 16)),
            ("/e", (7, 17)),
            ("/", (8, 18)),
        ]
    )
    assert [(root / d).stat().st_mtime_ns for d in ("a/b/c", "a", "a/d", "e", ".")] == [
        11,
        12,
        16,
        17,
        18,
    ]
    assert outside.stat().st_mtime_ns == 10**9
    assert (outside / "sub").stat().st_mtime_ns != 14
    assert (root / "a/f").stat().st_mtime_ns != 15
