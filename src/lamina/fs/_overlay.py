"""Overlayfs upper directories: reading them as changes, merging them into the rootfs.

The upper directory of an overlay mount holds exactly what a step changed:
new and modified entries (directories copied up along the way), whiteouts
(character devices 0/0, or on recent kernels empty files with an
``overlay.whiteout`` xattr) for deletions, and directories marked opaque
(xattr ``trusted.overlay.opaque=y``, ``user.overlay.opaque=y`` with
``userxattr``) that hide everything below them in the lower layers. Reading it
costs as much as the change, not as the rootfs.

The mount must use ``redirect_dir=off`` and ``metacopy=off`` (directory renames
then copy, and file data is always in the upper dir); an upper dir that relies
on either is refused with a :class:`FilesystemError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from lamina.errors import FilesystemError
from lamina.fs._changes import Change
from lamina.fs._extract import remove_path
from lamina.fs._ignore import IgnoreList
from lamina.fs._tarwriter import read_xattrs

__all__ = ["apply_upper", "changes_from_upper"]

_OVERLAY_NAMESPACES = ("trusted.overlay.", "user.overlay.")
_OPAQUE = tuple(ns + "opaque" for ns in _OVERLAY_NAMESPACES)
_WHITEOUT = tuple(ns + "whiteout" for ns in _OVERLAY_NAMESPACES)
_UNSUPPORTED = tuple(ns + what for ns in _OVERLAY_NAMESPACES for what in ("redirect", "metacopy"))


def _xattr_names(host: Path) -> list[str]:
    try:
        return os.listxattr(host, follow_symlinks=False)
    except OSError:
        return []


def _overlay_attrs(host: Path) -> list[str]:
    return [n for n in _xattr_names(host) if n.startswith(_OVERLAY_NAMESPACES)]


def _check_supported(host: Path, names: list[str]) -> None:
    for name in names:
        if name in _UNSUPPORTED:
            raise FilesystemError(
                f"{host} carries the overlay xattr {name}: the step's changes cannot be "
                "read from the upper directory alone",
                hint="mount the overlay with redirect_dir=off,metacopy=off",
            )


def _is_opaque(host: Path, names: list[str]) -> bool:
    for name in names:
        if name in _OPAQUE:
            try:
                if os.getxattr(host, name, follow_symlinks=False) == b"y":
                    return True
            except OSError:
                continue
    return False


def _is_whiteout(host: Path, st: os.stat_result) -> bool:
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return any(n in _WHITEOUT for n in _overlay_attrs(host))
    return False


def changes_from_upper(upper: Path, *, ignore: IgnoreList | None = None) -> list[Change]:
    """The changes recorded in the overlay upper directory ``upper``, sorted by path.

    A whiteout gives ``DELETE``, an opaque directory ``OPAQUE`` (the directory
    plus the ``.wh..wh..opq`` marker), every other entry ``ADD``. Paths matched
    by ``ignore`` are left out.
    """
    out: list[Change] = []
    stack: list[tuple[Path, PurePosixPath]] = [(upper, PurePosixPath("/"))]
    try:
        while stack:
            dir_host, dir_rel = stack.pop()
            for entry in os.scandir(dir_host):
                rel = dir_rel / entry.name
                if ignore is not None and ignore.matches(rel):
                    continue
                host = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    names = _overlay_attrs(host)
                    _check_supported(host, names)
                    out.append(Change.opaque(rel) if _is_opaque(host, names) else Change.add(rel))
                    stack.append((host, rel))
                    continue
                if entry.is_symlink():
                    out.append(Change.add(rel))
                    continue
                st = entry.stat(follow_symlinks=False)
                if _is_whiteout(host, st):
                    out.append(Change.delete(rel))
                else:
                    _check_supported(host, _overlay_attrs(host))  # metacopy files
                    out.append(Change.add(rel))
    except OSError as exc:
        raise FilesystemError(
            f"cannot read the overlay upper directory {upper}: {exc.strerror}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="the step's overlay mount must be unmounted before its changes are read",
        ) from exc
    out.sort(key=lambda ch: ch.path.parts)
    return out


def _strip_overlay_xattrs(host: Path) -> None:
    for name in _overlay_attrs(host):
        try:
            os.removexattr(host, name, follow_symlinks=False)
        except OSError:
            continue


def _copy_dir_metadata(src: Path, dst: Path, st: os.stat_result) -> None:
    with contextlib.suppress(PermissionError):  # unprivileged: the builder owns all
        os.lchown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name, value in read_xattrs(src):
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError:
            continue


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise FilesystemError(
                f"cannot move {src} to {dst}: the overlay upper directory and the rootfs "
                "are on different filesystems",
                hint="keep the upper directory and the rootfs under the same build "
                "directory (--kaniko-dir)",
            ) from exc
        raise


class _Merger:
    def __init__(self, upper: Path, root: Path, ignore: IgnoreList | None) -> None:
        self.upper = upper
        self.root = root
        self.ignore = ignore
        self.dir_times: list[tuple[Path, int, int]] = []

    def _ignored(self, rel: PurePosixPath) -> bool:
        return self.ignore is not None and self.ignore.matches(rel)

    def merge_dir(self, src_dir: Path, dst_dir: Path, rel_dir: PurePosixPath) -> None:
        for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
            rel = rel_dir / entry.name
            if self._ignored(rel):
                continue
            src = Path(entry.path)
            dst = dst_dir / entry.name
            st = entry.stat(follow_symlinks=False)
            if _is_whiteout(src, st):
                remove_path(self.root, dst, self.ignore)
                continue
            try:
                dst_st: os.stat_result | None = os.lstat(dst)
            except FileNotFoundError:
                dst_st = None
            if stat.S_ISDIR(st.st_mode):
                names = _overlay_attrs(src)
                _check_supported(src, names)
                opaque = _is_opaque(src, names)
                if dst_st is not None and stat.S_ISDIR(dst_st.st_mode) and not opaque:
                    _copy_dir_metadata(src, dst, st)
                    self.merge_dir(src, dst, rel)
                    self.dir_times.append((dst, st.st_atime_ns, st.st_mtime_ns))
                    continue
                if dst_st is not None:
                    remove_path(self.root, dst, self.ignore)
                _rename(src, dst)
                self._clean_moved_tree(dst)
                continue
            if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                remove_path(self.root, dst, self.ignore)
            _rename(src, dst)  # atomically replaces a file, symlink or device

    def _clean_moved_tree(self, top: Path) -> None:
        """Drop overlay xattrs and stray whiteouts from a directory moved as a whole."""
        stack = [top]
        while stack:
            d = stack.pop()
            _strip_overlay_xattrs(d)
            for entry in os.scandir(d):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif not entry.is_symlink() and not entry.is_file(follow_symlinks=False):
                    p = Path(entry.path)
                    if _is_whiteout(p, entry.stat(follow_symlinks=False)):
                        os.unlink(p)


def apply_upper(upper: Path, root: Path, *, ignore: IgnoreList | None = None) -> None:
    """Merge the overlay upper directory ``upper`` into ``root``, then empty ``upper``.

    Entries are moved with ``rename`` (so ``upper`` and ``root`` must be on the
    same filesystem, and the cost follows the size of the change): whiteouts
    delete, opaque directories replace the directory of ``root``, other
    directories are merged (their mode, owner, xattrs and mtime taken from the
    upper dir). Overlay xattrs never reach ``root``. The overlay must be
    unmounted first.
    """
    merger = _Merger(upper, root, ignore)
    try:
        merger.merge_dir(upper, root, PurePosixPath("/"))
        for dst, atime_ns, mtime_ns in reversed(merger.dir_times):
            os.utime(dst, ns=(atime_ns, mtime_ns), follow_symlinks=False)
        for entry in os.scandir(upper):
            p = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                os.unlink(p)
    except FilesystemError:
        raise
    except OSError as exc:
        raise FilesystemError(
            f"cannot merge the overlay upper directory {upper} into {root}: {exc.strerror}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="check free space and permissions of the build directory",
        ) from exc
