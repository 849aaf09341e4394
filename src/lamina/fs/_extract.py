"""Applying layer tar streams to a rootfs, safely and with OCI whiteout semantics.

Policy for hostile entries (documented in the package docstring and tested):

* an entry name containing a ``..`` component, a whiteout for ``.`` or ``..``,
  and a hardlink whose target contains ``..`` are **refused**: the entry is
  skipped and ``on_warning`` names the layer and the entry;
* an absolute entry name (``/etc/passwd``) or hardlink target is taken inside the
  root (as GNU tar does with a warning);
* symlinks met while resolving a name are followed **inside** the root
  (:func:`safe_join`), so a symlink to ``/etc`` followed by ``link/passwd``
  writes ``root/etc/passwd`` and never the host's file;
* a hardlink to something that does not exist inside the root is skipped with
  a warning;
* directory modes and mtimes, applied once the layer is done, go only to the
  directory the entry made or kept: its path is resolved inside the root
  again if anything was removed or replaced since (a later entry may have made
  an ancestor a symlink to a host directory), and the inode must be the same;
* device nodes are never created (a RUN could open the host's device through
  them): an empty regular file with the entry's owner, mode, xattrs and mtime
  stands for one, recorded in the xattr :data:`DEVICE_XATTR`; layer writing
  (``_tarwriter``) writes the device node back;
* tar headers are bounded (:mod:`lamina.oci._tarread`), and a name longer than
  ``PATH_MAX``, an owner, mtime or device number out of range is an error;
  names quoted in messages are shortened.

Malformed or hostile tar data raises :class:`ImageFormatError` (for
:func:`extract_archive`, the error class it is given); a failing filesystem
operation raises :class:`FilesystemError` naming the entry (for a full disk,
the layer and how much of it was written).

Parallel file creation. Creating a file costs the kernel a fraction of a
millisecond, so the thread reading the tar hands regular files of at most
``_PARALLEL_MAX_FILE`` bytes (their data read into memory, at most
``_IN_FLIGHT_BUDGET`` bytes of it pending at a time), and symlinks, to
``WORKERS`` threads, which create them and apply their metadata. Everything
else, in stream order, stays in the reading thread. The
rule that keeps this as safe as writing in order:

* a worker only creates the one path it was given (a file with
  ``O_EXCL|O_NOFOLLOW``, or a symlink, which is never followed), whose parent
  the reading thread resolved with :func:`safe_join` and made sure is a real
  directory, and where it made sure nothing is;
* so the reading thread **waits for every pending write (a barrier)** before
  anything that could remove or replace a directory, or put a directory or
  link where a pending file goes: whiteouts and opaque markers, replacing
  anything but a plain file (a directory may hold pending writes), hardlinks
  (their target may be pending), and the end of the layer (before directory
  modes and mtimes, and before :func:`extract_layer` returns: the next layer
  sees a complete tree). Workers never create, remove or replace directories
  (nor remove anything), so every directory a pending path goes through
  stays in place;
* an entry whose path is a pending path (a duplicate name, the last wins) and
  a resolution that meets a pending path not created yet (``on_missing`` of
  :func:`safe_join`) wait for the pending writes first, so every decision
  sees what writing in order would have seen;
* a worker's error (the same :class:`FilesystemError`) is raised in the
  reading thread at its next dispatch or barrier, nothing more is handed out,
  and the threads are joined before :func:`extract_layer` returns or raises.
"""

from __future__ import annotations

import bz2
import errno
import functools
import gzip
import io
import lzma
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, cast

from lamina.errors import FilesystemError, ImageFormatError, LaminaError
from lamina.fs._ignore import IgnoreList
from lamina.fs._paths import PATH_MAX, image_parts, safe_join
from lamina.oci._tarread import TarHeaderLimitError, next_member, open_stream
from lamina.oci._text import shorten

__all__ = [
    "DEVICE_XATTR",
    "ExtractStats",
    "device_record",
    "extract_archive",
    "extract_layer",
    "keep_device_record",
    "remove_path",
]

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_CHUNK = 1 << 20
#: the xattr that makes an empty regular file stand for a device node (see _device)
DEVICE_XATTR = "user.lamina.device"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

#: threads creating small regular files (1: every file in the reading thread)
WORKERS = 4
#: regular files up to this size go to the workers; larger ones are streamed in order
_PARALLEL_MAX_FILE = 1 << 20
#: how much file data (plus an allowance per file) may wait for the workers
_IN_FLIGHT_BUDGET = 32 << 20
_PER_FILE_COST = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractStats:
    """What one :func:`extract_layer` call did."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped: int = 0
    bytes_written: int = 0


class _Counts:
    __slots__ = (
        "bytes_written",
        "devices",
        "dirs",
        "entries",
        "fifos",
        "files",
        "hardlinks",
        "opaque_dirs",
        "skipped",
        "symlinks",
        "whiteouts",
    )

    def __init__(self) -> None:
        self.entries = self.files = self.dirs = self.symlinks = self.hardlinks = 0
        self.devices = self.fifos = self.whiteouts = self.opaque_dirs = 0
        self.skipped = self.bytes_written = 0

    def freeze(self) -> ExtractStats:
        return ExtractStats(**{name: getattr(self, name) for name in self.__slots__})


def _rel(root: Path, host: Path) -> str:
    """The in-image absolute path of a host path inside ``root``."""
    rel = host.relative_to(root).as_posix()
    return "/" if rel == "." else "/" + rel


def remove_path(root: Path, host: Path, ignore: IgnoreList | None = None) -> None:
    """Delete ``host`` (a path inside ``root``, not followed if a symlink) and its subtree.

    Entries matched by ``ignore`` are kept (with the directories above them).
    A missing path is not an error. Iterative: any depth the kernel allows.
    """
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fs_error("inspect", host, exc) from exc
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(host)
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fs_error("delete", host, exc) from exc
    _remove_tree(root, host, ignore)


def _remove_tree(root: Path, top: Path, ignore: IgnoreList | None) -> None:
    """Delete the directory ``top`` and what it holds (children first, no recursion)."""
    # host paths as strings: a deep tree would make every pathlib parse quadratic
    stack: list[tuple[str, bool]] = [(str(top), False)]
    while stack:
        d, emptied = stack.pop()
        try:
            if emptied:
                os.rmdir(d)
                continue
            stack.append((d, True))
            keep = ignore is not None and ignore.has_ignored_below(_rel(root, Path(d)))
            with os.scandir(d) as it:
                for entry in it:
                    if keep and ignore is not None and ignore.matches(_rel(root, Path(entry.path))):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, False))
                    else:
                        os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if emptied and ignore is not None and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue  # it holds an ignored entry
            raise _fs_error("delete", Path(d), exc) from exc


def device_record(host: Path) -> tuple[str, int, int] | None:
    """``("c"|"b", major, minor)`` when ``host`` is a placeholder standing for a device node.

    Extraction never creates device nodes (a RUN could open them): it makes an
    empty regular file with the device's owner, mode and mtime, and this record
    in the xattr :data:`DEVICE_XATTR`; layer writing turns it back into the device.
    """
    try:
        raw = os.getxattr(host, DEVICE_XATTR, follow_symlinks=False)
    except OSError:
        return None
    kind, _, rest = raw.decode("ascii", "replace").partition(" ")
    major, _, minor = rest.partition(" ")
    if kind not in ("c", "b") or not major.isdigit() or not minor.isdigit():
        return None
    return kind, int(major), int(minor)


def keep_device_record(src: Path, dst: Path) -> None:
    """Copy the device record of ``src`` (if it is a placeholder) to the copy ``dst``."""
    try:
        raw = os.getxattr(src, DEVICE_XATTR, follow_symlinks=False)
    except OSError:
        return
    try:
        os.setxattr(dst, DEVICE_XATTR, raw, follow_symlinks=False)
    except OSError as exc:
        raise _fs_error("record the device node", dst, exc) from exc


def _size(count: int) -> str:
    if count >= 1 << 30:
        return f"{count / (1 << 30):.2f} GiB"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count} bytes"


def _fs_error(
    action: str,
    host: Path,
    exc: OSError,
    entry: str | None = None,
    *,
    layer: str | None = None,
    written: int = 0,
) -> FilesystemError:
    where = f" (layer entry {shorten(entry)!r})" if entry else ""
    what = f"cannot {action} {shorten(str(host))}{where}: {exc.strerror or exc}"
    if exc.errno in _DISK_FULL and layer is not None:
        return FilesystemError(
            f"{layer}: the disk is full after writing {_size(written)} of it: {what}",
            hint="free space (or raise the quota) where the build directory is "
            "(--kaniko-dir): the image needs more than that",
        )
    if exc.errno == errno.ENAMETOOLONG:
        return FilesystemError(
            f"{layer + ': ' if layer else ''}{what}",
            hint=f"a path in the build directory is longer than Linux allows ({PATH_MAX} "
            "bytes, 255 per name): use a shorter --kaniko-dir, or the layer is hostile",
        )
    return FilesystemError(
        what, hint="check free space and permissions of the build directory (--kaniko-dir)"
    )


#: the largest owner id (``(uid_t) -1`` means "unchanged" to the kernel)
_MAX_ID = (1 << 32) - 2
#: mtimes in seconds that fit a signed 64-bit count of nanoseconds
_MAX_SECONDS = 9_000_000_000
#: Linux's device numbers: 12-bit major, 20-bit minor
_MAX_MAJOR, _MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in ns (PAX sub-second precision kept); checked by _numbers_problem."""
    raw = member.pax_headers.get("mtime")
    if raw is not None:
        try:
            value = Decimal(raw)
            if value.is_finite() and abs(value) <= _MAX_SECONDS:
                return int(value * 1_000_000_000)
        except (InvalidOperation, ValueError):
            pass
    return int(member.mtime) * 1_000_000_000


def _numbers_problem(member: tarfile.TarInfo) -> str | None:
    """What is out of range among the entry's numbers (hostile PAX or base-256 fields)."""
    if not 0 <= member.uid <= _MAX_ID or not 0 <= member.gid <= _MAX_ID:
        return f"owner {shorten(str(member.uid), 30)}:{shorten(str(member.gid), 30)}"
    if not -_MAX_SECONDS <= member.mtime <= _MAX_SECONDS:  # False for NaN too
        return f"mtime {shorten(str(member.mtime), 30)}"
    if (member.ischr() or member.isblk()) and (
        not 0 <= member.devmajor <= _MAX_MAJOR or not 0 <= member.devminor <= _MAX_MINOR
    ):
        return f"device number {member.devmajor}:{member.devminor}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _DirMeta:
    """A directory entry's mode and mtime, applied when the layer is done."""

    rel: str  # the path inside the root
    host: Path
    inode: tuple[int, int]  # (st_dev, st_ino) of the directory the entry made or kept
    mode: int
    mtime_ns: int
    #: :attr:`_LayerApplier._generation` when the entry was applied
    generation: int


class _PendingPathError(Exception):
    """A resolution met a path a worker has not created yet: wait, then resolve again."""


_Job = tuple[Path, int, Callable[[], None]]


class _FilePool:
    """Threads creating files, with a budget of pending bytes and a barrier.

    Only the thread that made the pool calls its methods; workers only run
    the jobs they are given. Each worker has its own queue and a job goes to
    the queue its ``lane`` (the parent directory's hash) picks: the kernel
    creates one name at a time per directory, so a worker waiting on a busy
    directory holds up no file of another. Threads start on their first job
    (an empty layer starts none) and are joined by :meth:`close`.
    """

    def __init__(self, workers: int, budget: int) -> None:
        self._size = workers
        self._budget = budget
        self._queues: list[queue.SimpleQueue[_Job | None]] = []
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()
        self._pending: set[Path] = set()
        self._cost = 0
        self._stop = False
        #: the first failure of a job, raised in the owning thread
        self.error: BaseException | None = None

    def __contains__(self, host: object) -> bool:
        with self._cond:
            return host in self._pending

    def check(self) -> None:
        """Raise the error of a failed job, if any."""
        if self.error is not None:
            raise self.error

    def submit(self, host: Path, lane: int, cost: int, job: Callable[[], None]) -> None:
        """Run ``job`` (which creates ``host``) in a worker, once ``cost`` fits the budget."""
        index = lane % self._size
        while len(self._queues) <= index:
            jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._work, args=(jobs,), name=f"lamina-extract-{len(self._queues)}"
            )
            thread.daemon = True
            try:
                thread.start()
            except RuntimeError as exc:
                raise FilesystemError(
                    f"cannot start a thread to write files: {exc}",
                    hint="the process is out of threads; check ulimit -u and memory",
                ) from exc
            self._queues.append(jobs)
            self._threads.append(thread)
        with self._cond:
            while self.error is None and self._pending and self._cost + cost > self._budget:
                self._cond.wait()
            self.check()
            self._pending.add(host)
            self._cost += cost
        self._queues[index].put((host, cost, job))

    def wait(self) -> None:
        """The barrier: return once no job is pending; raise a job's error."""
        with self._cond:
            while self._pending:
                self._cond.wait()
        self.check()

    def close(self) -> None:
        """Drop the jobs not started (after an error) and join the threads."""
        self._stop = True
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._queues.clear()

    def _work(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while (item := jobs.get()) is not None:
            host, cost, job = item
            try:
                if self.error is None and not self._stop:
                    job()
            except BaseException as exc:  # raised again in the owning thread
                with self._cond:
                    if self.error is None:
                        self.error = exc
            finally:
                with self._cond:
                    self._pending.discard(host)
                    self._cost -= cost
                    self._cond.notify()


class _LayerApplier:
    def __init__(
        self,
        root: Path,
        *,
        ignore: IgnoreList | None,
        on_warning: Callable[[str], None],
        layer_name: str,
        whiteouts: bool = True,
        workers: int = WORKERS,
        bad_input: type[LaminaError] = ImageFormatError,
    ) -> None:
        self.root = root
        self.ignore = ignore
        #: what malformed or hostile input raises (an image layer's or an archive's error)
        self.bad_input = bad_input
        self.warn = on_warning
        self.layer = layer_name
        self.whiteouts = whiteouts
        self.counts = _Counts()
        #: in-image paths written by this layer, and every directory above them
        self.written: set[str] = set()
        self.above_written: set[str] = set()
        #: directories whose mode and mtime are applied once the layer is done
        self.dir_meta: list[_DirMeta] = []
        #: counts what removed or replaced anything but a plain file (see _invalidate)
        self._generation = 0
        self.chown_failed = False
        self.xattr_failed = False
        #: every entry's owner instead of the tar's (``ADD --chown`` of an archive)
        self.owner: tuple[int, int] | None = None
        #: small regular files are created by these threads (see the module docstring)
        self.pool = _FilePool(workers, _IN_FLIGHT_BUDGET) if workers > 1 else None
        self._thread = threading.get_ident()
        #: guards ``chown_failed`` and ``_deferred`` (warnings of worker threads)
        self._lock = threading.Lock()
        self._deferred: list[str] = []
        #: with workers: what each directory holds (name -> S_IFMT bits, 0 for
        #: "other"), listed once, so that asking whether a new name exists does
        #: not wait for the kernel to finish a worker's create in that directory
        self._listing: dict[Path, dict[str, int]] = {}
        #: parent directories already resolved (and made) in this layer, by in-image path:
        #: every component exists and nothing but creation happened since (see _invalidate)
        self._parents: dict[str, Path] = {}

    # -- bookkeeping -----------------------------------------------------------------

    def _warn_entry(self, name: str, text: str) -> None:
        message = f"{self.layer}: entry {shorten(name)!r}: {text}"
        if threading.get_ident() == self._thread:
            self.warn(message)
            return
        with self._lock:  # a worker: the reading thread passes it on
            self._deferred.append(message)

    def _flush_warnings(self) -> None:
        if not self._deferred:
            return
        with self._lock:
            messages, self._deferred = self._deferred, []
        for message in messages:
            self.warn(message)

    # -- parallel writes -------------------------------------------------------------

    def _barrier(self) -> None:
        """Wait for every pending write (see the module docstring for when)."""
        if self.pool is not None:
            self.pool.wait()
        self._flush_warnings()

    def _not_pending(self, host: Path) -> None:
        """Accept a component found missing only if no worker is (or was just) creating it."""
        # pending, or finished between the lookup and this check: resolve again
        # (a path that is not pending stays missing: workers create pending paths only)
        if self.pool is not None and (host in self.pool or os.path.lexists(host)):
            raise _PendingPathError(host)

    def _invalidate(self) -> None:
        """Something that was not a plain file was removed or replaced: forget the
        directory listings and the resolved parents (a directory or symlink on a
        resolved path may be gone). Creating entries never invalidates them: a
        resolved parent's components all exist, and creation only fills missing names."""
        self._listing.clear()
        self._parents.clear()
        self._generation += 1

    def _fs_error(
        self, action: str, host: Path, exc: OSError, entry: str | None = None
    ) -> FilesystemError:
        return _fs_error(
            action, host, exc, entry, layer=self.layer, written=self.counts.bytes_written
        )

    def _resolve_parent(self, path: str) -> Path:
        if self.pool is None:
            return safe_join(self.root, path, follow_final=True)
        try:
            return safe_join(self.root, path, follow_final=True, on_missing=self._not_pending)
        except _PendingPathError:
            self._barrier()
            return safe_join(self.root, path, follow_final=True)

    def _kind(self, host: Path, entry: str) -> int | None:
        """The file type (``S_IFMT`` bits; 0: other) at ``host``; None if nothing is there."""
        if self.pool is not None:
            names = self._listing.get(host.parent)
            if names is None:
                names = self._list(host.parent, entry)
            return names.get(host.name)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fs_error("inspect", host, exc, entry) from exc
        return stat.S_IFMT(st.st_mode)

    def _list(self, dir_host: Path, entry: str) -> dict[str, int]:
        names: dict[str, int] = {}
        try:
            with os.scandir(dir_host) as it:
                for item in it:
                    if item.is_symlink():
                        kind = stat.S_IFLNK
                    elif item.is_dir(follow_symlinks=False):
                        kind = stat.S_IFDIR
                    elif item.is_file(follow_symlinks=False):
                        kind = stat.S_IFREG
                    else:
                        kind = 0
                    names[item.name] = kind
        except OSError as exc:
            raise self._fs_error("list", dir_host, exc, entry) from exc
        self._listing[dir_host] = names
        return names

    def _made(self, host: Path, kind: int) -> None:
        """Note in the listings that this thread created (or handed out) ``host``."""
        if self.pool is None:
            return
        names = self._listing.get(host.parent)
        if names is not None:
            names[host.name] = kind
        if kind == stat.S_IFDIR:
            self._listing[host] = {}  # made by mkdir: empty

    def close(self) -> None:
        """Join the worker threads (jobs not started yet are dropped)."""
        if self.pool is not None:
            self.pool.close()

    def _skip(self, name: str, why: str) -> None:
        self.counts.skipped += 1
        self._warn_entry(name, why)

    def _mark_written(self, rel: str) -> None:
        self.written.add(rel)
        idx = rel.rfind("/")
        while idx > 0:
            parent = rel[:idx]
            if parent in self.above_written:
                break
            self.above_written.add(parent)
            idx = rel.rfind("/", 0, idx)

    def _ignored(self, rel: str) -> bool:
        return self.ignore is not None and self.ignore.matches(rel)

    # -- one entry -------------------------------------------------------------------

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.counts.entries += 1
        if self.pool is not None:
            self.pool.check()  # a worker failed: hand out nothing more
        name = member.name
        if len(name) >= PATH_MAX // 4 and len(os.fsencode(name)) >= PATH_MAX:
            raise self.bad_input(
                f"{self.layer}: entry {shorten(name)!r}: the name is "
                f"{len(os.fsencode(name))} bytes long; Linux allows {PATH_MAX - 1} (PATH_MAX)",
                hint="the layer or archive is malformed or hostile",
            )
        problem = _numbers_problem(member)
        if problem is not None:
            raise self.bad_input(
                f"{self.layer}: entry {shorten(name)!r}: {problem} is out of range",
                hint="the layer or archive is malformed or hostile",
            )
        parts = image_parts(name)
        if ".." in parts:
            self._skip(name, "refused: the name contains '..' and could escape the root")
            return
        if name.startswith("/"):
            self._warn_entry(name, "absolute name, taken inside the root")
        if not parts:
            return  # the root directory itself: the build root keeps its own metadata
        base = parts[-1]
        parent_rel = "/".join(parts[:-1])
        known_parent = self._parents.get(parent_rel)
        parent_host = known_parent or self._resolve_parent(parent_rel)
        if not self.whiteouts:
            pass  # an archive for ADD: .wh.* names are ordinary files
        elif base == OPAQUE_MARKER:
            self._opaque(name, parent_host)
            return
        elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, ...): not part of the image
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(name, parent_host, base[len(WHITEOUT_PREFIX) :])
            return
        dst = parent_host / base
        rel = _rel(self.root, dst)
        if self._ignored(rel) or self._ignored("/" + "/".join(parts)):
            self.counts.skipped += 1
            return
        if known_parent is None:
            self._ensure_dir(parent_host, name)
            self._parents[parent_rel] = parent_host
        self._write(tar, member, dst, rel)

    def _ensure_dir(self, host: Path, entry: str) -> None:
        """Make ``host`` (a path inside the root) and its missing parents directories."""
        missing: list[Path] = []
        probe = host
        while True:  # up to the first component that exists (the root at the latest)
            try:
                st = os.lstat(probe)
            except FileNotFoundError:
                missing.append(probe)
                probe = probe.parent
                continue
            except OSError as exc:
                raise self._fs_error("inspect", probe, exc, entry) from exc
            if stat.S_ISDIR(st.st_mode):
                break
            raise FilesystemError(
                f"{self.layer}: entry {shorten(entry)!r} needs "
                f"{shorten(_rel(self.root, probe))} to be a directory, but an earlier entry "
                "made it a file",
                hint="the layer is malformed (a file used as a directory)",
            )
        if len(missing) < 8:
            for made in reversed(missing):
                try:
                    os.mkdir(made, 0o755)
                except OSError as exc:
                    raise self._fs_error("create the directory", made, exc, entry) from exc
                self._made(made, stat.S_IFDIR)
            return
        # a long chain: each made relative to its parent's descriptor (by path,
        # every mkdir would walk the whole chain again: quadratic in the depth)
        flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        made = probe
        try:
            fd = os.open(probe, flags)
        except OSError as exc:
            raise self._fs_error("open the directory", probe, exc, entry) from exc
        try:
            for made in reversed(missing):
                os.mkdir(made.name, 0o755, dir_fd=fd)
                self._made(made, stat.S_IFDIR)
                parent_fd, fd = fd, -1
                try:
                    fd = os.open(made.name, flags, dir_fd=parent_fd)
                finally:
                    os.close(parent_fd)
        except OSError as exc:
            raise self._fs_error("create the directory", made, exc, entry) from exc
        finally:
            if fd >= 0:
                os.close(fd)

    def _opaque(self, name: str, dir_host: Path) -> None:
        rel = _rel(self.root, dir_host)
        if self._ignored(rel):
            self.counts.skipped += 1
            return
        self._barrier()  # lower-layer entries are about to go
        self.counts.opaque_dirs += 1
        self._ensure_dir(dir_host, name)
        self._clear_lower(dir_host, rel)
        self._invalidate()

    def _clear_lower(self, dir_host: Path, rel: str) -> None:
        """Delete what lower layers put below ``dir_host``; keep this layer's entries."""
        stack = [(dir_host, rel)]
        while stack:
            host, here = stack.pop()
            try:
                entries = list(os.scandir(host))
            except OSError as exc:
                raise self._fs_error("list", host, exc) from exc
            for entry in entries:
                crel = here.rstrip("/") + "/" + entry.name
                if crel in self.written or crel in self.above_written:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), crel))
                    continue
                if self._ignored(crel):
                    continue
                remove_path(self.root, Path(entry.path), self.ignore)

    def _whiteout(self, name: str, parent_host: Path, target: str) -> None:
        if target in ("", ".", "..") or "/" in target:
            self._skip(name, f"refused: whiteout of {target!r} is not a valid name")
            return
        host = parent_host / target
        rel = _rel(self.root, host)
        if self._ignored(rel):
            self.counts.skipped += 1
            return
        self.counts.whiteouts += 1
        self._barrier()  # a directory may be about to go
        if rel in self.written or rel in self.above_written:
            # whiteouts hide lower layers only: keep what this layer wrote
            if os.path.isdir(host) and not os.path.islink(host):
                self._clear_lower(host, rel)
                self._invalidate()
            return
        remove_path(self.root, host, self.ignore)
        self._invalidate()

    def _replace(self, dst: Path, entry: str, *, keep_dir: bool) -> bool:
        """Clear ``dst`` for a new entry; returns whether a directory was kept."""
        kind = self._kind(dst, entry)
        if kind is None:
            return False
        if keep_dir and kind == stat.S_IFDIR:
            return True
        if kind == stat.S_IFREG and self.pool is not None:
            # unlink never removes a directory: a listing out of date cannot make it unsafe
            try:
                os.unlink(dst)
            except FileNotFoundError:
                pass
            except (IsADirectoryError, PermissionError):
                kind = stat.S_IFDIR
            except OSError as exc:
                raise self._fs_error("delete", dst, exc, entry) from exc
            if kind == stat.S_IFREG:
                self._listing[dst.parent].pop(dst.name, None)
                return False
        if kind != stat.S_IFREG:
            self._barrier()  # a directory may hold pending writes
        remove_path(self.root, dst, self.ignore)
        self._invalidate()
        return False

    def _write(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dst: Path, rel: str) -> None:
        name = m.name
        if self.pool is not None and dst in self.pool:
            self._barrier()  # the same name again: the last one wins
        try:
            if m.isdir():
                if not self._replace(dst, name, keep_dir=True):
                    os.mkdir(dst, 0o700)
                    self._made(dst, stat.S_IFDIR)
                self.counts.dirs += 1
            elif m.islnk():
                self._barrier()  # the target may be a pending write
                self._replace(dst, name, keep_dir=False)
                if not self._hardlink(m, dst):
                    return
                self._mark_written(rel)
                return  # the inode's metadata belongs to the link target's entry
            elif m.issym():
                self._replace(dst, name, keep_dir=False)
                if self.pool is not None:
                    self._mark_written(rel)
                    self.counts.symlinks += 1
                    self._made(dst, stat.S_IFLNK)
                    job = functools.partial(self._create_symlink, m, dst)
                    self.pool.submit(dst, hash(dst.parent), _PER_FILE_COST, job)
                    return
                os.symlink(m.linkname, dst)
                self._made(dst, stat.S_IFLNK)
                self.counts.symlinks += 1
            elif m.isreg():
                self._replace(dst, name, keep_dir=False)
                if self.pool is not None and m.size <= _PARALLEL_MAX_FILE:
                    self._dispatch(self.pool, tar, m, dst, rel)
                    return
                self._write_file(tar, m, dst)
            elif m.isfifo():
                self._replace(dst, name, keep_dir=False)
                os.mkfifo(dst, 0o600)
                self._made(dst, 0)
                self.counts.fifos += 1
            elif m.ischr() or m.isblk():
                if not self._device(m, dst):
                    return
            else:
                self._skip(name, f"unsupported tar entry type {m.type!r}, skipped")
                return
        except FilesystemError:
            raise
        except OSError as exc:
            raise self._fs_error("write", dst, exc, name) from exc
        self._mark_written(rel)
        self._metadata(m, dst)

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dst: Path) -> None:
        src = tar.extractfile(m)
        if src is None:
            raise ImageFormatError(f"{self.layer}: cannot read the data of entry {m.name!r}")
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self._made(dst, stat.S_IFREG)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    self.counts.bytes_written += len(chunk)
        finally:
            os.close(fd)
        self.counts.files += 1

    def _dispatch(
        self, pool: _FilePool, tar: tarfile.TarFile, m: tarfile.TarInfo, dst: Path, rel: str
    ) -> None:
        """Hand the regular file ``m`` to a worker: ``dst`` is free, its parent a directory."""
        src = tar.extractfile(m)
        if src is None:
            raise ImageFormatError(f"{self.layer}: cannot read the data of entry {m.name!r}")
        data = src.read()
        self._mark_written(rel)
        self.counts.files += 1
        before = self.counts.bytes_written
        self.counts.bytes_written += len(data)
        self._flush_warnings()
        self._made(dst, stat.S_IFREG)
        job = functools.partial(self._create, m, dst, data, before)
        pool.submit(dst, hash(dst.parent), len(data) + _PER_FILE_COST, job)

    def _create(self, m: tarfile.TarInfo, dst: Path, data: bytes, before: int) -> None:
        """In a worker: create ``dst`` with ``data``, then its owner, mode, xattrs, mtime.

        ``before``: the bytes of file data the entries before this one hold (for
        a full disk's message, the same as writing in order would give).
        """
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            raise _fs_error("write", dst, exc, m.name, layer=self.layer, written=before) from exc
        self._metadata(m, dst)

    def _create_symlink(self, m: tarfile.TarInfo, dst: Path) -> None:
        """In a worker: create the symlink ``dst``, then its owner, xattrs, mtime."""
        try:
            os.symlink(m.linkname, dst)
        except OSError as exc:
            raise self._fs_error("write", dst, exc, m.name) from exc
        self._metadata(m, dst)

    def _hardlink(self, m: tarfile.TarInfo, dst: Path) -> bool:
        target_parts = image_parts(m.linkname)
        if ".." in target_parts or not target_parts:
            self._skip(m.name, f"refused: hardlink target {m.linkname!r} could escape the root")
            return False
        target = safe_join(self.root, m.linkname, follow_final=False)
        if self._ignored(_rel(self.root, target)):
            self.counts.skipped += 1
            return False
        try:
            tst = os.lstat(target)
        except FileNotFoundError:
            self._skip(
                m.name, f"hardlink target {m.linkname!r} does not exist inside the root, skipped"
            )
            return False
        if stat.S_ISDIR(tst.st_mode):
            self._skip(m.name, f"refused: hardlink to the directory {m.linkname!r}")
            return False
        os.link(target, dst, follow_symlinks=False)
        self._made(dst, stat.S_IFMT(tst.st_mode) if stat.S_ISREG(tst.st_mode) else 0)
        self.counts.hardlinks += 1
        return True

    def _device(self, m: tarfile.TarInfo, dst: Path) -> bool:
        """An inert stand-in for a device node: an empty file plus its record.

        A device node in the rootfs would let a RUN open the host's device (a
        loop device, a disk). The placeholder gets the entry's owner, mode,
        xattrs and mtime like any file; :data:`DEVICE_XATTR` records the type
        and numbers, so that layer writing (a snapshot, COPY --from) writes the
        device node back, unchanged.
        """
        kind = "c" if m.ischr() else "b"
        self._replace(dst, m.name, keep_dir=False)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        self._made(dst, stat.S_IFREG)
        record = f"{kind} {m.devmajor} {m.devminor}".encode("ascii")
        try:
            os.setxattr(dst, DEVICE_XATTR, record, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.unlink(dst)
            self._listing.get(dst.parent, {}).pop(dst.name, None)
            self._skip(
                m.name,
                f"{'character' if kind == 'c' else 'block'} device not recorded: "
                f"the build directory does not take xattrs ({exc.strerror})",
            )
            return False
        self.counts.devices += 1
        return True

    def _metadata(self, m: tarfile.TarInfo, dst: Path) -> None:
        if not self.chown_failed:
            uid, gid = self.owner if self.owner is not None else (m.uid, m.gid)
            try:
                os.lchown(dst, uid, gid)
            except PermissionError:
                with self._lock:
                    first, self.chown_failed = not self.chown_failed, True
                if first:
                    self._warn_entry(
                        m.name,
                        "cannot change owners here (not root): files keep the builder's owner "
                        "(reported once per layer)",
                    )
            except OSError as exc:
                raise self._fs_error("change the owner of", dst, exc, m.name) from exc
        mode = m.mode & 0o7777
        is_dir = m.isdir()
        if not m.issym() and not is_dir:
            try:
                os.chmod(dst, mode)  # after chown, which clears setuid/setgid
            except OSError as exc:
                raise self._fs_error("change the mode of", dst, exc, m.name) from exc
        for key, value in sorted(m.pax_headers.items()):
            if key.startswith(_XATTR_PAX_PREFIX):
                self._setxattr(m.name, dst, key[len(_XATTR_PAX_PREFIX) :], value)
        ns = _mtime_ns(m)
        if is_dir:
            try:
                st = os.lstat(dst)
            except OSError as exc:
                raise self._fs_error("inspect", dst, exc, m.name) from exc
            self.dir_meta.append(
                _DirMeta(
                    rel=_rel(self.root, dst),
                    host=dst,
                    inode=(st.st_dev, st.st_ino),
                    mode=mode,
                    mtime_ns=ns,
                    generation=self._generation,
                )
            )
            return
        try:
            os.utime(dst, ns=(ns, ns), follow_symlinks=False)
        except OSError as exc:
            raise self._fs_error("set the mtime of", dst, exc, m.name) from exc

    def _setxattr(self, entry: str, dst: Path, key: str, value: str) -> None:
        raw = value.encode("utf-8", "surrogateescape")
        try:
            os.setxattr(dst, key, raw, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP):
                self._warn_entry(entry, f"xattr {key} not set: {exc.strerror}")
                self.xattr_failed = True
                return
            if exc.errno in (errno.ENOSPC, errno.E2BIG):
                raise FilesystemError(
                    f"{self.layer}: entry {shorten(entry)!r}: cannot set the xattr "
                    f"{shorten(key)} ({len(raw)} bytes): {exc.strerror}",
                    hint="the filesystem of the build directory (--kaniko-dir) does not take "
                    "an xattr that large, or is full",
                ) from exc
            raise self._fs_error(f"set the xattr {key} on", dst, exc, entry) from exc

    def finish(self) -> ExtractStats:
        self._barrier()  # the tree is complete before directory metadata and return
        # deepest first is not needed (utime on a dir does not touch its parent),
        # but reverse order applies the last entry for a directory last-but-one first
        done: set[Path] = set()
        for meta in reversed(self.dir_meta):
            if meta.host in done:
                continue
            done.add(meta.host)
            self._dir_metadata(meta)
        return self.counts.freeze()

    def _dir_metadata(self, meta: _DirMeta) -> None:
        """Apply a directory entry's mode and mtime if it is still that directory.

        A later entry may have replaced the directory, or a directory above it
        with a symlink (``m/``, ``m/b/``, then ``m -> /host/dir``): the path is
        resolved inside the root again when anything was removed or replaced
        since the entry, and the directory found must be the inode the entry made.
        """
        rel, dst = meta.rel, meta.host
        if meta.generation != self._generation:
            try:
                if safe_join(self.root, rel) != dst:
                    return  # a symlink on the way now: not the entry's directory
            except FilesystemError:
                return  # a file on the way now
        try:
            st = os.lstat(dst)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._fs_error("inspect", dst, exc, rel) from exc
        if not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != meta.inode:
            return  # removed and made again by a later entry: not this entry's
        ns = meta.mtime_ns
        try:
            os.chmod(dst, meta.mode)  # a directory: the path was checked just now
            os.utime(dst, ns=(ns, ns), follow_symlinks=False)
        except OSError as exc:
            raise self._fs_error("set the mode and mtime of", dst, exc, rel) from exc


def extract_layer(
    root: Path,
    tar_stream: BinaryIO,
    *,
    ignore: IgnoreList | None = None,
    on_warning: Callable[[str], None],
    layer_name: str = "layer",
    workers: int = WORKERS,
) -> ExtractStats:
    """Apply one **uncompressed** layer tar stream on top of ``root``.

    The stream is read sequentially once (no seek). OCI semantics: ``.wh.NAME``
    deletes NAME from lower layers, ``.wh..wh..opq`` empties its directory of
    lower-layer entries (entries of this layer, before or after the marker,
    survive), a later entry replaces an earlier one. Owners (numeric), modes
    (incl. setuid/setgid/sticky), ``SCHILY.xattr.*`` xattrs and mtimes are
    applied; directory modes and mtimes once the whole layer is written.
    Device nodes are recorded, not created (see :func:`device_record`).
    Paths matched by ``ignore`` are never written or deleted. See the module
    docstring for the policy on hostile entries. ``layer_name`` (e.g. the
    digest) prefixes warnings and errors. Small regular files are created by
    ``workers`` threads (1: all in the calling thread; the result is the same),
    all finished when this returns or raises.
    """
    applier = _LayerApplier(
        root,
        ignore=ignore,
        on_warning=on_warning,
        layer_name=layer_name,
        workers=workers,
    )
    return _run(applier, tar_stream, layer_name)


def _run(applier: _LayerApplier, tar_stream: BinaryIO, layer_name: str) -> ExtractStats:
    try:
        return _apply_all(applier, tar_stream, layer_name)
    finally:
        applier.close()


def _apply_all(applier: _LayerApplier, tar_stream: BinaryIO, layer_name: str) -> ExtractStats:
    bad = applier.bad_input
    if bad is ImageFormatError:
        hint = "the layer blob is corrupt, truncated or hostile; pull it again or check its source"
    else:
        hint = "check that the file is a complete, well-formed tar archive"
    try:
        tar = open_stream(tar_stream)
    except tarfile.ReadError as exc:
        if "empty file" in str(exc):
            return applier.finish()
        raise bad(
            f"{layer_name}: not a tar stream: {exc}",
            hint="the layer is corrupt, or its compression was not removed"
            if bad is ImageFormatError
            else hint,
        ) from exc
    except TarHeaderLimitError as exc:
        raise bad(f"{layer_name}: refused at the first entry: {exc}", hint=hint) from exc
    except OSError as exc:
        raise FilesystemError(f"{layer_name}: cannot read the layer: {exc}") from exc
    with tar:
        while True:
            try:
                member = next_member(tar)
            except tarfile.TarError as exc:
                raise bad(
                    f"{layer_name}: malformed tar data after {applier.counts.entries} entries: "
                    f"{shorten(str(exc))}",
                    hint=hint,
                ) from exc
            except TarHeaderLimitError as exc:
                raise bad(
                    f"{layer_name}: refused after {applier.counts.entries} entries: {exc}",
                    hint=hint,
                ) from exc
            if member is None:
                break
            try:
                applier.apply(tar, member)
            except (tarfile.TarError, EOFError) as exc:
                raise bad(
                    f"{layer_name}: malformed tar data in entry {shorten(member.name)!r}: "
                    f"{shorten(str(exc))}",
                    hint=hint,
                ) from exc
    return applier.finish()


_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class _Prefixed(io.RawIOBase):
    """A read-only stream: some already-read bytes, then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


def _decompressed(stream: BinaryIO) -> tuple[BinaryIO, str]:
    head = stream.read(6)
    raw = cast(BinaryIO, io.BufferedReader(_Prefixed(head, stream), buffer_size=_CHUNK))
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            if kind == "gzip":
                return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), kind
            if kind == "bzip2":
                return cast(BinaryIO, bz2.BZ2File(raw, mode="rb")), kind
            if kind == "xz":
                return cast(BinaryIO, lzma.LZMAFile(raw, mode="rb")), kind
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            return cast(BinaryIO, reader), kind
    return raw, "tar"


def extract_archive(
    root: Path,
    dest: str,
    stream: BinaryIO,
    *,
    on_warning: Callable[[str], None],
    ignore: IgnoreList | None = None,
    name: str = "archive",
    owner: tuple[int, int] | None = None,
    workers: int = WORKERS,
    error: type[LaminaError] = ImageFormatError,
) -> ExtractStats:
    """Unpack a local tar archive (plain, gzip, bzip2, xz or zstd; sniffed) for ``ADD``.

    ``dest`` is the in-image destination directory (created if missing). As
    with Docker's ADD, the archive is confined to ``dest``: its ``..`` names are
    refused and its absolute names and symlinks resolve inside ``dest``.
    ``.wh.*`` names are ordinary files here. Owners and modes of the archive
    are kept, unless ``owner`` is given (``ADD --chown``, as BuildKit >= 0.23):
    then every extracted entry gets it. Decompression streams: memory does not
    grow with the archive. ``workers`` as for :func:`extract_layer`. A
    malformed or hostile archive (see :mod:`lamina.oci._tarread` for the header
    limits) raises ``error`` (``ContextError`` for a file of the build context).
    """
    dest_host = safe_join(root, dest, follow_final=True)
    applier = _LayerApplier(
        root,
        ignore=ignore,
        on_warning=on_warning,
        layer_name=name,
        workers=workers,
        bad_input=error,
    )
    applier._ensure_dir(dest_host, dest)
    applier.root = dest_host
    applier.ignore = None
    if ignore:
        # the ignore list speaks in image paths: translate below dest
        applier.ignore = (
            IgnoreList.of(
                [
                    p[len(_rel(root, dest_host)) :]
                    for p in ignore.paths
                    if p.startswith(_rel(root, dest_host).rstrip("/") + "/")
                ]
            )
            or None
        )
    applier.whiteouts = False
    applier.owner = owner
    try:
        data, _kind = _decompressed(stream)
    except OSError as exc:
        raise error(f"{name}: cannot read the archive: {exc}") from exc
    try:
        return _run(applier, data, name)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise error(
            f"{name}: the compressed archive is corrupt: {exc}",
            hint="check that the file is a complete tar archive",
        ) from exc
