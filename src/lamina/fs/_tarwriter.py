"""Writing a layer tar deterministically from a list of changes, as a stream."""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from lamina.errors import FilesystemError
from lamina.fs._changes import Change, ChangeKind, normalise_changes
from lamina.fs._extract import DEVICE_XATTR, OPAQUE_MARKER, WHITEOUT_PREFIX, device_record
from lamina.fs._ignore import IgnoreList
from lamina.fs._paths import safe_join

__all__ = ["LayerWriteStats", "changes_for_tree", "read_xattrs", "write_layer"]

_BLOCK = 512
_CHUNK = 1 << 20
#: xattrs that describe the host, the overlay mount or lamina's records, never the image
_SKIPPED_XATTR_PREFIXES = (
    "trusted.overlay.",
    "user.overlay.",
    "security.selinux",
    DEVICE_XATTR,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerWriteStats:
    """What :func:`write_layer` wrote: tar entries (whiteouts included) and bytes."""

    entries: int
    whiteouts: int
    size: int


def read_xattrs(host: Path) -> list[tuple[str, bytes]]:
    """The image-relevant xattrs of ``host`` (not followed), sorted by name."""
    return _read_xattrs(host)[0]


def _read_xattrs(host: Path) -> tuple[list[tuple[str, bytes]], bool]:
    """:func:`read_xattrs`, and whether ``host`` carries a device record."""
    try:
        names = os.listxattr(host, follow_symlinks=False)
    except OSError:
        return [], False  # filesystem without xattr support, or a symlink on some filesystems
    out: list[tuple[str, bytes]] = []
    for name in sorted(names):
        if name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        try:
            out.append((name, os.getxattr(host, name, follow_symlinks=False)))
        except OSError:
            continue
    return out, DEVICE_XATTR in names


def _sort_key(path: PurePosixPath) -> tuple[str, ...]:
    parts = path.parts[1:]
    if parts and parts[-1] == OPAQUE_MARKER:
        # the opaque marker right after its directory, before every child
        return (*parts[:-1], "")
    return parts


def changes_for_tree(
    root: Path, path: str | PurePosixPath, *, ignore: IgnoreList | None = None
) -> Iterator[Change]:
    """``ADD`` changes for the in-image ``path`` and everything below it (for COPY/ADD)."""
    start = Change.add(path)
    host = safe_join(root, start.path)
    if not os.path.lexists(host):
        return
    yield start
    if not (os.path.isdir(host) and not os.path.islink(host)):
        return
    stack = [(host, start.path)]
    while stack:
        dir_host, dir_rel = stack.pop()
        try:
            entries = sorted(os.scandir(dir_host), key=lambda e: e.name)
        except OSError as exc:
            raise FilesystemError(f"cannot list {dir_host}: {exc.strerror}") from exc
        for entry in entries:
            rel = dir_rel / entry.name
            if ignore is not None and ignore.matches(rel):
                continue
            yield Change.add(rel)
            if entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), rel))


class _Writer:
    def __init__(self, root: Path, out: BinaryIO, epoch: int | None) -> None:
        self.root = root
        self.out = out
        self.epoch = epoch
        self.size = 0
        self.entries = 0
        self.whiteouts = 0
        self.links: dict[tuple[int, int], str] = {}

    def _mtime(self, value: float) -> int:
        mtime = max(0, int(value))
        if self.epoch is not None and mtime > self.epoch:
            return self.epoch
        return mtime

    def _emit(self, info: tarfile.TarInfo) -> None:
        buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self.out.write(buf)
        self.size += len(buf)
        self.entries += 1

    def whiteout(self, path: PurePosixPath, parent_st: os.stat_result) -> None:
        info = tarfile.TarInfo(path.relative_to("/").as_posix())
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.mtime = self._mtime(parent_st.st_mtime)
        info.uname = info.gname = ""
        self._emit(info)
        self.whiteouts += 1

    def entry(self, path: PurePosixPath, host: Path, st: os.stat_result) -> None:
        name = path.relative_to("/").as_posix()
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid = st.st_uid
        info.gid = st.st_gid
        info.uname = info.gname = ""
        info.mtime = self._mtime(st.st_mtime)
        fmt = stat.S_IFMT(st.st_mode)
        data = False
        xattrs, recorded = _read_xattrs(host)
        device = device_record(host) if recorded and fmt == stat.S_IFREG else None
        if device is not None and (st.st_nlink < 2 or (st.st_dev, st.st_ino) not in self.links):
            # a placeholder extraction made for a device node: the node again
            if st.st_nlink > 1:
                self.links[(st.st_dev, st.st_ino)] = name
            info.type = tarfile.CHRTYPE if device[0] == "c" else tarfile.BLKTYPE
            info.devmajor, info.devminor = device[1], device[2]
        elif fmt == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
            else:
                if st.st_nlink > 1:
                    self.links[key] = name
                info.type = tarfile.REGTYPE
                info.size = st.st_size
                data = True
        elif fmt == stat.S_IFDIR:
            info.type = tarfile.DIRTYPE
        elif fmt == stat.S_IFLNK:
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(host)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
            info.devmajor = os.major(st.st_rdev)
            info.devminor = os.minor(st.st_rdev)
        elif fmt == stat.S_IFIFO:
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets (and unknown types) are not part of images
        info.pax_headers = {
            "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs
        }
        self._emit(info)
        if data:
            self._copy(host, st.st_size)

    def _copy(self, host: Path, size: int) -> None:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            left = size
            while left:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:
                    raise FilesystemError(
                        f"{host} shrank while it was written to a layer",
                        hint="something else is writing into the build root during the snapshot",
                    )
                self.out.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        pad = -size % _BLOCK
        if pad:
            self.out.write(b"\0" * pad)
        self.size += size + pad

    def finish(self) -> LayerWriteStats:
        self.out.write(b"\0" * (2 * _BLOCK))
        self.size += 2 * _BLOCK
        return LayerWriteStats(entries=self.entries, whiteouts=self.whiteouts, size=self.size)


def _lstat(host: Path) -> os.stat_result | None:
    try:
        return os.lstat(host)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise FilesystemError(f"cannot inspect {host}: {exc.strerror}") from exc


def write_layer(
    changes: Iterable[Change],
    root: Path,
    out: BinaryIO,
    *,
    epoch: int | None = None,
) -> LayerWriteStats:
    """Write the uncompressed layer tar for ``changes`` (read from ``root``) to ``out``.

    Deterministic: PAX format, entries sorted by path components (an opaque
    marker right after its directory), every parent directory present with its
    real mode/owner/mtime, whiteouts ``.wh.NAME`` (only where the parent is
    still a directory), hardlinks within the layer by ``(st_dev, st_ino)``,
    xattrs as ``SCHILY.xattr.*`` records (overlay and SELinux ones dropped),
    numeric owners with empty uname/gname, whole-second mtimes clamped to
    ``epoch`` when given, no atime/ctime records, sockets skipped, the
    placeholders extraction makes for device nodes written as those device
    nodes (see :func:`lamina.fs._extract.device_record`). Streams:
    only one chunk of file data is in memory at a time. ``root`` may be a
    rootfs or an overlay upper directory (paths are looked up in it).
    """
    wanted: dict[PurePosixPath, ChangeKind] = {}
    for ch in normalise_changes(list(changes)):
        for parent in ch.path.parents:
            if parent != PurePosixPath("/"):
                wanted.setdefault(parent, ChangeKind.ADD)
        if ch.kind is ChangeKind.DELETE:
            wanted[ch.path.parent / (WHITEOUT_PREFIX + ch.path.name)] = ChangeKind.DELETE
        elif ch.kind is ChangeKind.OPAQUE:
            wanted[ch.path] = ChangeKind.ADD
            wanted[ch.path / OPAQUE_MARKER] = ChangeKind.OPAQUE
        else:
            wanted.setdefault(ch.path, ChangeKind.ADD)
    writer = _Writer(root, out, epoch)
    try:
        for path in sorted(wanted, key=_sort_key):
            _write_one(writer, root, path, wanted[path])
        return writer.finish()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FilesystemError(
                f"cannot write the layer from {root}: the disk is full after "
                f"{writer.size} bytes of it ({writer.entries} entries): {exc.strerror}",
                hint="free space (or raise the quota) where the build directory is (--kaniko-dir)",
            ) from exc
        raise FilesystemError(
            f"cannot write the layer from {root}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="check free space where the layer is written, and that nothing else "
            "modifies the build root during the snapshot",
        ) from exc


def _write_one(writer: _Writer, root: Path, path: PurePosixPath, kind: ChangeKind) -> None:
    if kind is ChangeKind.ADD:
        host = Path(root, *path.parts[1:])
        if safe_join(root, path) != host:
            raise FilesystemError(
                f"the changed path {path} goes through a symlink in {root}",
                hint="this is a bug in the snapshot: changes must name real paths",
            )
        st = _lstat(host)
        if st is not None:
            writer.entry(path, host, st)
        return
    parent_host = Path(root, *path.parent.parts[1:])
    parent_st = _lstat(parent_host)
    if parent_st is None or not stat.S_ISDIR(parent_st.st_mode):
        return  # the parent was deleted or replaced: the whiteout is moot
    writer.whiteout(path, parent_st)  # .wh.NAME and the opaque marker alike
