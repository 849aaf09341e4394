from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from lamina.errors import FilesystemError
from lamina.fs import apply_upper, changes_from_upper, extract_layer, write_layer

IS_ROOT = os.geteuid() == 0


def summary(changes: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(c.kind.value, str(c.path)) for c in changes]


def lower_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "keep").write_text("keep")
    (root / "etc" / "del").write_text("del")
    (root / "opq").mkdir()
    (root / "opq" / "old").write_text("old")
    (root / "dir2file").mkdir()
    (root / "dir2file" / "x").write_text("x")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    if not IS_ROOT:
        pytest.skip("hand-made whiteouts need mknod (root)")
    up = tmp_path / "upper"
    (up / "etc").mkdir(parents=True)
    (up / "etc" / "new").write_text("new")
    whiteout(up / "etc" / "del")
    (up / "opq").mkdir()
    os.setxattr(up / "opq", "trusted.overlay.opaque", b"y")
    (up / "opq" / "fresh").write_text("fresh")
    (up / "dir2file").write_text("now a file")
    (up / "brand" / "new").mkdir(parents=True)
    (up / "brand" / "new" / "f").write_text("f")
    return up


def test_changes_from_hand_made_upper(upper: Path) -> None:
    assert summary(changes_from_upper(upper)) == [
        ("add", "/brand"),
        ("add", "/brand/new"),
        ("add", "/brand/new/f"),
        ("add", "/dir2file"),
        ("add", "/etc"),
        ("delete", "/etc/del"),
        ("add", "/etc/new"),
        ("opaque", "/opq"),
        ("add", "/opq/fresh"),
    ]


def test_layer_from_upper_applies_like_apply_upper(upper: Path, tmp_path: Path) -> None:
    root_a = tmp_path / "a"
    root_b = tmp_path / "b"
    lower_tree(root_a)
    lower_tree(root_b)
    out = io.BytesIO()
    write_layer(changes_from_upper(upper), upper, out)
    out.seek(0)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
    assert "etc/.wh.del" in names
    assert "opq/.wh..wh..opq" in names
    assert names.index("opq") + 1 == names.index("opq/.wh..wh..opq")
    extract_layer(root_a, out, on_warning=print)
    apply_upper(upper, root_b)
    assert list(upper.iterdir()) == []
    for root in (root_a, root_b):
        assert sorted(p.name for p in (root / "etc").iterdir()) == ["keep", "new"]
        assert sorted(p.name for p in (root / "opq").iterdir()) == ["fresh"]
        assert (root / "dir2file").read_text() == "now a file"
        assert (root / "brand" / "new" / "f").read_text() == "f"
    assert "trusted.overlay.opaque" not in os.listxattr(root_b / "opq")


def test_redirect_dir_is_refused(tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("trusted xattrs need root")
    up = tmp_path / "upper"
    (up / "moved").mkdir(parents=True)
    os.setxattr(up / "moved", "trusted.overlay.redirect", b"/orig")
    with pytest.raises(FilesystemError, match=r"trusted\.overlay\.redirect") as info:
        changes_from_upper(up)
    assert "redirect_dir=off" in (info.value.hint or "")


def test_user_xattr_opaque(tmp_path: Path) -> None:
    up = tmp_path / "upper"
    (up / "d").mkdir(parents=True)
    try:
        os.setxattr(up / "d", "user.overlay.opaque", b"y")
    except OSError:
        pytest.skip("no user xattrs")
    assert summary(changes_from_upper(up)) == [("opaque", "/d")]


@pytest.mark.root
def test_real_overlay_mount(tmp_path: Path) -> None:
    if not IS_ROOT or shutil.which("mount") is None:
        pytest.skip("needs root and mount")
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    lower_tree(lower)
    for p in (upper, work, merged):
        p.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off"
    r = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
        check=False,
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"overlay mount failed: {r.stderr!r}")
    try:
        (merged / "etc" / "new").write_text("new")
        os.remove(merged / "etc" / "del")
        shutil.rmtree(merged / "opq")
        (merged / "opq").mkdir()
        (merged / "opq" / "fresh").write_text("fresh")
        (merged / "etc" / "keep").chmod(0o600)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    got = summary(changes_from_upper(upper))
    assert got == [
        ("add", "/etc"),
        ("delete", "/etc/del"),
        ("add", "/etc/keep"),
        ("add", "/etc/new"),
        ("opaque", "/opq"),
        ("add", "/opq/fresh"),
    ]
    apply_upper(upper, lower)
    assert sorted(p.name for p in (lower / "etc").iterdir()) == ["keep", "new"]
    assert stat.S_IMODE((lower / "etc" / "keep").stat().st_mode) == 0o600
    assert (lower / "etc" / "keep").read_text() == "keep"
    assert sorted(p.name for p in (lower / "opq").iterdir()) == ["fresh"]
    assert not any(n.startswith("trusted.overlay") for n in os.listxattr(lower / "opq"))


def test_opaque_hiding_nothing_in_the_lower_is_an_addition(tmp_path: Path) -> None:
    up, low = tmp_path / "upper", tmp_path / "lower"
    for d in ("new", "new/sub", "kept", "link"):
        (up / d).mkdir(parents=True)
        os.setxattr(up / d, "trusted.overlay.opaque", b"y")
    (low / "kept").mkdir(parents=True)
    (low / "target" / "sub").mkdir(parents=True)
    (low / "new").symlink_to("target")  # a symlink in the lower is no directory to hide
    (low / "link").symlink_to("target")
    assert summary(changes_from_upper(up, lower=low)) == [
        ("opaque", "/kept"),
        ("add", "/link"),
        ("add", "/new"),
        ("add", "/new/sub"),
    ]
    assert summary(changes_from_upper(up)) == [
        ("opaque", "/kept"),
        ("opaque", "/link"),
        ("opaque", "/new"),
        ("opaque", "/new/sub"),
    ]
