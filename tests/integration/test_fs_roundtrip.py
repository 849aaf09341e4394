"""Base layer → RUN-like step in an overlay → layer → re-extract: same tree."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from lamina.fs import (
    BuildDir,
    StatIndex,
    apply_upper,
    changes_from_upper,
    diff,
    extract_layer,
    write_layer,
)
from tests.unit.fs.tarbuild import build_tar, d, file, hard, sym

pytestmark = pytest.mark.root


def tree_state(root: Path) -> dict[str, tuple[int, int, int, bytes | str]]:
    out: dict[str, tuple[int, int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            st = p.lstat()
            body: bytes | str = b""
            if stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, body)
    return out


BASE = [
    d("etc"),
    file("etc/passwd", b"root:x:0:0\n"),
    file("etc/gone", b"bye"),
    d("opt/old", mode=0o750),
    file("opt/old/data", b"old", uid=1000, gid=1000),
    file("bin/tool", b"#!", mode=0o4755),
    hard("bin/tool2", "bin/tool"),
    sym("bin/sh", "tool"),
]


def step(merged: Path) -> None:
    (merged / "etc" / "passwd").write_bytes(b"root:x:0:0\nu:x:1:1\n")
    os.remove(merged / "etc" / "gone")
    shutil.rmtree(merged / "opt" / "old")
    (merged / "opt" / "old").mkdir()
    (merged / "opt" / "old" / "fresh").write_bytes(b"new")
    (merged / "usr" / "share").mkdir(parents=True)
    (merged / "usr" / "share" / "doc").write_bytes(b"doc")
    os.link(merged / "usr" / "share" / "doc", merged / "usr" / "share" / "doc2")


def test_overlay_and_stat_index_layers_reproduce_the_tree(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    bd = BuildDir.create(tmp_path / "kaniko")
    try:
        extract_layer(bd.rootfs, build_tar(BASE), on_warning=print)
        before = StatIndex.scan(bd.rootfs)
        upper, work, merged = bd.work / "upper", bd.work / "work", bd.work / "merged"
        for p in (upper, work, merged):
            p.mkdir()
        opts = f"lowerdir={bd.rootfs},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off"
        r = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
            check=False,
            capture_output=True,
        )
        if r.returncode != 0:
            pytest.skip(f"overlay mount failed: {r.stderr!r}")
        try:
            step(merged)
        finally:
            subprocess.run(["umount", str(merged)], check=True)
        layer = io.BytesIO()
        write_layer(changes_from_upper(upper), upper, layer)
        apply_upper(upper, bd.rootfs)
        after = StatIndex.scan(bd.rootfs)
        layer2 = io.BytesIO()
        write_layer(diff(before, after), bd.rootfs, layer2)

        for lay in (layer, layer2):
            fresh = tmp_path / f"fresh{id(lay)}"
            fresh.mkdir()
            extract_layer(fresh, build_tar(BASE), on_warning=print)
            lay.seek(0)
            extract_layer(fresh, lay, on_warning=print)
            assert tree_state(fresh) == tree_state(bd.rootfs)
        assert (bd.rootfs / "usr" / "share" / "doc2").stat().st_nlink == 2
        assert sorted(os.listdir(bd.rootfs / "opt" / "old")) == ["fresh"]
    finally:
        bd.cleanup()
    assert not bd.path.exists()
