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

A copy-up breaks a hardlink group (the changed name becomes a new inode);
:func:`keep_link_groups` puts the group back together in the upper dir before
its changes are read.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from lamina.errors import FilesystemError
from lamina.fs._changes import Change
from lamina.fs._extract import remove_path
from lamina.fs._ignore import IgnoreList
from lamina.fs._tarwriter import read_xattrs

__all__ = ["apply_upper", "changes_from_upper", "keep_link_groups"]

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


def _lower_has_dir(lower: Path, rel: PurePosixPath) -> bool:
    """Is there a real directory at ``rel`` in ``lower``, through no symlink?"""
    current = lower
    for part in rel.parts[1:]:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


def changes_from_upper(
    upper: Path, *, ignore: IgnoreList | None = None, lower: Path | None = None
) -> list[Change]:
    """The changes recorded in the overlay upper directory ``upper``, sorted by path.

    A whiteout gives ``DELETE``, an opaque directory ``OPAQUE`` (the directory
    plus the ``.wh..wh..opq`` marker), every other entry ``ADD``. Paths matched
    by ``ignore`` are left out. With ``lower`` (the overlay's lower directory),
    hardlink groups the step changed through one name are first completed in
    ``upper`` (:func:`keep_link_groups`), and a directory marked opaque that
    hides nothing (no directory at its path in ``lower``: the kernel marks new
    directories opaque with ``index=on``) is a plain ``ADD``, so the layer gets
    no needless ``.wh..wh..opq``.
    """
    if lower is not None:
        keep_link_groups(upper, lower)
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
                    opaque = _is_opaque(host, names) and (
                        lower is None or _lower_has_dir(lower, rel)
                    )
                    out.append(Change.opaque(rel) if opaque else Change.add(rel))
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


# ------------------------------------------------------------- hardlink groups
# Overlayfs copies a file up on its first change, and without ``index=on`` (which
# needs CAP_DAC_READ_SEARCH in the initial user namespace, so never rootless) the
# copy is a new inode: the file's other names in the lower layer keep the old
# content and the step's upper directory holds only the name it wrote through.
# POSIX (and kaniko, buildah) say every name of the group changed. A name the step
# *replaced* (rm and create, ``sed -i``, ``mv new name``) is a new inode under POSIX
# too, and must stay apart. The upper file tells which: a copy-up sets the lower
# file's atime and mtime on the copy, and neither writing nor chmod/chown moves
# the atime, nor chmod/chown the mtime; a new file has its own times. With
# ``index=on`` (root, see sandbox._init) the copy names its origin in an xattr.

_ORIGIN = tuple(ns + "origin" for ns in _OVERLAY_NAMESPACES)


def _copy_up_evidence(
    host: Path, up: os.stat_result, lower_file: Path, low: os.stat_result
) -> bool:
    """Whether the upper file is a copy-up of the lower one, not a new file.

    Certain with an origin xattr (``index=on``); otherwise from the times, or
    an upper file equal to the lower one in content, mode and owner (``touch``:
    joining the group then changes nothing but times). False for a copy the
    step wrote and then read (the read moves its atime): that group stays
    broken, as a replacement's would.
    """
    if up.st_atime_ns == low.st_atime_ns or up.st_mtime_ns == low.st_mtime_ns:
        return True
    if any(name in _ORIGIN for name in _overlay_attrs(host)):
        return True
    same = (up.st_mode, up.st_uid, up.st_gid) == (low.st_mode, low.st_uid, low.st_gid)
    return same and _same_content(host, lower_file)


def _open_dir(name: str, parent: int | None = None) -> int | None:
    """A directory fd for ``name`` (under ``parent``), never through a symlink."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError:
        return None  # absent, a symlink or not a directory: nothing of the lower below


def _copied_up(upper: Path, lower: Path) -> dict[tuple[int, int], list[PurePosixPath]]:
    """Regular files of ``upper`` copied up from a lower regular file with other names.

    Keyed by the lower file's ``(st_dev, st_ino)``; the lower side is walked
    with directory fds, so a symlink in the lower tree is never followed, and
    not below an opaque upper directory (the lower is hidden there).
    """
    found: dict[tuple[int, int], list[PurePosixPath]] = {}
    root_fd = _open_dir(str(lower))
    if root_fd is None:
        return found
    stack: list[tuple[Path, PurePosixPath, int]] = [(upper, PurePosixPath("/"), root_fd)]
    try:
        while stack:
            dir_host, rel_dir, lower_fd = stack.pop()
            try:
                with os.scandir(dir_host) as entries:
                    for entry in entries:
                        host = Path(entry.path)
                        if entry.is_dir(follow_symlinks=False):
                            if not _is_opaque(host, _overlay_attrs(host)):
                                sub = _open_dir(entry.name, lower_fd)
                                if sub is not None:
                                    stack.append((host, rel_dir / entry.name, sub))
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        if _is_whiteout(host, entry.stat(follow_symlinks=False)):
                            continue
                        try:
                            low = os.stat(entry.name, dir_fd=lower_fd, follow_symlinks=False)
                        except OSError:
                            continue
                        if (
                            stat.S_ISREG(low.st_mode)
                            and low.st_nlink > 1
                            and _copy_up_evidence(
                                host,
                                entry.stat(follow_symlinks=False),
                                lower / (rel_dir / entry.name).relative_to("/"),
                                low,
                            )
                        ):
                            found.setdefault((low.st_dev, low.st_ino), []).append(
                                rel_dir / entry.name
                            )
            finally:
                os.close(lower_fd)
    finally:
        for _, _, fd in stack:
            os.close(fd)
    return found


def _lower_names(
    lower: Path, wanted: dict[tuple[int, int], list[PurePosixPath]]
) -> dict[tuple[int, int], list[PurePosixPath]]:
    """Every name under ``lower`` of the inodes ``wanted``; the walk stops once all are found."""
    names: dict[tuple[int, int], list[PurePosixPath]] = {key: [] for key in wanted}
    missing = dict.fromkeys(wanted, -1)  # names still to find, once the count is known
    stack: list[tuple[str, PurePosixPath]] = [(str(lower), PurePosixPath("/"))]
    while stack and any(left != 0 for left in missing.values()):
        dir_host, rel_dir = stack.pop()
        with os.scandir(dir_host) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel_dir / entry.name))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
                if key in names:
                    names[key].append(rel_dir / entry.name)
                    missing[key] = st.st_nlink - len(names[key])
    return names


def _view_is_lower(upper: Path, rel: PurePosixPath) -> bool:
    """Whether the step left ``rel`` as the lower layer has it (nothing of it in ``upper``)."""
    current = upper
    for part in rel.parts[1:]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return True
        if not stat.S_ISDIR(st.st_mode) or _is_opaque(current, _overlay_attrs(current)):
            return False  # replaced, deleted (a whiteout) or hidden below an opaque dir
    return False  # the name itself is in upper: the step changed it


def _link_into_upper(upper: Path, lower: Path, rel: PurePosixPath, source: Path) -> None:
    """Make ``rel`` in ``upper`` a hard link to ``source``, parents copied from ``lower``.

    Upper directories that exist keep their times (the link is not the step's
    change to them); created ones take their lower counterpart's metadata.
    """
    parent_upper, parent_lower = upper, lower
    missing: list[tuple[Path, Path]] = []
    for part in rel.parts[1:-1]:
        parent_upper, parent_lower = parent_upper / part, parent_lower / part
        if missing or not os.path.lexists(parent_upper):
            missing.append((parent_upper, parent_lower))
    touched = missing[0][0].parent if missing else parent_upper  # the existing dir we change
    kept = os.lstat(touched)
    created: list[tuple[Path, os.stat_result]] = []
    for path, like_path in missing:
        like = os.lstat(like_path)
        os.mkdir(path, 0o700)
        _copy_dir_metadata(like_path, path, like)
        created.append((path, like))
    os.link(source, parent_upper / rel.name)
    for path, like in reversed(created):
        os.utime(path, ns=(like.st_atime_ns, like.st_mtime_ns))
    os.utime(touched, ns=(kept.st_atime_ns, kept.st_mtime_ns))


def _same_content(a: Path, b: Path) -> bool:
    return os.lstat(a).st_size == os.lstat(b).st_size and filecmp.cmp(a, b, shallow=False)


def _merged_copy(copies: list[Path], lower_file: Path) -> Path:
    """One copy standing for the whole group: a three-way merge against the lower file.

    Each name the step changed was copied up on its own from the same lower
    inode, so what differs between a copy and the lower file is what the step
    did through that name. The copy with changed content (the latest, if
    several) carries the group; a mode or owner changed through another name
    is applied to it (the latest change of each wins).
    """
    if len(copies) == 1:
        return copies[0]
    base = os.lstat(lower_file)
    latest_first = sorted(copies, key=lambda c: os.lstat(c).st_ctime_ns, reverse=True)
    rewritten = [c for c in latest_first if not _same_content(c, lower_file)]
    carrier = rewritten[0] if rewritten else latest_first[0]
    stats = [os.lstat(c) for c in latest_first]

    def merged(field: str, value: int) -> int:
        return next((v for v in (getattr(st, field) for st in stats) if v != value), value)

    uid, gid = merged("st_uid", base.st_uid), merged("st_gid", base.st_gid)
    mode = next(
        (m for m in (stat.S_IMODE(st.st_mode) for st in stats) if m != stat.S_IMODE(base.st_mode)),
        stat.S_IMODE(base.st_mode),
    )
    now = os.lstat(carrier)
    if (now.st_uid, now.st_gid) != (uid, gid):
        os.lchown(carrier, uid, gid)  # before chmod: chown clears setuid/setgid bits
    if stat.S_IMODE(os.lstat(carrier).st_mode) != mode:
        os.chmod(carrier, mode)
    return carrier


def _relink_copy(copy: Path, source: Path) -> None:
    """Replace the upper file ``copy`` by a hard link to ``source`` (its dir keeps its times)."""
    parent = copy.parent
    kept = os.lstat(parent)
    temp = parent / f".lamina-link-{os.getpid()}-{copy.name}"
    os.link(source, temp)
    os.rename(temp, copy)
    os.utime(parent, ns=(kept.st_atime_ns, kept.st_mtime_ns))


def keep_link_groups(upper: Path, lower: Path) -> int:
    """Give a step's changed hardlinked files back their link group; the number of links made.

    For a regular file of ``upper`` whose lower counterpart has other names
    (``st_nlink > 1``), every other name the step left alone is added to
    ``upper`` as a hard link to the changed file, so the layer holds the
    whole group with the new content and merging ``upper`` relinks the rootfs.
    When the step changed several names of one group (each its own copy-up:
    ``chown -R``, a chmod through one name and a write through another), the
    copies are merged into one against the lower file (:func:`_merged_copy`)
    and every name links to it. A name the step replaced by a new file is
    left apart (see :func:`_copy_up_evidence`). Costs a walk of ``lower``
    only when such a file exists.
    """
    try:
        copied = _copied_up(upper, lower)
        if not copied:
            return 0
        made = 0
        for key, names in _lower_names(lower, copied).items():
            changed = [upper / p.relative_to("/") for p in copied[key]]
            source = _merged_copy(changed, lower / copied[key][0].relative_to("/"))
            source_ino = os.lstat(source).st_ino
            for copy in changed:
                if os.lstat(copy).st_ino != source_ino:
                    _relink_copy(copy, source)
                    made += 1
            for rel in names:
                if rel not in copied[key] and _view_is_lower(upper, rel):
                    _link_into_upper(upper, lower, rel, source)
                    made += 1
        return made
    except OSError as exc:
        raise FilesystemError(
            f"cannot complete the hardlink groups of the overlay upper directory {upper}: "
            f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else ""),
            hint="the step's overlay mount must be unmounted before its changes are read",
        ) from exc
