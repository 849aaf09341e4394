"""The stat-index snapshotter used when no overlay is available (``none``/``chroot``).

A scan records, for every path, ``lstat`` facts packed in 48 bytes; comparing
two scans finds what a step changed without reading file contents. Content is
hashed only for "racy" files, whose ctime is so close to the scan that a later
write in the same timestamp tick could leave every stat field unchanged (the
problem git calls "racy clean").
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Literal

from lamina.errors import FilesystemError
from lamina.fs._changes import Change, ChangeKind, normalise_changes
from lamina.fs._ignore import IgnoreList

__all__ = ["SnapshotMode", "StatIndex", "diff"]

SnapshotMode = Literal["full", "redo", "time"]

# mode, uid, gid, size, mtime_ns, ctime_ns, ino
_REC = struct.Struct("<IIIQqqQ")
_MODE, _UID, _GID, _SIZE, _MTIME, _CTIME, _INO = range(7)
#: files whose ctime is within this window before the scan start get a content hash
RACY_WINDOW_NS = 100_000_000
_CHUNK = 1 << 20


def record_of(st: os.stat_result) -> bytes:
    """The packed index record of an ``lstat`` result."""
    return _REC.pack(
        st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino
    )


def _hash_file(host: Path) -> bytes:
    h = hashlib.sha256()
    fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.digest()


class StatIndex:
    """``lstat`` facts of every path under a root (ignored paths left out).

    Keys are in-image paths relative to the root, without a leading ``/``
    (``etc/passwd``). About 150 bytes per path (a 100,000-file rootfs needs
    some 15-25 MB).
    """

    __slots__ = ("_entries", "_hashes", "_links", "root", "scan_started_ns")

    def __init__(
        self,
        root: Path,
        entries: dict[str, bytes],
        links: dict[str, str],
        hashes: dict[str, bytes],
        scan_started_ns: int,
    ) -> None:
        self.root = root
        self._entries = entries
        self._links = links
        self._hashes = hashes
        self.scan_started_ns = scan_started_ns

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path.strip("/") in self._entries

    def paths(self) -> Iterator[str]:
        """The indexed paths (relative, unsorted)."""
        return iter(self._entries)

    def record(self, path: str) -> tuple[int, int, int, int, int, int, int] | None:
        """``(mode, uid, gid, size, mtime_ns, ctime_ns, ino)`` of ``path``, if indexed."""
        raw = self._entries.get(path.strip("/"))
        if raw is None:
            return None
        rec: tuple[int, int, int, int, int, int, int] = _REC.unpack(raw)
        return rec

    @classmethod
    def scan(cls, root: Path, ignore: IgnoreList | None = None) -> StatIndex:
        """Walk ``root`` (not following symlinks) and record every path."""
        started = time.time_ns()
        entries: dict[str, bytes] = {}
        links: dict[str, str] = {}
        pack = record_of
        stack: list[tuple[str, str]] = [(str(root), "")]
        try:
            while stack:
                dir_host, dir_rel = stack.pop()
                with os.scandir(dir_host) as it:
                    for entry in it:
                        rel = dir_rel + entry.name
                        if ignore and ignore.matches(rel):
                            continue
                        st = entry.stat(follow_symlinks=False)
                        mode = st.st_mode
                        entries[rel] = pack(st)
                        if stat.S_ISDIR(mode):
                            stack.append((entry.path, rel + "/"))
                        elif stat.S_ISLNK(mode):
                            links[rel] = os.readlink(entry.path)
        except OSError as exc:
            raise FilesystemError(
                f"cannot scan the build root {root}: {exc.strerror}"
                + (f" ({exc.filename})" if exc.filename else ""),
                hint="check the permissions of the build directory",
            ) from exc
        index = cls(root, entries, links, {}, started)
        index._hash_racy()
        return index

    def _hash_racy(self) -> None:
        limit = self.scan_started_ns - RACY_WINDOW_NS
        for rel, raw in self._entries.items():
            rec = _REC.unpack(raw)
            if stat.S_ISREG(rec[_MODE]) and rec[_CTIME] >= limit:
                try:
                    self._hashes[rel] = _hash_file(self.root / rel)
                except OSError:
                    continue  # gone or unreadable: its stat will differ next time

    def content_hash(self, path: str) -> bytes | None:
        """The content hash recorded for a racy file, if any."""
        return self._hashes.get(path.strip("/"))


def _changed(old: bytes, new: bytes, mode: SnapshotMode) -> bool:
    if old == new:
        return False
    o = _REC.unpack(old)
    n = _REC.unpack(new)
    if mode == "time":
        return o[_MTIME] != n[_MTIME] or stat.S_IFMT(o[_MODE]) != stat.S_IFMT(n[_MODE])
    if mode == "redo":
        return (o[_MODE], o[_UID], o[_GID], o[_SIZE], o[_MTIME]) != (
            n[_MODE],
            n[_UID],
            n[_GID],
            n[_SIZE],
            n[_MTIME],
        )
    if stat.S_ISDIR(o[_MODE]) and stat.S_ISDIR(n[_MODE]):
        # a directory's ctime also moves when a mount point, a placeholder or an entry set
        # aside for a step is created and removed again: what the layer records of a
        # directory is its mode, owner and mtime (kaniko's hasher ignores ctime too)
        return o[:_CTIME] + o[_CTIME + 1 :] != n[:_CTIME] + n[_CTIME + 1 :]
    return True  # full: any difference, ctime and inode included


def entry_changed(  # noqa: PLR0917 - the two states of one path
    prev: bytes | None,
    prev_link: str | None,
    prev_hash: bytes | None,
    rec: bytes,
    link: str | None,
    root: Path,
    rel: str,
    mode: SnapshotMode,
    new_hash: bytes | None = None,
) -> bool:
    """Whether ``rel`` changed from ``prev`` to ``rec`` (records, see :func:`record_of`).

    ``prev`` None: the path is new. ``prev_link``/``link`` are the symlink
    targets. A racy file (``prev_hash``, its content hash then) whose stat is
    unchanged is compared by content: ``new_hash``, or the file under ``root``
    read now.
    """
    if prev is None or _changed(prev, rec, mode) or prev_link != link:
        return True
    if mode != "full" or prev_hash is None:
        return False
    if new_hash is None:
        host = root / rel
        try:
            new_hash = _hash_file(host)
        except OSError as exc:
            raise FilesystemError(
                f"cannot read {host} to compare it: {exc.strerror}",
                hint="something else is changing the build root during the snapshot",
            ) from exc
    return new_hash != prev_hash


def diff(old: StatIndex, new: StatIndex, *, mode: SnapshotMode = "full") -> list[Change]:
    """The changes from the scan ``old`` to the scan ``new`` of the same root.

    ``full`` (the default) reports a path whose mode, owner, size, mtime,
    ctime (not for directories), inode or symlink target changed, and for racy files (see the module
    docstring) whose content hash changed. ``redo`` compares mode, owner, size
    and mtime (kaniko's ``RedoHasher``), ``time`` only the mtime (and the file
    type), so they can miss changes, as in kaniko. Paths in ``old`` but not in
    ``new`` are deleted (only the topmost of a deleted subtree is reported).
    """
    changes: list[Change] = []
    old_entries, old_links, old_hashes = old._entries, old._links, old._hashes
    new_links = new._links
    for rel, rec in new._entries.items():
        prev = old_entries.get(rel)
        prev_hash = old_hashes.get(rel)
        link = new_links.get(rel)
        prev_link = old_links.get(rel)
        if prev == rec and prev_hash is None and prev_link == link:
            continue  # the common case, decided without a call
        if entry_changed(
            prev, prev_link, prev_hash, rec, link, new.root, rel, mode, new._hashes.get(rel)
        ):
            changes.append(added(rel))
    changes.extend(deleted(rel) for rel in old_entries if rel not in new._entries)
    return sorted_changes(changes)


def added(rel: str) -> Change:
    """``Change.add`` of an index key (a relative path made of directory entry names)."""
    return Change(kind=ChangeKind.ADD, path=PurePosixPath("/" + rel))


def deleted(rel: str) -> Change:
    """``Change.delete`` of an index key."""
    return Change(kind=ChangeKind.DELETE, path=PurePosixPath("/" + rel))


def sorted_changes(changes: list[Change]) -> list[Change]:
    """The changes normalised and in path order, as :func:`diff` returns them."""
    result = normalise_changes(changes)
    result.sort(key=lambda ch: ch.path.parts)
    return result
