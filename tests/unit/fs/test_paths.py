from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.errors import FilesystemError
from lamina.fs import safe_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "shadow").write_text("inside")
    (r / "usr" / "lib").mkdir(parents=True)
    return r


def test_plain_and_absolute_are_the_same(root: Path) -> None:
    assert safe_join(root, "etc/shadow") == root / "etc" / "shadow"
    assert safe_join(root, "/etc/shadow") == root / "etc" / "shadow"
    assert safe_join(root, "/") == root
    assert safe_join(root, "") == root
    assert safe_join(root, "./etc//./shadow") == root / "etc" / "shadow"


def test_dotdot_clamps_at_root(root: Path) -> None:
    assert safe_join(root, "../../../etc/shadow") == root / "etc" / "shadow"
    assert safe_join(root, "/usr/../../..") == root
    assert safe_join(root, "usr/lib/../../etc") == root / "etc"


def test_absolute_symlink_resolves_inside(root: Path) -> None:
    os.symlink("/etc/shadow", root / "etc" / "x")
    assert safe_join(root, "/etc/x", follow_final=True) == root / "etc" / "shadow"
    assert safe_join(root, "/etc/x") == root / "etc" / "x"


def test_symlinked_directory_in_the_middle(root: Path) -> None:
    os.symlink("/", root / "up")
    os.symlink("../../../../..", root / "usr" / "lib" / "deep")
    assert safe_join(root, "up/etc/shadow") == root / "etc" / "shadow"
    assert safe_join(root, "usr/lib/deep/etc/passwd") == root / "etc" / "passwd"
    os.symlink("/tmp", root / "tmplink")
    assert safe_join(root, "tmplink/new") == root / "tmp" / "new"


def test_relative_symlink_then_dotdot(root: Path) -> None:
    os.symlink("usr/lib", root / "lib")
    # /lib/.. is /usr (the parent of the symlink's target), as in POSIX
    assert safe_join(root, "lib/..") == root / "usr"


def test_symlink_loop_is_an_error(root: Path) -> None:
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    with pytest.raises(FilesystemError, match="too many levels"):
        safe_join(root, "a/x")


def test_file_used_as_directory_is_an_error(root: Path) -> None:
    with pytest.raises(FilesystemError, match="not a directory"):
        safe_join(root, "etc/shadow/x/y")


_names = st.sampled_from(["a", "b", "..", ".", "etc", "l1", "l2", "l3", ""])
_targets = st.sampled_from(["/", "..", "../..", "/etc", "a/../..", "../../../..", "b", "/a/b"])


@settings(max_examples=150, deadline=None)
@given(
    links=st.lists(st.tuples(st.sampled_from(["l1", "a/l2", "a/b/l3"]), _targets), max_size=3),
    path=st.lists(_names, max_size=8),
    follow=st.booleans(),
)
def test_never_outside_root(
    tmp_path_factory: pytest.TempPathFactory,
    links: list[tuple[str, str]],
    path: list[str],
    follow: bool,
) -> None:
    root = tmp_path_factory.mktemp("r")
    (root / "a" / "b").mkdir(parents=True)
    for name, target in links:
        if not os.path.lexists(root / name):
            os.symlink(target, root / name)
    try:
        result = safe_join(root, "/".join(path), follow_final=follow)
    except FilesystemError:
        return  # loops are refused, which is fine
    assert result == root or root in result.parents
    assert ".." not in result.relative_to(root).parts
    # and nothing between root and result is a symlink
    cur = root
    for part in result.relative_to(root).parts[:-1]:
        cur = cur / part
        assert not cur.is_symlink()
