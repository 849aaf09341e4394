"""COPY destination rules, --chown/--chmod parsing and copying into a rootfs."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from lamina.builder._copy import (
    CopyRequest,
    copy_into,
    is_tar_archive,
    parse_chmod,
    resolve_chown,
    resolve_dest,
)
from lamina.context import LocalContext
from lamina.errors import BuildStepError, DockerfileError


@pytest.mark.parametrize(
    ("dest", "workdir", "expected"),
    [
        ("/app/", "/", ("/app", True)),
        ("/app", "/", ("/app", False)),
        ("app", "/srv", ("/srv/app", False)),
        ("app/", "/srv", ("/srv/app", True)),
        (".", "/srv", ("/srv", True)),
        ("./", "/srv", ("/srv", True)),
        ("../x", "/srv/a", ("/srv/x", False)),
        ("/a/../../b", "/", ("/b", False)),
    ],
)
def test_resolve_dest(dest: str, workdir: str, expected: tuple[str, bool]) -> None:
    assert resolve_dest(dest, workdir) == expected


def test_parse_chmod() -> None:
    assert parse_chmod("755", None) == 0o755
    assert parse_chmod("0640", None) == 0o640
    with pytest.raises(DockerfileError):
        parse_chmod("17777", None)
    with pytest.raises(DockerfileError):
        parse_chmod("abc", None)
    with pytest.raises(DockerfileError):
        parse_chmod("u+q", None)


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nstaff:x:50:\n")
    return root


def test_resolve_chown(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    assert resolve_chown(root, "1234", None) == (1234, 1234)
    assert resolve_chown(root, "12:34", None) == (12, 34)
    assert resolve_chown(root, "app", None) == (1000, 1001)
    assert resolve_chown(root, "app:staff", None) == (1000, 50)
    with pytest.raises(BuildStepError):
        resolve_chown(root, "ghost", None)


def _ctx(tmp_path: Path) -> LocalContext:
    ctx = tmp_path / "ctx"
    (ctx / "dir" / "sub").mkdir(parents=True)
    (ctx / "dir" / "one.txt").write_text("1")
    (ctx / "dir" / "sub" / "two.txt").write_text("2")
    (ctx / "f.txt").write_text("f")
    os.chmod(ctx / "f.txt", 0o600)
    os.symlink("f.txt", ctx / "ln")
    return LocalContext(ctx)


def test_copy_directory_contents_file_and_link(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    ctx = _ctx(tmp_path)
    sources = (*ctx.resolve("dir"), *ctx.resolve("f.txt"), *ctx.resolve("ln"))
    req = CopyRequest(
        tree=ctx, sources=sources, dest="/opt/app", dest_is_dir=True, owner=(0, 0), chmod=None
    )
    written = copy_into(root, req, warn=lambda _m: None)
    assert (root / "opt/app/one.txt").read_text() == "1"
    assert (root / "opt/app/sub/two.txt").read_text() == "2"
    assert not (root / "opt/app/dir").exists()  # contents, not the directory itself
    assert (root / "opt/app/f.txt").stat().st_mode & 0o777 == 0o600
    # a symlink source inside the context is followed (BuildKit): a copy of f.txt
    assert not (root / "opt/app/ln").is_symlink()
    assert (root / "opt/app/ln").read_text() == (tmp_path / "ctx" / "f.txt").read_text()
    assert PurePosixPath("/opt/app/sub/two.txt") in written
    assert PurePosixPath("/opt") in written  # created parents are part of the layer


def test_copy_file_to_file_with_chown_and_chmod(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    ctx = _ctx(tmp_path)
    req = CopyRequest(
        tree=ctx,
        sources=tuple(ctx.resolve("f.txt")),
        dest="/srv/renamed",
        dest_is_dir=False,
        owner=(1000, 1001),
        chmod=0o755,
    )
    copy_into(root, req, warn=lambda _m: None)
    st = (root / "srv" / "renamed").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1001, 0o755)
    parent = (root / "srv").stat()
    assert (parent.st_uid, parent.st_gid) == (1000, 1001)


def test_copy_never_escapes_the_rootfs_through_a_symlink(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "evil")
    ctx = _ctx(tmp_path)
    req = CopyRequest(
        tree=ctx,
        sources=tuple(ctx.resolve("f.txt")),
        dest="/evil",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
    )
    copy_into(root, req, warn=lambda _m: None)
    assert not (outside / "f.txt").exists()


def test_is_tar_archive(tmp_path: Path) -> None:
    import tarfile

    (tmp_path / "x").write_text("x")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "x", arcname="x")
    assert is_tar_archive(tmp_path / "a.tar.gz")
    assert not is_tar_archive(tmp_path / "x")
