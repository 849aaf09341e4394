"""A canary tree outside the build root, and a snapshot that shows any change to it.

Hostile-input tests make a canary with :func:`make_canary` under a path the test
owns (``tmp_path``), point the hostile layer, context or Dockerfile at it, and
assert ``snapshot(canary) == before`` afterwards (:func:`assert_unchanged` says
which paths changed and how).

A snapshot records, for the top and every path below it (symlinks not
followed): file type, mode, uid, gid, size, mtime_ns, the sha256 of a regular
file's content, a symlink's target, a device's numbers; a path that appears or
disappears shows as well.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "Snapshot", "assert_unchanged", "make_canary", "snapshot"]

#: a fixed, old mtime: a write that touches a canary moves it
CANARY_MTIME_NS = 1_500_000_000_123_456_789


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    digest: str | None = None
    target: str | None = None
    rdev: int | None = None


Snapshot = dict[str, Entry]


def make_canary(parent: Path, name: str = "canary") -> Path:
    """A small tree at ``parent/name``: directories (one named ``b``, one ``etc``),
    files (one setuid-less executable, one read-only), a symlink; every mtime old."""
    top = parent / name
    (top / "b" / "deeper").mkdir(parents=True)
    (top / "etc").mkdir()
    (top / "b" / "file").write_text("canary b\n")
    (top / "b" / "deeper" / "x").write_bytes(b"\0\1\2canary")
    (top / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (top / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (top / "run.sh").write_text("#!/bin/sh\necho canary\n")
    (top / "readonly").write_text("read only\n")
    (top / "link").symlink_to("b/file")
    modes = {
        top: 0o755,
        top / "b": 0o750,
        top / "b" / "deeper": 0o700,
        top / "etc": 0o755,
        top / "b" / "file": 0o640,
        top / "b" / "deeper" / "x": 0o600,
        top / "etc" / "passwd": 0o644,
        top / "etc" / "hosts": 0o644,
        top / "run.sh": 0o755,
        top / "readonly": 0o444,
    }
    for path, mode in modes.items():
        path.chmod(mode)
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        for n in (*filenames, *dirnames):
            os.utime(Path(dirpath, n), ns=(CANARY_MTIME_NS, CANARY_MTIME_NS), follow_symlinks=False)
    os.utime(top, ns=(CANARY_MTIME_NS, CANARY_MTIME_NS))
    return top


def _entry(path: Path) -> Entry:
    st = os.lstat(path)
    fmt = stat.S_IFMT(st.st_mode)
    digest = target = rdev = None
    if fmt == stat.S_IFREG:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
    elif fmt == stat.S_IFLNK:
        target = os.readlink(path)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        rdev = st.st_rdev
    kinds = {
        stat.S_IFREG: "file",
        stat.S_IFDIR: "dir",
        stat.S_IFLNK: "symlink",
        stat.S_IFCHR: "chr",
        stat.S_IFBLK: "blk",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
    }
    return Entry(
        kind=kinds.get(fmt, "other"),
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if fmt != stat.S_IFDIR else 0,
        mtime_ns=st.st_mtime_ns,
        digest=digest,
        target=target,
        rdev=rdev,
    )


def snapshot(top: Path) -> Snapshot:
    """Every path at and below ``top`` (relative names, ``.`` for ``top``), not following
    symlinks. A missing ``top`` gives an empty snapshot."""
    if not os.path.lexists(top):
        return {}
    out: Snapshot = {".": _entry(top)}
    stack = [top]
    while stack:
        d = stack.pop()
        if out[d.relative_to(top).as_posix() if d != top else "."].kind != "dir":
            continue
        for child in sorted(d.iterdir()):
            rel = child.relative_to(top).as_posix()
            out[rel] = _entry(child)
            if out[rel].kind == "dir":
                stack.append(child)
    return out


def assert_unchanged(before: Snapshot, top: Path) -> None:
    """Fail naming every path whose record differs from ``before`` (or (dis)appeared)."""
    after = snapshot(top)
    problems = []
    for rel in sorted(before.keys() | after.keys()):
        old, new = before.get(rel), after.get(rel)
        if old != new:
            problems.append(f"{rel}: {old} -> {new}")
    assert not problems, f"the canary {top} changed:\n" + "\n".join(problems)
