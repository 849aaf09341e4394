"""Parallel file creation in extract_layer: same tree as in order, same safety, same errors."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import FilesystemError
from lamina.fs import extract_layer
from lamina.fs._extract import WORKERS, _FilePool

from .tarbuild import E, build_tar, d, file, hard, sym

IS_ROOT = os.geteuid() == 0


#: mtimes after this are "now": directories made for entries whose directory is not in the tar
RECENT_NS = (int(time.time()) - 3600) * 1_000_000_000


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path below ``root``: type, mode, owners, mtime, content or target, xattrs, links."""
    state: dict[str, tuple[Any, ...]] = {}
    first_of_inode: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                body: object = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            xattrs = sorted(
                (k, os.getxattr(p, k, follow_symlinks=False))
                for k in os.listxattr(p, follow_symlinks=False)
            )
            link = None
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                link = first_of_inode.setdefault(st.st_ino, rel)
            state[rel] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                "now" if st.st_mtime_ns > RECENT_NS else st.st_mtime_ns,
                body,
                xattrs,
                link,
            )
    return state


def outside_state(base: Path) -> dict[str, tuple[int, bytes]]:
    """What lies below ``base`` but outside the two build dirs ``base/seq`` and ``base/par``."""
    state: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        p = Path(dirpath)
        if p == base:
            dirnames[:] = [n for n in dirnames if n not in ("seq", "par")]
        for name in dirnames + filenames:
            f = p / name
            st = f.lstat()
            state[str(f)] = (st.st_mtime_ns, f.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
    return state


def extract(
    root: Path, layers: list[list[E]], workers: int, warnings: list[str] | None = None
) -> None:
    for i, entries in enumerate(layers):
        extract_layer(
            root,
            build_tar(entries),
            on_warning=(warnings if warnings is not None else []).append,
            layer_name=f"layer {i}",
            workers=workers,
        )


def both_ways(tmp_path: Path, layers: list[list[E]]) -> tuple[Path, Path]:
    """Extract ``layers`` in order (one worker) and in parallel; the trees must be equal."""
    seq, par = tmp_path / "seq" / "root", tmp_path / "par" / "root"
    seq.mkdir(parents=True)
    par.mkdir(parents=True)
    seq_warn: list[str] = []
    par_warn: list[str] = []
    extract(seq, layers, 1, seq_warn)
    extract(par, layers, WORKERS, par_warn)
    assert snapshot(par) == snapshot(seq)
    assert sorted(par_warn) == sorted(seq_warn)
    return seq, par


def lamina_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lamina-extract")]


def generated_layers(seed: int) -> list[list[E]]:
    rnd = random.Random(seed)
    modes = [0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777 & 0o7777, 0o444]
    owners = [(0, 0), (1, 1), (1000, 1000), (65534, 65534), (0, 42)] if IS_ROOT else [(0, 0)]

    def meta() -> dict[str, object]:
        uid, gid = rnd.choice(owners)
        return {
            "mode": rnd.choice(modes),
            "uid": uid,
            "gid": gid,
            "mtime": rnd.randrange(1_000_000, 1_700_000_000),
        }

    lower: list[E] = [d("keep"), d("gone"), d("opq"), d("swap"), file("fileswap", b"f")]
    for i in range(60):
        lower.append(file(f"gone/f{i}", b"lower %d" % i, **meta()))
        lower.append(file(f"opq/f{i}", b"lower %d" % i, **meta()))
        lower.append(file(f"keep/f{i}", b"lower %d" % i, **meta()))
    lower += [sym("swap/link", "../keep"), file("swap/f", b"s"), d("swap/sub"), file("x", b"x")]

    upper: list[E] = []
    names: list[str] = []
    for i in range(40):
        dname = f"d{i:02d}"
        if i % 7 != 3:  # some directories only implied by their files
            upper.append(
                d(dname, mode=rnd.choice([0o755, 0o700, 0o555]), mtime=rnd.randrange(1, 10**9))
            )
        for j in range(rnd.randrange(5, 40)):
            name = f"{dname}/f{j:03d}"
            size = rnd.choice([0, 1, 100, 4096, 70_000])
            pax = {"SCHILY.xattr.user.k": f"v{j}"} if j % 5 == 0 else {}
            upper.append(file(name, rnd.randbytes(size), pax=pax, **meta()))
            names.append(name)
            if j % 9 == 0:
                upper.append(sym(f"{dname}/l{j}", rnd.choice([name, f"f{j:03d}", "/etc/passwd"])))
            if j % 11 == 0:
                upper.append(hard(f"{dname}/h{j}", name))
    upper.append(file("big", b"B" * (2 << 20), mode=0o640))  # streamed in order
    upper.append(file("big2", b"C" * ((1 << 20) + 1)))
    for name in rnd.sample(names, 30):  # duplicates: the last one wins
        upper.append(file(name, rnd.randbytes(50), **meta()))
    upper += [
        file("keep/f3", b"rewritten"),
        hard("keep/h", "keep/f4"),
        file("keep/f4", b"breaks the link"),
        E("gone/.wh.f1"),
        E(".wh.gone"),
        file("gone/again", b"after the whiteout"),
        E("opq/.wh..wh..opq"),
        file("opq/f5", b"this layer's"),
        file("swap", b"a file where a directory was"),
        d("fileswap"),
        file("fileswap/inside", b"a directory where a file was"),
        file("x", b"x again"),
        sym("x", "somewhere"),
        file("x", b"x third"),
    ]
    return [lower, upper]


# -- same tree ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_parallel_tree_equals_sequential_tree(tmp_path: Path, seed: int) -> None:
    seq, _par = both_ways(tmp_path, generated_layers(seed))
    # the comparison is not vacuous
    tree = snapshot(seq)
    assert len(tree) > 500
    assert tree["swap"][5] == b"a file where a directory was"
    assert "gone/f2" not in tree
    assert tree["gone/again"][5] == b"after the whiteout"
    assert "opq/f6" not in tree
    assert tree["opq/f5"][5] == b"this layer's"
    assert tree["keep/f3"][5] == b"rewritten"
    assert tree["keep/h"][5] == b"lower 4"
    assert tree["x"][5] == b"x third"


def test_a_worker_count_of_one_starts_no_thread(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    extract_layer(
        tmp_path,
        build_tar([file(f"f{i}") for i in range(50)]),
        on_warning=lambda w: seen.append(lamina_threads()),
        workers=1,
    )
    assert (tmp_path / "f49").read_bytes() == b"x"
    assert lamina_threads() == []


def test_worker_warnings_reach_the_caller(tmp_path: Path) -> None:
    # an xattr namespace no filesystem knows: each file warns, from its worker
    entries = [file(f"f{i}", pax={"SCHILY.xattr.bogus.k": "v"}) for i in range(20)]
    _seq, _par = both_ways(tmp_path, [entries])
    warnings: list[str] = []
    (tmp_path / "again").mkdir()
    extract(tmp_path / "again", [entries], WORKERS, warnings)
    assert len(warnings) == 20
    assert all("xattr bogus.k not set" in w for w in warnings)


# -- hostile layers aimed at pending writes --------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "sentinel").write_text("keep me")
    return out


@pytest.mark.parametrize("absolute", [True, False])
def test_directory_replaced_by_symlink_after_many_pending_files(
    tmp_path: Path, outside: Path, absolute: bool
) -> None:
    target = str(outside) if absolute else "../../../../outside"
    entries = [d("dir")]
    entries += [file(f"dir/f{i}", b"%d" % i) for i in range(300)]
    entries += [sym("dir", target)]
    entries += [file(f"dir/g{i}", b"escape %d" % i) for i in range(50)]
    entries += [file("dir/sentinel", b"overwritten?")]
    before = outside_state(tmp_path)
    _seq, par = both_ways(tmp_path, [entries])
    assert outside_state(tmp_path) == before
    assert sorted(os.listdir(outside)) == ["sentinel"]
    assert (par / "dir").is_symlink()
    if absolute:
        assert (par / str(outside).lstrip("/") / "g49").read_bytes() == b"escape 49"
    assert not list(par.glob("dir/f*"))


def test_whiteout_then_symlink_to_outside(tmp_path: Path, outside: Path) -> None:
    lower = [d("dir")] + [file(f"dir/old{i}") for i in range(50)]
    upper = [file(f"dir/f{i}", b"%d" % i) for i in range(200)]
    upper += [E(".wh.dir"), sym("dir", str(outside))]
    upper += [file(f"dir/g{i}", b"escape") for i in range(100)]
    before = outside_state(tmp_path)
    _seq, par = both_ways(tmp_path, [lower, upper])
    assert outside_state(tmp_path) == before
    assert sorted(os.listdir(outside)) == ["sentinel"]
    # the whiteout hides lower layers only: this layer's dir/ stayed, so the symlink replaced it
    assert (par / "dir").is_symlink()


def test_symlink_pending_then_written_through(tmp_path: Path, outside: Path) -> None:
    # a symlink handed to a worker, then at once a path through it
    entries: list[E] = []
    for i in range(100):
        entries += [sym(f"l{i}", str(outside)), file(f"l{i}/f", b"through %d" % i)]
    _seq, par = both_ways(tmp_path, [entries])
    assert sorted(os.listdir(outside)) == ["sentinel"]
    assert (par / str(outside).lstrip("/") / "f").read_bytes() == b"through 99"


def test_duplicate_names_last_wins(tmp_path: Path) -> None:
    entries: list[E] = []
    for round_ in range(20):
        entries += [file(f"f{i}", b"round %d" % round_, mode=0o600 + round_) for i in range(20)]
    entries += [file("g"), d("g"), file("g/inside"), d("h"), file("h/x"), file("h")]
    _seq, par = both_ways(tmp_path, [entries])
    assert (par / "f7").read_bytes() == b"round 19"
    assert stat.S_IMODE((par / "f7").stat().st_mode) == 0o600 + 19
    assert (par / "g" / "inside").is_file()
    assert (par / "h").is_file()


def test_hardlink_to_a_file_dispatched_just_before(tmp_path: Path) -> None:
    entries: list[E] = []
    for i in range(100):
        entries += [file(f"f{i}", b"data %d" % i, mode=0o751), hard(f"h{i}", f"f{i}")]
    _seq, par = both_ways(tmp_path, [entries])
    for i in (0, 57, 99):
        assert (par / f"h{i}").read_bytes() == b"data %d" % i
        assert os.path.samefile(par / f"h{i}", par / f"f{i}")
        assert stat.S_IMODE((par / f"h{i}").stat().st_mode) == 0o751


def test_file_used_as_directory_while_pending(tmp_path: Path) -> None:
    for workers in (1, WORKERS):
        root = tmp_path / f"w{workers}"
        root.mkdir()
        entries = [file(f"a{i}") for i in range(100)] + [file("f"), file("f/g")]
        with pytest.raises(FilesystemError, match="needs /f to be a directory"):
            extract_layer(root, build_tar(entries), on_warning=print, workers=workers)
    assert lamina_threads() == []


# -- worker failures ------------------------------------------------------------------


def test_worker_failure_is_the_same_filesystem_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def full_disk(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if str(path).endswith("/bad"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", full_disk)
    messages = []
    for workers in (1, WORKERS):
        root = tmp_path / f"w{workers}" / "root"
        root.mkdir(parents=True)
        entries = [file(f"d/a{i}") for i in range(200)] + [file("d/bad", b"never")]
        entries += [file(f"d/z{i}") for i in range(2000)]
        with pytest.raises(FilesystemError) as info:
            extract_layer(root, build_tar(entries), on_warning=print, workers=workers)
        assert "'d/bad'" in info.value.message
        assert "No space left" in info.value.message
        messages.append(info.value.message.replace(str(root), "ROOT"))
        assert lamina_threads() == []
    assert messages[0] == messages[1]


def test_worker_metadata_failure_names_the_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_utime = os.utime

    def failing(path: Any, *args: Any, **kw: Any) -> None:
        if str(path).endswith("/victim"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_utime(path, *args, **kw)

    monkeypatch.setattr(os, "utime", failing)
    entries = [file(f"a{i}") for i in range(50)] + [file("victim"), sym("s", "victim")]
    with pytest.raises(FilesystemError, match=r"set the mtime of .*victim.*'victim'"):
        extract_layer(tmp_path, build_tar(entries), on_warning=print, workers=WORKERS)
    assert lamina_threads() == []


# -- the pool -------------------------------------------------------------------------


def test_pool_keeps_pending_bytes_within_its_budget(tmp_path: Path) -> None:
    pool = _FilePool(2, budget=10)
    release = threading.Event()
    done: list[int] = []

    def job(n: int) -> None:
        release.wait(5)
        done.append(n)

    try:
        pool.submit(tmp_path / "a", 0, 4, lambda: job(1))
        pool.submit(tmp_path / "b", 1, 4, lambda: job(2))
        third = threading.Thread(target=pool.submit, args=(tmp_path / "c", 0, 4, lambda: job(3)))
        third.start()
        time.sleep(0.2)
        assert third.is_alive()  # 12 bytes would be pending: it waits
        assert tmp_path / "c" not in pool
        release.set()
        third.join(5)
        assert not third.is_alive()
        pool.wait()
        assert sorted(done) == [1, 2, 3]
    finally:
        release.set()
        pool.close()
    assert lamina_threads() == []


def test_pool_error_stops_dispatch(tmp_path: Path) -> None:
    pool = _FilePool(2, budget=1 << 20)

    def boom() -> None:
        raise FilesystemError("cannot write /x (layer entry 'x'): boom")

    ran: list[int] = []
    try:
        pool.submit(tmp_path / "x", 0, 1, boom)
        with pytest.raises(FilesystemError, match="boom"):
            pool.wait()
        with pytest.raises(FilesystemError, match="boom"):
            pool.submit(tmp_path / "y", 0, 1, lambda: ran.append(1))
        assert ran == []
    finally:
        pool.close()
    assert lamina_threads() == []
