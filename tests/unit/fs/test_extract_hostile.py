"""Hostile layers and archives: nothing outside the root changes, input stays bounded.

Each test aims only at a canary tree it makes under ``tmp_path``.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import ContextError, FilesystemError, ImageFormatError
from lamina.fs import (
    StatIndex,
    changes_for_tree,
    diff,
    extract_archive,
    extract_layer,
    safe_join,
    write_layer,
)
from lamina.fs._extract import DEVICE_XATTR, device_record, remove_path
from lamina.oci import compress_layer
from lamina.oci._tarread import MAX_ENTRY_HEADERS
from tests.support.canary import assert_unchanged, make_canary, snapshot

from .tarbuild import E, build_tar, d, file, sym

IS_ROOT = os.geteuid() == 0
WORKER_COUNTS = (1, 4)


def _extract(root: Path, data: io.BytesIO | io.RawIOBase, workers: int = 4) -> list[str]:
    warnings: list[str] = []
    extract_layer(
        root,
        data,  # type: ignore[arg-type]
        on_warning=warnings.append,
        layer_name="sha256:hostile",
        workers=workers,
    )
    return warnings


# -- deferred directory metadata --------------------------------------------------------


def _through_later_symlink(canary: Path) -> list[E]:
    """``m/``, ``m/b/`` 0777, then ``m`` -> the canary (a host directory holding ``b``)."""
    return [
        d("m", mode=0o755, mtime=1),
        d("m/b", mode=0o777, mtime=2),
        d("m/b/deeper", mode=0o777, mtime=3),
        sym("m", str(canary)),
        file("other", b"x"),
    ]


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_deferred_dir_metadata_does_not_follow_a_later_symlink(
    tmp_path: Path, workers: int
) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar(_through_later_symlink(canary)), workers)
    assert_unchanged(before, canary)
    assert os.readlink(root / "m") == str(canary)


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_deferred_dir_metadata_of_an_archive_stays_inside(tmp_path: Path, workers: int) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    root = tmp_path / "root"
    (root / "dst").mkdir(parents=True)
    extract_archive(
        root, "/dst", build_tar(_through_later_symlink(canary)), on_warning=print, workers=workers
    )
    assert_unchanged(before, canary)


def test_deferred_dir_metadata_skips_a_directory_made_again(tmp_path: Path) -> None:
    """A directory removed by a later entry and made again (as a parent) is not the
    entry's: its mode is the implicit 0755, not the removed entry's 0777."""
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar([d("a", mode=0o777), file("a", b"f"), file("a2/x")]))
    assert stat.S_ISREG((root / "a").lstat().st_mode)
    entries = [d("p", mode=0o700), d("p/q", mode=0o777), sym("p", "/elsewhere"), file("p/q/f")]
    _extract(root, build_tar(entries))
    q = root / "elsewhere" / "q"
    assert stat.S_IMODE(q.stat().st_mode) == 0o755


def test_directory_metadata_still_applied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar([d("a", mode=0o711, mtime=7), file("a/f"), d("a/b", mode=0o700)]))
    assert stat.S_IMODE((root / "a").stat().st_mode) == 0o711
    assert (root / "a").stat().st_mtime == 7
    assert stat.S_IMODE((root / "a" / "b").stat().st_mode) == 0o700


# -- device nodes -----------------------------------------------------------------------


def _devices() -> list[E]:
    return [
        d("dev", mode=0o755),
        E("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666, mtime=11),
        E("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660, gid=6, mtime=12),
        E("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o600, mtime=13),
    ]


def _layer_entries(changes_root: Path, path: str) -> dict[str, tarfile.TarInfo]:
    out = io.BytesIO()
    write_layer(changes_for_tree(changes_root, path), changes_root, out)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:") as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_device_nodes_are_never_created(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar(_devices()), workers)
    for name in ("null", "loop0", "sda"):
        st = (root / "dev" / name).lstat()
        assert stat.S_ISREG(st.st_mode), f"{name}: a device node a RUN could open"
        assert st.st_size == 0
    assert device_record(root / "dev" / "loop0") == ("b", 7, 0)
    assert stat.S_IMODE((root / "dev" / "null").lstat().st_mode) == 0o666


def test_devices_round_trip_to_a_written_layer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar(_devices()))
    entries = _layer_entries(root, "/dev")
    null, loop, sda = entries["dev/null"], entries["dev/loop0"], entries["dev/sda"]
    assert null.ischr()
    assert (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)
    assert loop.isblk()
    assert (loop.devmajor, loop.devminor, loop.mode) == (7, 0, 0o660)
    assert (loop.mtime, sda.mtime) == (12, 13)
    if IS_ROOT:
        assert loop.gid == 6
    assert sda.isblk()
    assert sda.size == 0
    assert not any(k.startswith("SCHILY.xattr.") for k in null.pax_headers), null.pax_headers


def test_a_placeholder_is_not_a_change_and_a_changed_one_stays_a_device(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _extract(root, build_tar(_devices()))
    before = StatIndex.scan(root)
    assert diff(before, StatIndex.scan(root)) == []
    os.chmod(root / "dev" / "sda", 0o640)  # a RUN's chmod: a change, still the device
    changed = [str(c.path) for c in diff(before, StatIndex.scan(root))]
    assert changed == ["/dev/sda"]
    sda = _layer_entries(root, "/dev")["dev/sda"]
    assert sda.isblk()
    assert sda.mode == 0o640


def test_hardlinked_device_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    entries = [
        E("c1", tarfile.CHRTYPE, devmajor=4, devminor=64),
        E("c2", tarfile.LNKTYPE, linkname="c1"),
    ]
    _extract(root, build_tar(entries))
    layer = _layer_entries(root, "/")
    assert layer["c1"].ischr()
    assert layer["c2"].islnk()
    assert layer["c2"].linkname == "c1"


def test_device_in_an_archive_is_a_placeholder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    extract_archive(root, "/x", build_tar(_devices()), on_warning=print)
    assert stat.S_ISREG((root / "x" / "dev" / "null").lstat().st_mode)
    assert DEVICE_XATTR in os.listxattr(root / "x" / "dev" / "null")


# -- tar header bombs -------------------------------------------------------------------


class _Lazy(io.RawIOBase):
    """``head`` then ``size`` zero bytes (never held in memory) then ``tail``; counts reads."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self._parts: Iterator[tuple[bytes, int]] = iter([(head, 0), (b"", size), (tail, 0)])
        self._buf, self._zeros = b"", 0
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while not self._buf and not self._zeros:
            part = next(self._parts, None)
            if part is None:
                return 0
            self._buf, self._zeros = part
        if self._buf:
            n = min(len(view), len(self._buf))
            view[:n] = self._buf[:n]
            self._buf = self._buf[n:]
        else:
            n = min(len(view), self._zeros)
            view[:n] = bytes(n)
            self._zeros -= n
        self.read_bytes += n
        return n


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT if kind in (b"L", b"K") else tarfile.USTAR_FORMAT)


def _end() -> bytes:
    return build_tar([file("after", b"ok")]).getvalue()


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.XHDTYPE, "PAX extended header"),
        (tarfile.GNUTYPE_LONGNAME, "GNU long name"),
        (tarfile.GNUTYPE_LONGLINK, "GNU long link name"),
    ],
)
def test_huge_headers_are_refused_before_they_are_read(
    tmp_path: Path, kind: bytes, what: str
) -> None:
    size = 64 << 20
    stream = _Lazy(_header("././@Long", kind, size), size, _end())
    with pytest.raises(ImageFormatError) as info:
        _extract(tmp_path, stream)
    text = info.value.render()
    assert "sha256:hostile" in text
    assert what in text
    assert "64.0 MiB" in text
    assert len(text) < 600
    assert stream.read_bytes < 2 * MAX_ENTRY_HEADERS
    assert not (tmp_path / "after").exists()


def test_a_long_name_within_the_cap_is_still_refused_briefly(tmp_path: Path) -> None:
    """A 512 KiB name (under the header cap, over PATH_MAX): a short error, no 512 KiB text."""
    name = "n" * (512 << 10)
    data = build_tar([file(name, b"x")])
    with pytest.raises(ImageFormatError) as info:
        _extract(tmp_path, data)
    assert "PATH_MAX" in info.value.message
    assert len(info.value.render()) < 600


def test_a_chain_of_extended_headers_is_refused(tmp_path: Path) -> None:
    chain = b"".join(
        _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 5) + b"name\0".ljust(512, b"\0")
        for _ in range(1500)
    )
    with pytest.raises(ImageFormatError) as info:
        _extract(tmp_path, io.BytesIO(chain + _end()))
    assert "tar headers in a row" in info.value.message


def test_global_headers_are_capped_over_the_archive(tmp_path: Path) -> None:
    entries = []
    for i in range(40):  # 40 x 4 KiB of distinct global keys: 160 KiB in all
        info = tarfile.TarInfo("glob")
        body = f"4106 k{i:04d}={'v' * 4094}\n".encode()
        assert len(body) == 4106
        info.type, info.size = tarfile.XGLTYPE, len(body)
        entries.append(info.tobuf(tarfile.USTAR_FORMAT) + body.ljust(4608, b"\0"))
    with pytest.raises(ImageFormatError) as refused:
        _extract(tmp_path, io.BytesIO(b"".join(entries) + _end()))
    assert "PAX global header" in refused.value.message


def test_truncated_sparse_map_is_an_image_format_error(tmp_path: Path) -> None:
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[482] = 1  # isextended: a sparse map block follows, but the stream ends
    block[148:156] = b"        "
    block[148:155] = f"{sum(block):06o}\0".encode()
    with pytest.raises(ImageFormatError):
        _extract(tmp_path, io.BytesIO(bytes(block)))


def test_archive_header_bomb_is_a_context_error(tmp_path: Path) -> None:
    size = 64 << 20
    stream = _Lazy(_header("././@PaxHeader", tarfile.XHDTYPE, size), size, _end())
    with pytest.raises(ContextError) as info:
        extract_archive(
            tmp_path,
            "/",
            stream,  # type: ignore[arg-type]
            on_warning=print,
            name="ADD ctx.tar",
            error=ContextError,
        )
    assert "ADD ctx.tar" in info.value.message
    assert stream.read_bytes < 2 * MAX_ENTRY_HEADERS


def test_headers_under_the_cap_still_work(tmp_path: Path) -> None:
    comment = "c" * (900 << 10)
    _extract(tmp_path, build_tar([file("f", b"x", pax={"comment": comment, "user.k": "v"})]))
    assert (tmp_path / "f").read_bytes() == b"x"


# -- deep paths ---------------------------------------------------------------------------


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    """A root removed with lamina's iterative removal (pytest's own recursion would fail)."""
    root = tmp_path / "root"
    root.mkdir()
    try:
        yield root
    finally:
        remove_path(tmp_path, root)


@pytest.mark.parametrize("workers", WORKER_COUNTS)
def test_a_1100_level_path_is_extracted_and_removed(deep_root: Path, workers: int) -> None:
    root = deep_root
    deep = "/".join(["d"] * 1100)
    _extract(root, build_tar([file(f"{deep}/leaf", b"deep")]), workers)
    assert (root / deep / "leaf").read_bytes() == b"deep"
    # a later layer deletes it (iteratively: no RecursionError), and an opaque
    # directory above this layer's deep entries keeps them
    _extract(root, build_tar([file(".wh.d")]), workers)
    assert not (root / "d").exists()
    _extract(root, build_tar([file(f"{deep}/leaf2"), file("d/.wh..wh..opq")]), workers)
    assert (root / deep / "leaf2").exists()


def test_a_path_over_path_max_is_a_clear_error(deep_root: Path) -> None:
    deep = "/".join(["d"] * 2100)  # 4199 bytes
    with pytest.raises(ImageFormatError) as info:
        _extract(deep_root, build_tar([file(f"{deep}/leaf")]))
    assert "PATH_MAX" in info.value.message
    assert len(info.value.render()) < 600


def test_a_host_path_over_path_max_is_a_clear_error(deep_root: Path) -> None:
    # in-image name under PATH_MAX, but the build root's own path makes it longer
    deep = "/".join(["d"] * 2040)
    with pytest.raises(FilesystemError) as info:
        _extract(deep_root, build_tar([file(f"{deep}/leaf")]))
    assert "too long" in info.value.message.lower() or "PATH_MAX" in (info.value.hint or "")
    assert len(info.value.render()) < 900


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("big", [True, False])
def test_a_full_disk_names_the_layer_and_what_was_written(small_fs: Path, big: bool) -> None:
    if big:  # streamed by the reading thread
        entries = [file("big", bytes(4 << 20))]
    else:  # small files for the workers
        entries = [file(f"f{i}", bytes(100_000)) for i in range(40)]
    with pytest.raises(FilesystemError) as info:
        _extract(small_fs, build_tar(entries))
    message = info.value.message
    assert message.startswith("sha256:hostile: the disk is full after writing ")
    assert " MiB" in message or " bytes" in message
    assert os.strerror(errno.ENOSPC) in message
    assert "--kaniko-dir" in (info.value.hint or "")


def test_a_full_disk_while_compressing_a_layer_says_how_much(small_fs: Path) -> None:
    with (small_fs / "blob").open("wb") as dest, pytest.raises(FilesystemError) as info:
        compress_layer(io.BytesIO(os.urandom(4 << 20)), dest, compression="none")
    assert "the disk is full after writing" in info.value.message
    assert "--kaniko-dir" in (info.value.hint or "")


# -- numbers out of range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pax", "what"),
    [
        ({"uid": str(1 << 40)}, "owner"),
        ({"gid": "-7"}, "owner"),
        ({"mtime": "1e999999"}, "mtime"),
        ({"mtime": "nan"}, "mtime"),
        ({"mtime": str(10**30)}, "mtime"),
    ],
)
def test_numbers_out_of_range_are_a_clear_error(
    tmp_path: Path, pax: dict[str, str], what: str
) -> None:
    with pytest.raises(ImageFormatError) as info:
        _extract(tmp_path, build_tar([file("f", b"x", pax=pax)]))
    assert what in info.value.message
    assert "sha256:hostile" in info.value.message
    assert len(info.value.message) < 300


def test_device_numbers_out_of_range_are_a_clear_error(tmp_path: Path) -> None:
    entry = E("dev", tarfile.BLKTYPE, devmajor=1 << 20, devminor=0)
    with pytest.raises(ImageFormatError, match="device number"):
        _extract(tmp_path, build_tar([entry]))


# -- safe_join deep in a tree (lookups relative to a directory descriptor) ------------------


def _chain(base: Path, prefix: str, depth: int) -> tuple[Path, str]:
    rel = "/".join(f"{prefix}{i}" for i in range(depth))
    (base / rel).mkdir(parents=True)
    return base / rel, rel


def test_safe_join_deep_symlinks_and_dotdot(deep_root: Path) -> None:
    root = deep_root
    deep, rel = _chain(root, "d", 40)
    (deep / "sub").mkdir()
    (deep / "lnk").symlink_to("sub")
    (deep / "abs").symlink_to("/top")
    (deep / "up").symlink_to("../../..")
    (deep / "file").write_text("f")
    (deep / "loop").symlink_to("loop")
    above3 = "/".join(f"d{i}" for i in range(37))
    assert safe_join(root, f"{rel}/new") == deep / "new"
    assert safe_join(root, f"{rel}/lnk/x") == deep / "sub" / "x"
    assert safe_join(root, f"{rel}/abs/y") == root / "top" / "y"
    assert safe_join(root, f"{rel}/up/z") == root / above3 / "z"
    assert safe_join(root, f"{rel}/../../q") == root / "/".join(f"d{i}" for i in range(38)) / "q"
    assert safe_join(root, f"{rel}/lnk", follow_final=True) == deep / "sub"
    assert safe_join(root, f"{rel}/missing/../lnk/w") == deep / "sub" / "w"
    with pytest.raises(FilesystemError, match="not a directory"):
        safe_join(root, f"{rel}/file/x/y")
    with pytest.raises(FilesystemError, match="too many levels"):
        safe_join(root, f"{rel}/loop/x")


def test_safe_join_deep_after_an_absolute_symlink_looks_in_the_new_directory(
    deep_root: Path,
) -> None:
    """A symlink deep in one chain to a directory as deep in another: lookups below it
    are made in the other chain (not in a directory descriptor of the first)."""
    root = deep_root
    first, rel = _chain(root, "d", 24)  # the symlink is looked up at the first deep level
    other, other_rel = _chain(root, "e", 30)
    (other / "t").mkdir()
    (other / "s").symlink_to("t")
    (first / "jump").symlink_to("/" + other_rel)
    assert safe_join(root, f"{rel}/jump/s/w") == other / "t" / "w"
    assert safe_join(root, f"{rel}/jump/../e29/s/w") == other / "t" / "w"
