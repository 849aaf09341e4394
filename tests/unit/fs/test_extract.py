from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.errors import FilesystemError, ImageFormatError
from lamina.fs import ExtractStats, IgnoreList, extract_layer
from lamina.fs._extract import device_record

from .tarbuild import E, build_tar, d, file, hard, sym

IS_ROOT = os.geteuid() == 0


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path
        self.root = tmp_path / "build" / "root"
        self.root.mkdir(parents=True)
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        (self.outside / "sentinel").write_text("keep me")
        (tmp_path / "x").write_text("sibling of the build dir")
        self.warnings: list[str] = []

    def apply(self, entries: list[E], ignore: IgnoreList | None = None) -> ExtractStats:
        return extract_layer(
            self.root,
            build_tar(entries),
            ignore=ignore,
            on_warning=self.warnings.append,
            layer_name="sha256:test",
        )

    def outside_state(self) -> dict[str, tuple[int, int, bytes]]:
        state: dict[str, tuple[int, int, bytes]] = {}
        for dirpath, dirnames, filenames in os.walk(self.base):
            p = Path(dirpath)
            if p == self.root or self.root in p.parents:
                dirnames.clear()
                continue
            for name in filenames:
                f = p / name
                st = f.lstat()
                state[str(f)] = (st.st_mtime_ns, st.st_ino, f.read_bytes())
            for name in dirnames:
                state[str(p / name)] = (0, (p / name).lstat().st_ino, b"")
        return state


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# -- hostile layers -------------------------------------------------------------------


def test_dotdot_names_are_refused(env: Env) -> None:
    before = env.outside_state()
    stats = env.apply(
        [
            file("../x", b"evil"),
            file("../../outside/sentinel", b"evil"),
            file("a/../../../outside/new", b"evil"),
            d("../../outside/newdir"),
        ]
    )
    assert env.outside_state() == before
    assert stats.skipped == 4
    assert len(env.warnings) == 4
    assert all("refused" in w and "sha256:test" in w for w in env.warnings)
    assert "'../x'" in env.warnings[0]
    assert list(env.root.iterdir()) == []


def test_absolute_names_land_inside_root(env: Env) -> None:
    before = env.outside_state()
    env.apply([file(str(env.outside / "sentinel"), b"evil"), file("/etc/passwd", b"root:x")])
    assert env.outside_state() == before
    inner = env.root / str(env.outside / "sentinel").lstrip("/")
    assert inner.read_bytes() == b"evil"
    assert (env.root / "etc" / "passwd").read_bytes() == b"root:x"
    assert any("absolute name" in w for w in env.warnings)


def test_symlink_then_write_through_stays_inside(env: Env) -> None:
    before = env.outside_state()
    env.apply(
        [
            sym("escape", str(env.outside)),
            file("escape/sentinel", b"evil"),
            sym("up", "../../../../../../.."),
            file(f"up{env.outside}/new", b"evil"),
            sym("rel", "../outside"),
            file("rel/x", b"evil"),
        ]
    )
    assert env.outside_state() == before
    assert not (env.outside / "new").exists()
    assert (env.root / str(env.outside).lstrip("/") / "sentinel").read_bytes() == b"evil"
    assert (env.root / "outside" / "x").read_bytes() == b"evil"
    assert os.readlink(env.root / "escape") == str(env.outside)  # kept verbatim


def test_symlink_over_existing_then_file_replaces_link(env: Env) -> None:
    os.symlink(env.outside / "sentinel", env.root / "f")
    before = env.outside_state()
    env.apply([file("f", b"new")])
    assert env.outside_state() == before
    assert not (env.root / "f").is_symlink()
    assert (env.root / "f").read_bytes() == b"new"


def test_hardlink_to_host_shadow_is_not_made(env: Env) -> None:
    before = env.outside_state()
    env.apply(
        [
            hard("a", "/etc/shadow"),
            hard("b", "../../../../../../../../etc/shadow"),
            hard("c", str(env.outside / "sentinel")),
        ]
    )
    assert env.outside_state() == before
    assert list(env.root.iterdir()) == []
    assert len(env.warnings) == 3
    assert "does not exist inside the root" in env.warnings[0]
    assert "refused" in env.warnings[1]


def test_hardlink_through_symlink_resolves_inside(env: Env) -> None:
    (env.root / "etc").mkdir()
    (env.root / "etc" / "shadow").write_text("image shadow")
    before = env.outside_state()
    env.apply([sym("s", "/etc"), hard("h", "s/shadow")])
    assert env.outside_state() == before
    assert (env.root / "h").stat().st_ino == (env.root / "etc" / "shadow").stat().st_ino


def test_whiteout_dotdot_is_refused(env: Env) -> None:
    before = env.outside_state()
    env.apply(
        [
            file("../.wh.x"),
            file("a/../../.wh.x"),
            file(".wh.."),
            file("dir/.wh.."),
            file(f"{env.outside}/.wh.sentinel"),
        ]
    )
    assert env.outside_state() == before
    assert (env.base / "x").exists()
    assert sum("refused" in w for w in env.warnings) == 4


def test_whiteout_through_symlink_stays_inside(env: Env) -> None:
    os.symlink(env.outside, env.root / "link")
    before = env.outside_state()
    env.apply([file("link/.wh.sentinel")])
    assert env.outside_state() == before


# -- whiteouts ------------------------------------------------------------------------


def test_whiteout_deletes_file_and_tree(env: Env) -> None:
    env.apply([d("a"), file("a/f"), d("a/sub"), file("a/sub/g"), file("keep")])
    env.apply([file("a/.wh.sub"), file(".wh.keep")])
    assert (env.root / "a" / "f").exists()
    assert not (env.root / "a" / "sub").exists()
    assert not (env.root / "keep").exists()
    assert not (env.root / "a" / ".wh.sub").exists()


def test_opaque_keeps_same_layer_entries_before_and_after(env: Env) -> None:
    env.apply(
        [d("a"), file("a/lower1"), d("a/ldir"), file("a/ldir/x"), d("a/both"), file("a/both/old")]
    )
    env.apply(
        [
            d("a"),
            file("a/before", b"b"),
            d("a/both"),
            file("a/both/new"),
            file("a/.wh..wh..opq"),
            file("a/after", b"a"),
        ]
    )
    names = sorted(p.name for p in (env.root / "a").iterdir())
    assert names == ["after", "before", "both"]
    assert sorted(p.name for p in (env.root / "a" / "both").iterdir()) == ["new"]


def test_whiteout_does_not_hide_same_layer_entry(env: Env) -> None:
    env.apply([file("old")])
    env.apply([file("f", b"same layer"), file(".wh.f"), file(".wh.old")])
    assert (env.root / "f").read_bytes() == b"same layer"
    assert not (env.root / "old").exists()


def test_ignored_paths_are_not_written_nor_deleted(env: Env) -> None:
    (env.root / "proc").mkdir()
    (env.root / "proc" / "keep").write_text("host")
    (env.root / "var").mkdir()
    (env.root / "var" / "run").mkdir()
    (env.root / "var" / "run" / "x").write_text("x")
    (env.root / "var" / "lib").write_text("y")
    ignore = IgnoreList.of(["/proc", "/var/run"])
    env.apply([file("proc/new"), file(".wh.proc"), file(".wh.var"), d("x")], ignore=ignore)
    assert (env.root / "proc" / "keep").exists()
    assert not (env.root / "proc" / "new").exists()
    assert (env.root / "var" / "run" / "x").exists()
    assert not (env.root / "var" / "lib").exists()


# -- replacement ----------------------------------------------------------------------


def test_later_entries_replace_earlier_ones(env: Env) -> None:
    env.apply([d("a"), file("a/x"), file("b"), d("c"), file("c/deep"), file("s")])
    env.apply([file("a", b"now a file"), d("b"), sym("c", "/a"), d("s")])
    assert (env.root / "a").read_bytes() == b"now a file"
    assert (env.root / "b").is_dir()
    assert os.readlink(env.root / "c") == "/a"
    assert (env.root / "s").is_dir()


def test_file_rewrite_breaks_hardlink(env: Env) -> None:
    env.apply([file("a", b"one"), hard("b", "a")])
    assert (env.root / "a").stat().st_ino == (env.root / "b").stat().st_ino
    env.apply([file("a", b"two")])
    assert (env.root / "b").read_bytes() == b"one"
    assert (env.root / "a").read_bytes() == b"two"


# -- entry types and metadata ---------------------------------------------------------


def test_entry_types(env: Env) -> None:
    stats = env.apply(
        [
            d("dir", mode=0o750),
            file("dir/f", b"hello"),
            sym("dir/s", "f"),
            hard("dir/h", "dir/f"),
            E("fifo", tarfile.FIFOTYPE, mode=0o640),
        ]
    )
    assert (env.root / "dir" / "f").read_bytes() == b"hello"
    assert os.readlink(env.root / "dir" / "s") == "f"
    assert (env.root / "dir" / "h").stat().st_nlink == 2
    assert stat.S_ISFIFO((env.root / "fifo").lstat().st_mode)
    assert stat.S_IMODE((env.root / "dir").stat().st_mode) == 0o750
    assert (stats.files, stats.dirs, stats.symlinks, stats.hardlinks, stats.fifos) == (
        1,
        1,
        1,
        1,
        1,
    )


def test_devices_are_recorded_placeholders_not_nodes(env: Env) -> None:
    env.apply(
        [
            E("null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            E("loop", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
        ]
    )
    for name, kind, mode in (("null", ("c", 1, 3), 0o666), ("loop", ("b", 7, 0), 0o660)):
        st = (env.root / name).lstat()
        assert stat.S_ISREG(st.st_mode), "no device node a RUN could open"
        assert st.st_size == 0
        assert stat.S_IMODE(st.st_mode) == mode
        assert device_record(env.root / name) == kind


@pytest.mark.skipif(not IS_ROOT, reason="needs root to chown and set setuid on others' files")
def test_owner_and_special_bits(env: Env) -> None:
    env.apply(
        [
            file("suid", mode=0o4755, uid=1000, gid=1000),
            file("sgid", mode=0o2711, uid=0, gid=50),
            d("tmp", mode=0o1777),
            sym("link", "suid"),
        ]
    )
    st = (env.root / "suid").stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert stat.S_IMODE((env.root / "sgid").stat().st_mode) == 0o2711
    assert (env.root / "sgid").stat().st_gid == 50
    assert stat.S_IMODE((env.root / "tmp").stat().st_mode) == 0o1777


def test_user_xattr(env: Env) -> None:
    env.apply([file("f", pax={"SCHILY.xattr.user.test": "v\u00e9"})])
    try:
        assert os.getxattr(env.root / "f", "user.test") == "v\u00e9".encode()
    except OSError:
        pytest.skip("filesystem without user xattrs")


@pytest.mark.skipif(not IS_ROOT, reason="security.capability needs CAP_SETFCAP")
def test_security_capability_binary_xattr(env: Env) -> None:
    # vfs_cap_data v2: cap_net_bind_service (bit 10) permitted + effective
    cap = bytes.fromhex("0100000200040000000000000000000000000000")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ping")
        info.size = 1
        info.mode = 0o755
        info.uid = 0
        info.pax_headers = {
            "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")
        }
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    extract_layer(env.root, buf, on_warning=env.warnings.append)
    assert os.getxattr(env.root / "ping", "security.capability") == cap


def test_mtimes_including_directories(env: Env) -> None:
    env.apply(
        [
            d("a", mtime=111),
            d("a/b", mtime=222),
            file("a/b/f", mtime=333),
            sym(
                "a/s",
                "b",
            ),
            file("a/late", mtime=444),
        ]
    )
    assert (env.root / "a").stat().st_mtime == 111
    assert (env.root / "a" / "b").stat().st_mtime == 222
    assert (env.root / "a" / "b" / "f").stat().st_mtime == 333
    assert (env.root / "a" / "s").lstat().st_mtime == 1_000_000


def test_subsecond_pax_mtime(env: Env) -> None:
    env.apply([file("f", pax={"mtime": "1700000000.123456789"})])
    assert (env.root / "f").stat().st_mtime_ns == 1_700_000_000_123_456_789


def test_readonly_dir_still_filled(env: Env) -> None:
    env.apply([d("ro", mode=0o555), file("ro/f", b"x")])
    assert (env.root / "ro" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((env.root / "ro").stat().st_mode) == 0o555


# -- bad streams ----------------------------------------------------------------------


def test_garbage_is_an_image_format_error(env: Env) -> None:
    with pytest.raises(ImageFormatError, match="sha256:bad"):
        extract_layer(
            env.root,
            io.BytesIO(b"\x1f\x8b" + b"x" * 2000),
            on_warning=print,
            layer_name="sha256:bad",
        )


def test_truncated_stream_is_an_image_format_error(env: Env) -> None:
    data = build_tar([file("big", b"y" * 100_000)]).getvalue()[:20_000]
    with pytest.raises(ImageFormatError):
        extract_layer(env.root, io.BytesIO(data), on_warning=print)


def test_empty_stream_is_an_empty_layer(env: Env) -> None:
    assert extract_layer(env.root, io.BytesIO(b""), on_warning=print).entries == 0


def test_file_used_as_directory_is_a_filesystem_error(env: Env) -> None:
    with pytest.raises(FilesystemError, match="needs /f to be a directory"):
        env.apply([file("f"), file("f/g")])


def test_streaming_reads_without_seek(env: Env) -> None:
    class NoSeek(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            chunk = self._buf.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    data = build_tar([d("a"), file("a/f", b"z" * 5000)]).getvalue()
    stats = extract_layer(env.root, NoSeek(data), on_warning=print)  # type: ignore[arg-type]
    assert stats.bytes_written == 5000
