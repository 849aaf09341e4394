from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lamina.fs import Change, ChangeKind, IgnoreList, StatIndex, diff


def tree(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "a").write_text("one")
    (root / "etc" / "b").write_text("two")
    (root / "var" / "lib" / "x").mkdir(parents=True)
    (root / "var" / "lib" / "x" / "f").write_text("f")
    (root / "proc").mkdir()
    os.symlink("etc/a", root / "link")
    old = time.time() - 100
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(Path(dirpath, n), (old, old), follow_symlinks=False)


def summary(changes: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(c.kind.value, str(c.path)) for c in changes]


def test_adds_modifications_deletions(tmp_path: Path) -> None:
    tree(tmp_path)
    time.sleep(0.15)  # out of the racy window
    old = StatIndex.scan(tmp_path)
    assert len(old) == 9
    (tmp_path / "etc" / "a").write_text("ONE")
    (tmp_path / "new").write_text("n")
    import shutil

    shutil.rmtree(tmp_path / "var" / "lib")
    os.remove(tmp_path / "link")
    os.symlink("etc/b", tmp_path / "link")
    new = StatIndex.scan(tmp_path)
    got = summary(diff(old, new))
    assert ("add", "/etc/a") in got
    assert ("add", "/etc") not in got  # its content changed, not its entries
    assert ("add", "/new") in got
    assert ("add", "/link") in got
    assert ("delete", "/var/lib") in got
    assert ("delete", "/var/lib/x") not in got  # only the topmost deletion
    assert ("add", "/etc/b") not in got


def test_no_change_no_diff(tmp_path: Path) -> None:
    tree(tmp_path)
    a = StatIndex.scan(tmp_path)
    b = StatIndex.scan(tmp_path)
    assert diff(a, b) == []


def test_metadata_only_changes_per_mode(tmp_path: Path) -> None:
    tree(tmp_path)
    time.sleep(0.15)
    old = StatIndex.scan(tmp_path)
    os.chmod(tmp_path / "etc" / "a", 0o600)
    new = StatIndex.scan(tmp_path)
    assert summary(diff(old, new, mode="full")) == [("add", "/etc/a")]
    assert summary(diff(old, new, mode="redo")) == [("add", "/etc/a")]
    assert diff(old, new, mode="time") == []  # mtime only: missed, as in kaniko


def test_same_stat_different_content_in_racy_window(tmp_path: Path) -> None:
    tree(tmp_path)
    time.sleep(0.15)
    f = tmp_path / "etc" / "a"
    f.write_text("AAA")
    st = f.stat()
    old = StatIndex.scan(tmp_path)  # f is racy: its content hash is kept
    assert old.content_hash("etc/a") is not None
    assert old.content_hash("etc/b") is None
    f.write_text("BBB")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = StatIndex.scan(tmp_path)
    # ctime may or may not have moved at this timestamp granularity; either way it is seen
    assert ("add", "/etc/a") in summary(diff(old, new))


def test_redo_ignores_ctime_only(tmp_path: Path) -> None:
    tree(tmp_path)
    time.sleep(0.15)
    old = StatIndex.scan(tmp_path)
    os.utime(tmp_path / "etc" / "b", (1, (tmp_path / "etc" / "b").stat().st_mtime))  # ctime bump
    new = StatIndex.scan(tmp_path)
    assert diff(old, new, mode="redo") == []
    assert summary(diff(old, new, mode="full")) == [("add", "/etc/b")]


def test_ignore_list_applies(tmp_path: Path) -> None:
    tree(tmp_path)
    ign = IgnoreList.of(["/proc", "/var/lib"])
    old = StatIndex.scan(tmp_path, ign)
    assert "var/lib/x/f" not in old
    assert "proc" not in old
    assert "var" in old
    (tmp_path / "proc" / "p").write_text("x")
    new = StatIndex.scan(tmp_path, ign)
    assert all(c.kind is not ChangeKind.DELETE for c in diff(old, new))
    assert all(not str(c.path).startswith("/proc") for c in diff(old, new))


@pytest.mark.slow
def test_index_is_compact(tmp_path: Path) -> None:
    import tracemalloc

    for i in range(100):
        d = tmp_path / f"d{i}"
        d.mkdir()
        for j in range(100):
            (d / f"file-number-{j}").touch()
    tracemalloc.start(4)
    try:
        idx = StatIndex.scan(tmp_path)
        # only what the index's own code allocated and still holds: other threads of the
        # test process (pools left by earlier tests) must not count
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*/lamina/fs/_statindex.py", all_frames=True)]
        )
    finally:
        tracemalloc.stop()
    size = sum(stat.size for stat in snapshot.statistics("filename"))
    assert len(idx) == 10_100
    assert size / len(idx) < 300  # bytes per path


def test_a_directory_whose_only_change_is_its_ctime_is_unchanged(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    f = tmp_path / "file"
    f.write_text("x")
    before = StatIndex.scan(tmp_path)
    st = d.stat()
    (d / "placeholder").write_text("")  # a mount-point placeholder, created and removed
    (d / "placeholder").unlink()
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moved
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))  # a file's ctime counts
    after = StatIndex.scan(tmp_path)
    assert d.stat().st_ctime_ns != st.st_ctime_ns
    assert diff(before, after) == [Change.add("file")]
    os.chmod(d, 0o700)  # a real change of the directory still shows
    assert Change.add("etc") in diff(before, StatIndex.scan(tmp_path))
