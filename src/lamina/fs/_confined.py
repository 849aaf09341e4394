"""Changing paths inside a root after an untrusted step: fd-relative, following no symlink.

A RUN may replace any directory of its root with a symlink (to ``/etc`` of the
host, say). What lamina does to the root after a RUN (restoring files it
swapped in, removing mount points and emulated mounts, moving a cache back,
applying deferred times) acts on paths it recorded *before* the step, so it
must not resolve them again through whatever the step left there.
:class:`ConfinedRoot` opens the recorded path one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` from a descriptor of the root and acts on the
last component relative to its parent's descriptor (``*at`` calls that do not
follow it either). A component that is no longer a real directory means "not
there any more": the operation does nothing and says so (``False``/``None``);
the step's own result stays what it is.

Recorded paths are the in-image paths of entries the caller itself created or
resolved: already free of symlinks, never containing ``..``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from lamina.errors import FilesystemError
from lamina.fs._nodecopy import copy_tree

__all__ = ["ConfinedRoot"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: errors meaning "a component is missing, a symlink or not a directory"
_GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)


def _parts(path: str | PurePosixPath | Path) -> list[str]:
    parts = [p for p in str(path).split("/") if p and p != "."]
    if ".." in parts:
        raise FilesystemError(
            f"internal: a recorded path inside the root contains '..': {path}",
            hint="this is a bug in lamina",
        )
    return parts


def _write_all(fd: int, data: bytes | IO[bytes]) -> None:
    chunks = [data] if isinstance(data, bytes) else iter(lambda: data.read(1 << 20), b"")
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


@dataclass(frozen=True, slots=True)
class ConfinedRoot:
    """Operations on recorded paths inside ``root`` that never follow a symlink.

    ``root`` itself is trusted (lamina made it). Paths are in-image paths
    (``/etc/hosts``; a leading ``/`` is optional) or host paths below ``root``
    (see :meth:`inside`).
    """

    root: Path

    def inside(self, host: Path | str | PurePosixPath) -> PurePosixPath:
        """``host`` (a host path below ``root``, or already an in-image path) in the image."""
        if isinstance(host, Path) and host.is_absolute():
            try:
                return PurePosixPath("/", *host.relative_to(self.root).parts)
            except ValueError:
                raise FilesystemError(
                    f"internal: {host} is not inside {self.root}", hint="this is a bug in lamina"
                ) from None
        return PurePosixPath("/", *_parts(host))

    def _in(self, path: Path | str | PurePosixPath) -> list[str]:
        return _parts(self.inside(path))

    def _open_parts(self, parts: list[str]) -> int | None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in _GONE:
                    return None
                raise
            os.close(fd)
            fd = child
        return fd

    @contextlib.contextmanager
    def directory(self, path: Path | str | PurePosixPath) -> Iterator[int | None]:
        """A descriptor of the directory ``path`` (``None`` when it is no longer one)."""
        fd = self._open_parts(self._in(path))
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    @contextlib.contextmanager
    def parent(self, path: Path | str | PurePosixPath) -> Iterator[tuple[int, str] | None]:
        """``(descriptor of the parent, last component)`` of ``path``, or ``None``."""
        parts = self._in(path)
        if not parts:
            raise FilesystemError(
                f"internal: the root {self.root} itself as an entry", hint="this is a bug in lamina"
            )
        fd = self._open_parts(parts[:-1])
        try:
            yield None if fd is None else (fd, parts[-1])
        finally:
            if fd is not None:
                os.close(fd)

    def lstat(self, path: Path | str | PurePosixPath) -> os.stat_result | None:
        """The entry at ``path`` itself (``None``: missing, or a parent is not a directory)."""
        if not self._in(path):
            return os.lstat(self.root)
        with self.parent(path) as at:
            if at is None:
                return None
            try:
                return os.stat(at[1], dir_fd=at[0], follow_symlinks=False)
            except FileNotFoundError:
                return None

    def set_times(self, path: Path | str | PurePosixPath, ns: tuple[int, int]) -> bool:
        """``utime`` of the entry at ``path`` itself (a symlink's own times); False: gone."""
        if not self._in(path):
            os.utime(self.root, ns=ns)
            return True
        with self.parent(path) as at:
            if at is None:
                return False
            try:
                os.utime(at[1], ns=ns, dir_fd=at[0], follow_symlinks=False)
            except FileNotFoundError:
                return False
            return True

    def set_directory_times(
        self, times: Iterable[tuple[Path | str | PurePosixPath, tuple[int, int]]]
    ) -> None:
        """``utime`` of many ``(directory, times)``, each only if it is still a real directory.

        Deferred directory times (COPY's, say) of a whole tree: the paths are
        walked in sorted order, so a shared parent is opened once (the open
        descriptors never exceed the depth of the deepest path).
        """
        entries = sorted((self._in(path), ns) for path, ns in times)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack: list[tuple[str, int]] = []  # the open directories below the root
        try:
            for parts, ns in entries:
                keep = 0
                while keep < min(len(stack), len(parts)) and stack[keep][0] == parts[keep]:
                    keep += 1
                while len(stack) > keep:
                    os.close(stack.pop()[1])
                fd = stack[-1][1] if stack else root_fd
                for part in parts[len(stack) :]:
                    try:
                        child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno in _GONE:
                            break
                        raise
                    stack.append((part, child))
                    fd = child
                else:
                    os.utime(fd, ns=ns)
        finally:
            for _, fd in stack:
                os.close(fd)
            os.close(root_fd)

    def remove(self, path: Path | str | PurePosixPath) -> bool:
        """Delete the entry at ``path`` (a whole tree for a directory); False: nothing there."""
        with self.parent(path) as at:
            if at is None:
                return False
            fd, name = at
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                # rmtree with dir_fd opens every level with O_NOFOLLOW (symlink-attack safe)
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            return True

    def rmdir(self, path: Path | str | PurePosixPath) -> bool:
        """Remove the directory ``path`` if it is empty (and still a directory)."""
        with self.parent(path) as at:
            if at is None:
                return False
            try:
                st = os.stat(at[1], dir_fd=at[0], follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    return False
                os.rmdir(at[1], dir_fd=at[0])
            except OSError as exc:
                if exc.errno in (*_GONE, errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
            return True

    def rename_within(self, path: Path | str | PurePosixPath, new_name: str) -> bool:
        """Rename the entry ``path`` to ``new_name`` in the same directory; False: gone."""
        if "/" in new_name or new_name in ("", ".", ".."):
            raise FilesystemError(
                f"internal: {new_name!r} is not one name", hint="this is a bug in lamina"
            )
        with self.parent(path) as at:
            if at is None:
                return False
            fd, name = at
            try:
                os.rename(name, new_name, src_dir_fd=fd, dst_dir_fd=fd)
            except FileNotFoundError:
                return False
            return True

    def move_dir_out(self, path: Path | str | PurePosixPath, dest: Path) -> bool:
        """Move the directory ``path`` to the (trusted, missing) host path ``dest``.

        False (nothing moved) when ``path`` is no longer a real directory.
        Across filesystems the tree is copied (symlinks kept as symlinks) and
        then removed.
        """
        with self.parent(path) as at:
            if at is None:
                return False
            fd, name = at
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                return False
            try:
                os.rename(name, dest, src_dir_fd=fd)
                return True
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                # /proc/self/fd/N names the directory we hold, not a path to re-resolve
                # only regular files are read: a device node the step made is re-made
                copy_tree(f"/proc/self/fd/{child}", dest)
                shutil.copystat(f"/proc/self/fd/{child}", dest)
                os.chown(dest, st.st_uid, st.st_gid)
            finally:
                os.close(child)
            shutil.rmtree(name, dir_fd=fd)
            return True

    def replace_file(
        self,
        path: Path | str | PurePosixPath,
        data: bytes | IO[bytes],
        *,
        mode: int,
        owner: tuple[int, int] | None = None,
        times: tuple[int, int] | None = None,
    ) -> bool:
        """Put ``data`` (bytes, or a stream read to its end) in a regular file at ``path``.

        The file gets ``mode``, ``owner`` and ``times`` when given.

        A regular file with one link there is rewritten in place (its
        directory keeps its times); anything else but a directory is replaced
        by a new file created with ``O_EXCL | O_NOFOLLOW``. Owner, mode and
        times are set on the file's own descriptor. False when the parent is
        gone or a directory is at ``path``.
        """
        with self.parent(path) as at:
            if at is None:
                return False
            fd, name = at
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            out = -1
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                out = os.open(name, flags, dir_fd=fd)
                now = os.fstat(out)
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(
                    now.st_mode
                ):
                    os.close(out)
                    out = -1
            if out < 0:
                if st is not None:
                    if stat.S_ISDIR(st.st_mode):
                        return False
                    os.unlink(name, dir_fd=fd)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                out = os.open(name, flags, 0o600, dir_fd=fd)
            try:
                os.ftruncate(out, 0)
                _write_all(out, data)
                if owner is not None:
                    os.fchown(out, *owner)
                os.fchmod(out, mode)
                if times is not None:
                    os.utime(out, ns=times)
            finally:
                os.close(out)
            return True

    def remove_xattr(self, path: Path | str | PurePosixPath, name: str) -> None:
        """Remove the extended attribute ``name`` of the directory ``path`` (if it is one)."""
        with self.directory(path) as fd:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.removexattr(fd, name)
