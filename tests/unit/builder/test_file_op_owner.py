"""WORKDIR's owner under USER: BuildKit's file-op rule (issue 12 #17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.builder._ids import file_op_owner


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:100::/home/app:/bin/sh\nbad:x:x:y::/:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\nusers:x:100:\nstaff:x:50:app\n")
    return tmp_path


@pytest.mark.parametrize(
    ("user", "owner"),
    [
        ("9999", (9999, 9999)),  # numeric, not in passwd: gid = uid
        ("1234", (1234, 1234)),  # numeric, in passwd with group 100: still uid:uid
        ("app", (1234, 100)),  # a name: its passwd uid and gid
        ("nosuch", (0, 0)),  # an unknown name: root, no error
        ("bad", (0, 0)),  # a malformed entry counts as none
        ("9999:staff", (9999, 50)),
        ("app:7", (1234, 7)),
        ("app:nosuchgroup", (1234, 100)),  # an unknown group leaves the gid alone
        ("1²", (0, 0)),  # not an ASCII number: a name, not in passwd
        ("4294967296", (0, 0)),  # beyond 32 bits: a name too
    ],
)
def test_file_op_owner(rootfs: Path, user: str, owner: tuple[int, int]) -> None:
    assert file_op_owner(rootfs, user) == owner


def test_without_passwd_or_group_files(tmp_path: Path) -> None:
    assert file_op_owner(tmp_path, "app:staff") == (0, 0)
    assert file_op_owner(tmp_path, "42:staff") == (42, 42)
