from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from lamina.fs import Change, changes_for_tree, extract_layer, write_layer


def make_tree(root: Path) -> None:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr" / "bin" / "tool").chmod(0o755)
    os.link(root / "usr" / "bin" / "tool", root / "usr" / "bin" / "tool2")
    os.symlink("tool", root / "usr" / "bin" / "t")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_bytes(b"a" * 1000)
    (root / "gone").mkdir()
    os.mkfifo(root / "fifo")
    for p in [root / "usr" / "bin" / "t"]:
        os.utime(p, ns=(5 * 10**9, 5 * 10**9), follow_symlinks=False)
    for p in [root / "usr" / "bin" / "tool", root / "etc" / "conf", root / "fifo"]:
        os.utime(p, (1_600_000_000, 1_600_000_000))
    for p in [root / "usr" / "bin", root / "usr", root / "etc", root / "gone", root]:
        os.utime(p, (1_600_000_000, 1_600_000_000))


CHANGES = [
    Change.add("/usr/bin/tool"),
    Change.add("/usr/bin/tool2"),
    Change.add("/usr/bin/t"),
    Change.add("/etc/conf"),
    Change.add("/fifo"),
    Change.delete("/etc/old"),
    Change.delete("/gone/x"),
    Change.opaque("/gone"),
]


def layer_bytes(root: Path, epoch: int | None = None) -> bytes:
    out = io.BytesIO()
    write_layer(CHANGES, root, out, epoch=epoch)
    return out.getvalue()


def test_deterministic_across_trees_and_atimes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a)
    time.sleep(0.01)
    make_tree(b)
    os.utime(b / "etc" / "conf", (1, 1_600_000_000))  # a different atime only
    assert layer_bytes(a) == layer_bytes(b)


def test_layout_and_order(tmp_path: Path) -> None:
    make_tree(tmp_path)
    data = layer_bytes(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "etc",
        "etc/.wh.old",
        "etc/conf",
        "fifo",
        "gone",
        "gone/.wh..wh..opq",
        "gone/.wh.x",
        "usr",
        "usr/bin",
        "usr/bin/t",
        "usr/bin/tool",
        "usr/bin/tool2",
    ]
    by = {m.name: m for m in members}
    assert by["usr/bin/tool"].isreg()
    assert by["usr/bin/tool"].mode == 0o755
    assert by["usr/bin/tool2"].islnk()
    assert by["usr/bin/tool2"].linkname == "usr/bin/tool"
    assert by["usr/bin/t"].issym()
    assert by["usr/bin/t"].linkname == "tool"
    assert by["fifo"].isfifo()
    assert by["usr"].isdir()
    assert by["usr"].mtime == 1_600_000_000
    for m in members:
        assert m.uname == ""
        assert m.gname == ""
        assert "atime" not in m.pax_headers
        assert "ctime" not in m.pax_headers
    assert len(data) % 512 == 0


def test_epoch_clamps_mtimes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(layer_bytes(tmp_path, epoch=1000))) as tar:
        mtimes = {m.name: m.mtime for m in tar.getmembers()}
    assert mtimes["usr/bin/t"] == 5  # older than the epoch: kept
    assert mtimes["etc/conf"] == 1000
    assert mtimes["usr"] == 1000


def test_xattrs_kept_and_overlay_ones_dropped(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    try:
        os.setxattr(f, "user.test", b"\xff\x00bin")
    except OSError:
        pytest.skip("no user xattrs here")
    if os.geteuid() == 0:
        os.setxattr(f, "trusted.overlay.opaque", b"y")
    out = io.BytesIO()
    write_layer([Change.add("/f")], tmp_path, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        m = tar.getmember("f")
    assert (
        m.pax_headers["SCHILY.xattr.user.test"].encode("utf-8", "surrogateescape") == b"\xff\x00bin"
    )
    assert not any("overlay" in k for k in m.pax_headers)
    # and it round-trips through extraction
    dest = tmp_path / "dest"
    dest.mkdir()
    out.seek(0)
    extract_layer(dest, out, on_warning=print)
    assert os.getxattr(dest / "f", "user.test") == b"\xff\x00bin"


def test_long_and_unicode_names(tmp_path: Path) -> None:
    name = "d" * 120 + "/" + "é" * 80 + ".txt"
    p = tmp_path / name
    p.parent.mkdir()
    p.write_bytes(b"data")
    out = io.BytesIO()
    write_layer([Change.add("/" + name)], tmp_path, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert tar.getmember(name).size == 4


def test_whiteout_under_replaced_parent_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a file now")
    out = io.BytesIO()
    write_layer([Change.add("/a"), Change.delete("/a/x"), Change.delete("/b/y")], tmp_path, out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        assert tar.getnames() == ["a"]


def test_changes_for_tree(tmp_path: Path) -> None:
    (tmp_path / "app" / "sub").mkdir(parents=True)
    (tmp_path / "app" / "sub" / "f").write_text("x")
    (tmp_path / "app" / "g").write_text("x")
    paths = sorted(str(c.path) for c in changes_for_tree(tmp_path, "/app"))
    assert paths == ["/app", "/app/g", "/app/sub", "/app/sub/f"]
    assert list(changes_for_tree(tmp_path, "/missing")) == []


def test_writes_to_a_pipe_in_one_pass(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "big").write_bytes(os.urandom(3 << 20))

    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.n = 0
            self.biggest = 0

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.n += len(b)
            self.biggest = max(self.biggest, len(b))
            return len(b)

        def seek(self, *a: object) -> int:
            raise OSError("not seekable")

    sink = Sink()
    stats = write_layer([*CHANGES, Change.add("/big")], tmp_path, sink)  # type: ignore[arg-type]
    assert stats.size == sink.n
    assert sink.biggest <= 1 << 20
