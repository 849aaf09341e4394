"""Snapshots that cost what a step changed: a stat index kept current by inotify.

:meth:`StatIndex.scan` costs the size of the root on every snapshot. A
:class:`TreeWatch` scans the root once, placing an inotify watch on every
directory, and from then on re-stats only what the kernel reported: the names
in the events, the directories they are in (their mtime) with their ancestors,
whole subtrees only where a directory appeared, vanished or moved, and every
name of a multi-link file one of whose names was touched (a write through one
name is reported only in that name's directory). The result of
:meth:`TreeWatch.changes` is the one :func:`diff` gives for a full scan before
and after the step, racy files (see :mod:`lamina.fs._statindex`) included.

No mount rights are needed. Where inotify cannot follow — no inotify at all,
``max_user_watches`` reached, the event queue overflowed — the watch says so at
debug level and does full scans, as before.

A file with names outside the index (a hard link in an ignored path, such as
the kaniko directory: its link count is higher than the names indexed) is
re-statted on every snapshot, since a write through such a name shows in no
watched directory. What directory watches cannot show at all: a hard link to
an older file made under a name that is gone again by the next snapshot (or
made in an ignored path), and what is done through that name alone. The
file's inode changes (its ctime at least, which a full scan reports) without
an event naming any of its indexed names; the snapshot misses it.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lamina.errors import FilesystemError
from lamina.fs import _statindex
from lamina.fs._changes import Change
from lamina.fs._ignore import IgnoreList
from lamina.fs._statindex import (
    _REC,
    SnapshotMode,
    StatIndex,
    _hash_file,
    added,
    deleted,
    diff,
    entry_changed,
    record_of,
    sorted_changes,
)

__all__ = ["TreeWatch"]

# inotify(7) event bits
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000

_WATCH_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CLOSE_WRITE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
#: a directory entry appeared or vanished under this name: its whole subtree is re-read
_TREE_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
_SELF_GONE = IN_DELETE_SELF | IN_MOVE_SELF
#: reads of the event queue per snapshot (a RUN's daemon writing on must not stall it)
_MAX_READS = 256

#: struct inotify_event without its name: wd, mask, cookie, len
_EVENT = struct.Struct("iIII")
_READ_SIZE = 1 << 16

_MODE, _INO = 0, 6


def _parent(rel: str) -> str:
    return rel.rpartition("/")[0]


def _join(dir_rel: str, name: str) -> str:
    return f"{dir_rel}/{name}" if dir_rel else name


class _Inodes:
    """In-index names by inode number (non-directories): the names of a link group."""

    __slots__ = ("_many", "_one")

    def __init__(self) -> None:
        self._one: dict[int, str] = {}
        self._many: dict[int, set[str]] = {}

    def add(self, ino: int, rel: str) -> None:
        many = self._many.get(ino)
        if many is not None:
            many.add(rel)
            return
        one = self._one.get(ino)
        if one is None:
            self._one[ino] = rel
        elif one != rel:
            del self._one[ino]
            self._many[ino] = {one, rel}

    def remove(self, ino: int, rel: str) -> None:
        many = self._many.get(ino)
        if many is not None:
            many.discard(rel)
            if len(many) == 1:
                self._one[ino] = many.pop()
                del self._many[ino]
        elif self._one.get(ino) == rel:
            del self._one[ino]

    def names(self, ino: int) -> Iterable[str]:
        many = self._many.get(ino)
        if many is not None:
            return tuple(many)
        one = self._one.get(ino)
        return () if one is None else (one,)

    def count(self, ino: int) -> int:
        many = self._many.get(ino)
        return len(many) if many is not None else int(ino in self._one)


class _Notify:
    """An inotify instance: ``inotify_init1``, ``inotify_add_watch``, ``inotify_rm_watch``.

    Called through ctypes on the interpreter's own libc (``CDLL(None)``). Not
    the ``inotify_simple`` package: it finds libc with
    ``ctypes.util.find_library``, which runs ``ldconfig`` and ``gcc`` from
    ``PATH`` — in place, the user's rootfs.
    """

    def __init__(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._add_watch.restype = ctypes.c_int
        self._rm_watch = libc.inotify_rm_watch
        self._rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
        self._rm_watch.restype = ctypes.c_int
        self._get_errno = ctypes.get_errno
        fd: int = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self._fd = fd

    def add(self, host: str) -> int:
        wd: int = self._add_watch(self._fd, os.fsencode(host), _WATCH_MASK)
        if wd < 0:
            code = self._get_errno()
            raise OSError(code, os.strerror(code), host)
        return wd

    def remove(self, wd: int) -> None:
        self._rm_watch(self._fd, wd)  # EINVAL: already gone with its directory

    def read(self) -> list[tuple[int, int, str]]:
        """The queued events (wd, mask, name), none if the queue is empty."""
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return []
        events = []
        pos, end = 0, len(data)
        while pos + _EVENT.size <= end:
            wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = data[pos : pos + size].split(b"\0", 1)[0]
            pos += size
            events.append((wd, mask, os.fsdecode(name)))
        return events

    def close(self) -> None:
        os.close(self._fd)


class TreeWatch:
    """A :class:`StatIndex` of ``root`` kept current by inotify (see the module docs).

    :meth:`mark` before a step, :meth:`changes` after it; :meth:`close` when
    the root is done with (or use it as a context manager).
    """

    def __init__(
        self,
        root: Path,
        ignore: IgnoreList | None = None,
        *,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.ignore = ignore
        self._debug = debug or (lambda _msg: None)
        self._notify: _Notify | None = None
        self._wds: dict[int, str] = {}
        self._dir_wd: dict[str, int] = {}
        self._children: dict[str, set[str]] = {}
        self._inodes = _Inodes()
        #: link counts of multi-link files, by inode
        self._nlink: dict[int, int] = {}
        #: regular files whose ctime was recent when they were last statted
        self._recent: dict[str, int] = {}
        #: inodes of link groups touched in this refresh (their other names are re-statted)
        self._linked: set[int] = set()
        #: the records before this refresh of every path it touched
        self._prior: dict[str, tuple[bytes | None, str | None]] = {}
        self._now = 0
        self.index = StatIndex(root, {}, {}, {}, 0)
        self._started = False

    def __enter__(self) -> TreeWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def watching(self) -> bool:
        """Whether inotify follows the root (False: every snapshot is a full scan)."""
        return self._notify is not None

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        self._wds.clear()
        self._dir_wd.clear()

    # ------------------------------------------------------------------ snapshots

    def mark(self) -> None:
        """Bring the index up to date: what changed so far is not the next step's change."""
        started = time.time_ns()
        if not self._started:
            self._started = True
            self._start_notify()
            self._rebuild()
        elif self._notify is None:
            self.index = StatIndex.scan(self.root, self.ignore)
            return
        elif self._refresh() is None:
            self._rebuild()
        self._hash_racy(started)

    def changes(
        self, *, mode: SnapshotMode = "full", ignore: IgnoreList | None = None
    ) -> list[Change]:
        """What changed since :meth:`mark`, as :func:`diff` of two full scans reports it.

        ``ignore`` (a superset of the watch's own list, e.g. with the step's
        mount targets) leaves more paths out of the result.
        """
        if not self._started:
            raise RuntimeError("TreeWatch.changes before mark")
        old = self.index
        if self._notify is None:
            self.index = StatIndex.scan(self.root, self.ignore)
            result = diff(old, self.index, mode=mode)
        else:
            prior = self._refresh()
            if prior is None:
                self._rebuild()
                result = diff(old, self.index, mode=mode)
            else:
                result = self._compare(prior, old, mode)
        if ignore is not None:
            result = [ch for ch in result if not ignore.matches(ch.path)]
        return result

    def _compare(
        self, prior: dict[str, tuple[bytes | None, str | None]], old: StatIndex, mode: SnapshotMode
    ) -> list[Change]:
        entries, links, hashes = self.index._entries, self.index._links, old._hashes
        changes: list[Change] = []
        for rel, (prev, prev_link) in prior.items():
            rec = entries.get(rel)
            if rec is None:
                if prev is not None:
                    changes.append(deleted(rel))
            elif prev is None or entry_changed(
                prev, prev_link, hashes.get(rel), rec, links.get(rel), self.root, rel, mode
            ):
                changes.append(added(rel))
        return sorted_changes(changes)

    def _hash_racy(self, started: int) -> None:
        """Content hashes of the files whose ctime is within the racy window of ``started``."""
        limit = started - _statindex.RACY_WINDOW_NS
        hashes: dict[str, bytes] = {}
        for rel, ctime in list(self._recent.items()):
            if ctime < limit:
                del self._recent[rel]
                continue
            try:
                hashes[rel] = _hash_file(self.root / rel)
            except OSError:
                continue  # gone or unreadable: its stat will differ next time
        self.index._hashes = hashes
        self.index.scan_started_ns = started

    # ------------------------------------------------------------------ inotify

    def _start_notify(self) -> None:
        try:
            self._notify = _Notify()
        except (OSError, AttributeError) as exc:  # no inotify in this libc/kernel
            self._debug(f"no inotify ({exc}): every snapshot of {self.root} is a full scan")

    def _give_up(self, why: str) -> None:
        self._debug(f"{why}: every further snapshot of {self.root} is a full scan")
        self.close()

    def _watch(self, rel: str) -> None:
        notify = self._notify
        if notify is None:
            return
        try:
            wd = notify.add(str(self.root / rel) if rel else str(self.root))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR) and rel:
                return  # gone already: its parent's event says so
            if exc.errno == errno.ENOSPC:
                limit = "/proc/sys/fs/inotify/max_user_watches"
                self._give_up(f"inotify watch limit reached ({limit})")
            else:
                self._give_up(f"cannot watch {self.root / rel} ({exc.strerror})")
            return
        old = self._wds.get(wd)
        if old is not None and old != rel and self._dir_wd.get(old) == wd:
            del self._dir_wd[old]  # the directory moved: the old path's watch is this one
        self._wds[wd] = rel
        self._dir_wd[rel] = wd

    def _unwatch(self, rel: str) -> None:
        wd = self._dir_wd.pop(rel, None)
        if wd is not None and self._wds.get(wd) == rel:
            del self._wds[wd]
            if self._notify is not None:
                self._notify.remove(wd)

    def _events(self) -> tuple[set[str], set[str], set[str]] | None:
        """Trees to re-read, names to re-stat, directories touched; None on overflow."""
        assert self._notify is not None
        trees: set[str] = set()
        names: set[str] = set()
        dirs: set[str] = set()
        overflow = False
        for _ in range(_MAX_READS):
            events = self._notify.read()
            if not events:
                break
            for wd, mask, name in events:
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                if mask & IN_IGNORED:  # the watch is gone (its directory deleted)
                    gone = self._wds.pop(wd, None)
                    if gone is not None and self._dir_wd.get(gone) == wd:
                        del self._dir_wd[gone]
                        trees.add(gone)
                    continue
                where = self._wds.get(wd)
                if where is None:
                    continue
                dirs.add(where)
                if name:
                    rel = _join(where, name)
                    if mask & IN_ISDIR and mask & _TREE_EVENTS:
                        trees.add(rel)
                    else:
                        names.add(rel)
                elif mask & _SELF_GONE:
                    trees.add(where)
        if overflow:
            self._debug(f"inotify queue overflow on {self.root}: a full scan")
            return None
        return trees, names, dirs

    # ------------------------------------------------------------------ the index

    def _ignored(self, rel: str) -> bool:
        return self.ignore is not None and self.ignore.matches(rel)

    def _rebuild(self) -> None:
        """A full scan, watching every directory anew."""
        if self._wds:  # after an overflow: the old watches are dropped with the old fd
            self.close()
            self._start_notify()
        self._now = time.time_ns()
        self.index = StatIndex(self.root, {}, {}, {}, self._now)
        self._children = {"": set()}
        self._inodes = _Inodes()
        self._nlink = {}
        self._recent = {}
        self._prior = {}
        self._walk("")
        self._prior = {}
        self._linked.clear()

    def _refresh(self) -> dict[str, tuple[bytes | None, str | None]] | None:
        """Re-stat what the events name; the prior records of every path touched."""
        self._now = time.time_ns()
        self._linked.clear()
        found = self._events()
        if found is None:
            return None
        trees, names, dirs = found
        if "" in trees:  # the root itself went away or moved
            return None
        self._prior = {}
        prior = self._prior
        for rel in sorted(trees, key=lambda p: p.count("/")):
            if rel in prior:
                continue  # below a tree re-read already
            self._drop(rel)
            self._restat(rel)
        for rel in names:
            if rel not in prior:
                self._restat(rel)
        climbed: set[str] = set()
        for touched in dirs:  # their mtime; and their ancestors (an overlay's copy-up)
            rel = touched
            while rel and rel not in climbed:
                climbed.add(rel)
                if rel not in prior:
                    self._restat(rel)
                rel = _parent(rel)
        self._follow_links()
        self._prior = {}
        return prior

    def _follow_links(self) -> None:
        """Re-stat every name of the link groups touched (a write shows in one name's dir)."""
        linked = self._linked
        while linked:
            for name in self._inodes.names(linked.pop()):
                if name not in self._prior:
                    self._restat(name)  # puts the inode back: the next pass finds all seen
        # names outside the index (a link in an ignored path): no event shows their writes
        for ino, nlink in list(self._nlink.items()):
            if nlink > self._inodes.count(ino):
                for name in self._inodes.names(ino):
                    if name not in self._prior:
                        self._restat(name)
        linked.clear()

    def _remember(self, rel: str) -> None:
        if rel not in self._prior:
            self._prior[rel] = (self.index._entries.get(rel), self.index._links.get(rel))

    def _put(self, rel: str, st: os.stat_result, kids: set[str]) -> None:
        """Record ``rel`` as ``st`` (its subtree, if a directory, is the caller's)."""
        self._remember(rel)
        entries = self.index._entries
        old = entries.get(rel)
        if old is not None:
            self._forget_inode(rel, old)
        entries[rel] = record_of(st)
        kids.add(rel)
        mode = st.st_mode
        links = self.index._links
        if stat.S_ISLNK(mode):
            try:
                links[rel] = os.readlink(self.root / rel)
            except OSError as exc:
                raise self._error(rel, exc) from exc
        else:
            links.pop(rel, None)
        if stat.S_ISDIR(mode):
            return
        self._inodes.add(st.st_ino, rel)
        if st.st_nlink > 1:
            self._nlink[st.st_ino] = st.st_nlink
            self._linked.add(st.st_ino)
        else:
            self._nlink.pop(st.st_ino, None)
        if stat.S_ISREG(mode) and st.st_ctime_ns >= self._now - _statindex.RACY_WINDOW_NS:
            self._recent[rel] = st.st_ctime_ns
        else:
            self._recent.pop(rel, None)

    def _forget_inode(self, rel: str, raw: bytes) -> None:
        fields = _REC.unpack(raw)
        if not stat.S_ISDIR(fields[_MODE]):
            ino = fields[_INO]
            self._inodes.remove(ino, rel)
            if self._inodes.count(ino):
                self._linked.add(ino)  # its other names lost a link
            else:
                self._nlink.pop(ino, None)

    def _drop(self, rel: str) -> None:
        """Forget ``rel`` and everything below it."""
        entries = self.index._entries
        if rel not in entries:
            return
        parent = self._children.get(_parent(rel))
        if parent is not None:
            parent.discard(rel)
        stack = [rel]
        while stack:
            path = stack.pop()
            raw = entries.get(path)
            if raw is None:
                continue
            self._remember(path)
            del entries[path]
            self.index._links.pop(path, None)
            self._recent.pop(path, None)
            kids = self._children.pop(path, None)
            if kids is not None:
                stack.extend(kids)
                self._unwatch(path)
            else:
                self._forget_inode(path, raw)

    def _restat(self, rel: str) -> None:
        """Bring ``rel`` (and, if it is a new directory, its subtree) up to date."""
        if self._ignored(rel):
            return
        kids = self._children.get(_parent(rel))
        if kids is None:
            return  # its directory is not in the index (gone, or re-read whole)
        try:
            st = os.lstat(self.root / rel)
        except (FileNotFoundError, NotADirectoryError):
            self._remember(rel)
            self._drop(rel)
            return
        except OSError as exc:
            raise self._error(rel, exc) from exc
        old = self.index._entries.get(rel)
        is_dir = stat.S_ISDIR(st.st_mode)
        if old is not None:
            fields = _REC.unpack(old)
            if stat.S_ISDIR(fields[_MODE]):
                if is_dir and fields[_INO] == st.st_ino:
                    self._put(rel, st, kids)  # the same directory: its entries have watches
                    return
                self._drop(rel)
        self._put(rel, st, kids)
        if is_dir:
            self._walk(rel)

    def _walk(self, top: str) -> None:
        """Index and watch the subtree of the directory ``top`` (recorded already).

        Everything below ``top`` is new to the index (a directory is read whole
        only when it appeared or replaced what was there): recorded without the
        bookkeeping of :meth:`_put` for what it replaces.
        """
        ignore = self.ignore
        entries, links, prior = self.index._entries, self.index._links, self._prior
        children, inodes, nlinks = self._children, self._inodes, self._nlink
        recent, linked = self._recent, self._linked
        racy_from = self._now - _statindex.RACY_WINDOW_NS
        new: tuple[bytes | None, str | None] = (None, None)
        stack = [top]
        while stack:
            dir_rel = stack.pop()
            kids = children.setdefault(dir_rel, set())
            self._watch(dir_rel)  # before listing: nothing created meanwhile is missed
            prefix = dir_rel + "/" if dir_rel else ""
            try:
                it = os.scandir(self.root / dir_rel if dir_rel else self.root)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile: its parent's events say so
            except OSError as exc:
                raise self._error(dir_rel, exc) from exc
            with it:
                for entry in it:
                    rel = prefix + entry.name
                    if ignore is not None and ignore.matches(rel):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise self._error(rel, exc) from exc
                    if rel in entries:  # not new after all: the careful way
                        self._put(rel, st, kids)
                        if stat.S_ISDIR(st.st_mode):
                            self._drop_below(rel)
                            stack.append(rel)
                        continue
                    if rel not in prior:
                        prior[rel] = new
                    entries[rel] = record_of(st)
                    kids.add(rel)
                    mode = st.st_mode
                    if stat.S_ISDIR(mode):
                        children[rel] = set()
                        stack.append(rel)
                        continue
                    if stat.S_ISLNK(mode):
                        try:
                            links[rel] = os.readlink(entry.path)
                        except OSError as exc:
                            raise self._error(rel, exc) from exc
                    ino = st.st_ino
                    inodes.add(ino, rel)
                    if st.st_nlink > 1:
                        nlinks[ino] = st.st_nlink
                        linked.add(ino)
                    if stat.S_ISREG(mode) and st.st_ctime_ns >= racy_from:
                        recent[rel] = st.st_ctime_ns

    def _drop_below(self, rel: str) -> None:
        """Forget what is below the directory ``rel`` (it is about to be read whole)."""
        for kid in list(self._children.get(rel, ())):
            self._drop(kid)

    def _error(self, rel: str, exc: OSError) -> FilesystemError:
        return FilesystemError(
            f"cannot scan the build root {self.root}: {exc.strerror} ({self.root / rel})",
            hint="check the permissions of the build directory",
        )
