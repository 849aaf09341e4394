"""TreeWatch: inotify-driven snapshots give what two full scans give (lamina.fs._watch)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.fs import Change, IgnoreList, StatIndex, _statindex, _watch, diff
from lamina.fs._watch import TreeWatch

IGNORE = IgnoreList.of(["/ign"], prefixes=["/tmp/skip"])


def same_as_scan(watch: TreeWatch) -> None:
    """The watch's index is what a full scan finds now."""
    scan = StatIndex.scan(watch.root, watch.ignore)
    assert watch.index._entries == scan._entries
    assert watch.index._links == scan._links


def step(
    watch: TreeWatch, mutate: Callable[[], object], *, ignore: IgnoreList | None = None
) -> list[Change]:
    """mark, mutate, changes; asserts they equal the diff of two full scans."""
    watch.mark()
    same_as_scan(watch)
    before = StatIndex.scan(watch.root, watch.ignore)
    mutate()
    got = watch.changes(ignore=ignore)
    after = StatIndex.scan(watch.root, watch.ignore)
    want = diff(before, after)
    if ignore is not None:
        want = [c for c in want if not ignore.matches(c.path)]
    assert got == want
    same_as_scan(watch)
    return got


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "a").write_text("one")
    (r / "etc" / "b").write_text("two")
    (r / "usr" / "lib" / "x").mkdir(parents=True)
    (r / "usr" / "lib" / "x" / "f").write_text("f")
    (r / "ign").mkdir()
    (r / "ign" / "kept").write_text("k")
    os.symlink("etc/a", r / "link")
    old = time.time() - 100
    for dirpath, dirnames, filenames in os.walk(r):
        for n in dirnames + filenames:
            os.utime(Path(dirpath, n), (old, old), follow_symlinks=False)
    return r


@pytest.fixture
def watch(root: Path) -> Iterator[TreeWatch]:
    with TreeWatch(root, IGNORE) as w:
        yield w


def test_one_write_restats_one_directory(watch: TreeWatch, root: Path) -> None:
    watch.mark()
    assert watch.watching
    calls: list[str] = []
    real = watch._restat

    def counted(rel: str) -> None:
        calls.append(rel)
        real(rel)

    watch._restat = counted  # type: ignore[method-assign]
    (root / "usr" / "lib" / "x" / "f").write_text("F!")
    assert watch.changes() == [Change.add("usr/lib/x/f")]
    # the name, then its directory and the directory's ancestors; nothing else
    assert sorted(calls) == ["usr", "usr/lib", "usr/lib/x", "usr/lib/x/f"]


def test_creations_deletions_renames(watch: TreeWatch, root: Path) -> None:
    def mutate() -> None:
        (root / "new").mkdir()
        (root / "new" / "deep").mkdir()
        (root / "new" / "deep" / "n").write_text("n")
        shutil.rmtree(root / "usr" / "lib")
        os.rename(root / "etc", root / "etc2")
        os.remove(root / "link")
        os.symlink("etc2/b", root / "link")

    got = step(watch, mutate)
    assert Change.delete("usr/lib") in got
    assert Change.delete("etc") in got
    assert Change.add("etc2/a") in got
    assert Change.add("new/deep/n") in got


def test_a_directory_moved_then_written_in(watch: TreeWatch, root: Path) -> None:
    def mutate() -> None:
        os.rename(root / "usr" / "lib" / "x", root / "etc" / "y")
        (root / "etc" / "y" / "g").write_text("g")
        os.rename(root / "etc" / "y", root / "usr" / "z")
        (root / "usr" / "z" / "h").write_text("h")

    step(watch, mutate)
    step(watch, lambda: (root / "usr" / "z" / "f").write_text("again"))


def test_a_directory_replaced_at_the_same_path(watch: TreeWatch, root: Path) -> None:
    def mutate() -> None:
        shutil.rmtree(root / "usr" / "lib" / "x")
        (root / "usr" / "lib" / "x").mkdir()  # ext4 may give it the same inode number
        (root / "usr" / "lib" / "x" / "other").write_text("o")

    step(watch, mutate)
    step(watch, lambda: (root / "usr" / "lib" / "x" / "other").write_text("watched"))


def test_a_file_replaced_by_a_directory_and_back(watch: TreeWatch, root: Path) -> None:
    def to_dir() -> None:
        os.remove(root / "etc" / "a")
        (root / "etc" / "a").mkdir()
        (root / "etc" / "a" / "in").write_text("i")

    step(watch, to_dir)

    def to_file() -> None:
        shutil.rmtree(root / "etc" / "a")
        (root / "etc" / "a").write_text("file again")

    step(watch, to_file)


def test_a_write_through_one_name_of_a_hard_link_shows_every_name(
    watch: TreeWatch, root: Path
) -> None:
    step(watch, lambda: os.link(root / "etc" / "a", root / "usr" / "lib" / "x" / "a-link"))
    got = step(watch, lambda: (root / "usr" / "lib" / "x" / "a-link").write_text("via link"))
    assert Change.add("etc/a") in got
    assert Change.add("usr/lib/x/a-link") in got
    got = step(watch, lambda: os.chmod(root / "etc" / "a", 0o600))
    assert Change.add("usr/lib/x/a-link") in got
    got = step(watch, lambda: os.remove(root / "usr" / "lib" / "x" / "a-link"))
    assert Change.add("etc/a") in got  # its link count (ctime) changed


def test_a_link_from_an_ignored_path_made_before_the_index(root: Path) -> None:
    os.link(root / "etc" / "b", root / "ign" / "b-outside")
    with TreeWatch(root, IGNORE) as w:
        got = step(w, lambda: (root / "ign" / "b-outside").write_text("TWO"))
    assert got == [Change.add("etc/b")]


def test_racy_file_rewritten_with_the_same_stat(watch: TreeWatch, root: Path) -> None:
    time.sleep(0.15)  # the fixture's files out of the racy window
    f = root / "etc" / "a"
    f.write_text("AAA")
    st_before = f.stat()
    watch.mark()
    assert watch.index.content_hash("etc/a") is not None  # within the racy window
    assert watch.index.content_hash("etc/b") is None
    f.write_text("BBB")
    os.utime(f, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    assert Change.add("etc/a") in watch.changes()


def test_same_content_and_stat_is_no_change(watch: TreeWatch, root: Path) -> None:
    f = root / "etc" / "b"
    st_before = f.stat()

    def touch_back() -> None:
        f.write_text("two")
        os.utime(f, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))

    watch.mark()
    touch_back()
    # ctime moved: a change, as the full scan says
    assert watch.changes() == [Change.add("etc/b")]


def test_the_step_ignore_list_leaves_mount_targets_out(watch: TreeWatch, root: Path) -> None:
    def mutate() -> None:
        (root / "usr" / "cache").mkdir()
        (root / "usr" / "cache" / "c").write_text("c")
        (root / "etc" / "a").write_text("real")

    got = step(watch, mutate, ignore=IGNORE.with_paths("/usr/cache"))
    assert got == [Change.add("usr"), Change.add("etc/a")] or got == [
        Change.add("etc/a"),
        Change.add("usr"),
    ]


def test_ignored_paths_stay_out(watch: TreeWatch, root: Path) -> None:
    def mutate() -> None:
        (root / "ign" / "new").write_text("x")
        (root / "tmp" / "skipme").mkdir(parents=True)
        (root / "tmp" / "skipme" / "f").write_text("x")

    assert step(watch, mutate) == [Change.add("tmp")]
    assert not any(p.startswith(("ign/", "tmp/skip")) for p in watch.index.paths())


def test_a_queue_overflow_falls_back_to_a_full_scan(watch: TreeWatch, root: Path) -> None:
    a, b = root / "etc" / "a", root / "etc" / "b"

    def flood() -> None:  # alternating events are not merged: more than max_queued_events
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        for i in range(limit // 2 + 10):
            os.utime(a, (i, i))
            os.utime(b, (i, i))
        (root / "usr" / "new").write_text("n")

    scans: list[int] = []
    real = watch._rebuild

    def counted() -> None:
        scans.append(1)
        real()

    watch._rebuild = counted  # type: ignore[method-assign]
    step(watch, flood)
    assert scans  # the overflow was seen and handled by a full scan
    assert watch.watching
    step(watch, lambda: (root / "usr" / "new").write_text("watched again"))


def test_the_watch_limit_falls_back_to_full_scans(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_add = _watch._Notify.add
    count = [0]

    def limited(self: _watch._Notify, host: str) -> int:
        count[0] += 1
        if count[0] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), host)
        return real_add(self, host)

    monkeypatch.setattr(_watch._Notify, "add", limited)
    notes: list[str] = []
    with TreeWatch(root, IGNORE, debug=notes.append) as w:
        step(w, lambda: (root / "etc" / "a").write_text("x"))
        assert not w.watching
        assert any("max_user_watches" in n for n in notes)
        step(w, lambda: (root / "usr" / "lib" / "x" / "f").write_text("y"))


def test_no_inotify_falls_back_to_full_scans(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: _watch._Notify) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_watch._Notify, "__init__", refused)
    notes: list[str] = []
    with TreeWatch(root, IGNORE, debug=notes.append) as w:
        step(w, lambda: (root / "etc" / "a").write_text("x"))
        assert not w.watching
        assert notes


# ---------------------------------------------------------------- property test

OPS = (
    "file",
    "mkdir",
    "delete",
    "rename",
    "chmod",
    "chown",
    "utime",
    "hardlink",
    "symlink",
    "same-size-write",
    "append",
    "replace-dir",
    "via-outside-link",
)


class Tree:
    """Applies operations, picking paths by number from what exists now.

    A hard link made since the last snapshot is not deleted again before the
    next one (nor its directory): a link that comes and goes between two
    snapshots is the one case the watch does not see (see lamina.fs._watch).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.fresh_links: set[Path] = set()

    def snapshot_taken(self) -> None:
        self.fresh_links.clear()

    def _keeps_a_fresh_link(self, path: Path) -> bool:
        return any(link == path or path in link.parents for link in self.fresh_links)

    def _all(self) -> tuple[list[Path], list[Path]]:
        dirs, files = [self.root], list[Path]()
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath)
            if base == self.root:
                dirnames.remove("ign")  # ignored: only the link made before the index is used
            dirs.extend(base / d for d in sorted(dirnames) if not (base / d).is_symlink())
            files.extend(base / f for f in sorted(filenames))
            files.extend(base / d for d in sorted(dirnames) if (base / d).is_symlink())
        return dirs, files

    def name(self) -> str:
        self.n += 1
        return f"n{self.n}"

    def apply(self, op: str, i: int, j: int) -> None:
        dirs, files = self._all()
        d = dirs[i % len(dirs)]
        f = files[j % len(files)] if files else None
        others = dirs[1:] + files
        anything = others[j % len(others)] if others else None
        if op in ("delete", "rename") and anything and self._keeps_a_fresh_link(anything):
            return
        if op == "rename" and any(link.parent == d for link in self.fresh_links):
            return  # the rename could replace the link
        try:
            if op == "file":
                (d / self.name()).write_bytes(b"x" * (j % 7))
            elif op == "mkdir":
                sub = d / self.name()
                sub.mkdir()
                (sub / "inner").write_text("i")
            elif op == "delete" and anything is not None:
                if anything.is_dir() and not anything.is_symlink():
                    shutil.rmtree(anything)
                else:
                    anything.unlink()
            elif op == "rename" and anything is not None:
                target = d / (self.name() if j % 3 else (f.name if f else self.name()))
                if anything.is_dir() and str(target).startswith(str(anything) + "/"):
                    return
                os.rename(anything, target)
            elif op == "chmod" and anything is not None and not anything.is_symlink():
                os.chmod(anything, 0o700 if j % 2 else 0o755, follow_symlinks=False)
            elif op == "chown" and anything is not None and os.geteuid() == 0:
                os.chown(anything, 1000 + j % 3, 1000 + i % 3, follow_symlinks=False)
            elif op == "utime" and anything is not None:
                os.utime(anything, (1_000_000 + j, 1_000_000 + i), follow_symlinks=False)
            elif op == "hardlink" and f is not None and not f.is_symlink():
                os.link(f, d / self.name())
                self.fresh_links.add(d / f"n{self.n}")
            elif op == "symlink":
                os.symlink(f"target-{j % 5}", d / self.name())
            elif op == "same-size-write" and f is not None and not f.is_symlink():
                st_f = f.stat()
                data = f.read_bytes()
                f.write_bytes(bytes((b + 1) % 256 for b in data))
                os.utime(f, ns=(st_f.st_atime_ns, st_f.st_mtime_ns))
            elif op == "append" and f is not None and not f.is_symlink():
                with f.open("ab") as fh:
                    fh.write(b"+")
            elif op == "replace-dir" and len(dirs) > 1:
                victim = dirs[1 + i % (len(dirs) - 1)]
                if self._keeps_a_fresh_link(victim):
                    return
                shutil.rmtree(victim)
                victim.mkdir()
                (victim / "again").write_text("a")
            elif op == "via-outside-link":
                outside = self.root / "ign" / "out"
                if outside.exists():
                    with outside.open("ab") as fh:
                        fh.write(b"!")
        except OSError:
            pass  # an operation the tree does not allow now (e.g. a rename over a non-empty dir)


ops = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 999), st.integers(0, 999)))


@pytest.mark.parametrize("window", [0, 10**12], ids=["no-racy-window", "all-racy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    setup=st.lists(st.tuples(st.just("file"), st.integers(0, 9), st.integers(0, 9)), max_size=6),
    steps=st.lists(st.tuples(ops, ops), min_size=1, max_size=3),
)
def test_watched_snapshots_equal_full_scans(
    window: int,
    setup: list[tuple[str, int, int]],
    steps: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]],
) -> None:
    saved = _statindex.RACY_WINDOW_NS
    _statindex.RACY_WINDOW_NS = window
    base = Path(tempfile.mkdtemp(prefix="lamina-watch-"))
    try:
        root = base / "root"
        for sub in ("a/b", "c", "ign"):
            (root / sub).mkdir(parents=True)
        (root / "a" / "f").write_text("f")
        (root / "c" / "g").write_text("gg")
        os.link(root / "c" / "g", root / "ign" / "out")  # a name the index does not see
        tree = Tree(root)
        for op in [*setup, ("mkdir", 1, 2), ("hardlink", 0, 1)]:
            tree.apply(*op)
        with TreeWatch(root, IgnoreList.of(["/ign"])) as w:
            tree.snapshot_taken()
            for between, during in steps:
                for op in between:  # COPY and the like, before the step's mark
                    tree.apply(*op)

                def run(during: list[tuple[str, int, int]] = during) -> None:
                    tree.snapshot_taken()
                    for op in during:
                        tree.apply(*op)

                step(w, run)
                tree.snapshot_taken()
    finally:
        _statindex.RACY_WINDOW_NS = saved
        shutil.rmtree(base)


def test_a_root_that_cannot_be_watched_falls_back_to_full_scans(root: Path) -> None:
    link = root.parent / "root-link"  # a symlink: watches never follow one
    link.symlink_to(root)
    notes: list[str] = []
    with TreeWatch(link, IGNORE, debug=notes.append) as w:
        step(w, lambda: (root / "etc" / "a").write_text("x"))
        assert not w.watching
        assert notes
