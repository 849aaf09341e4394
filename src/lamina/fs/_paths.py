"""Resolving paths inside a root directory as if that root were ``/``.

:func:`safe_join` is the one function through which every path inside a rootfs
is turned into a host path. It walks the path one component at a time with
``lstat``, following symlinks itself (absolute targets restart at the root,
``..`` never climbs above the root), so the result is always inside ``root``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from lamina.errors import FilesystemError
from lamina.oci._text import shorten

__all__ = ["MAX_SYMLINKS", "PATH_MAX", "image_parts", "safe_join"]

#: how many symlinks one resolution may follow (Linux uses 40 as well)
MAX_SYMLINKS = 40
#: Linux's limit on a path given to a system call, its terminating NUL included
PATH_MAX = 4096
#: components looked up by path; deeper ones relative to a directory descriptor (a lookup
#: by path walks every component again: quadratic in the depth)
_FD_DEPTH = 24


class _Cursor:
    """An ``O_PATH`` descriptor of the directory a deep lookup is made in."""

    __slots__ = ("depth", "fd")

    def __init__(self) -> None:
        self.fd = -1
        self.depth = -1  # how many resolved components the descriptor's directory has

    def at(self, hosts: list[str], depth: int) -> int:
        """The descriptor of ``hosts[depth]`` (opened by path when not at hand)."""
        if self.depth != depth:
            self.close()
            self.fd = os.open(hosts[depth], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.depth = depth
        return self.fd

    def descend(self, part: str) -> None:
        """Move to the subdirectory ``part`` (not followed: it was just found a directory)."""
        flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(part, flags, dir_fd=self.fd)
        os.close(self.fd)
        self.fd, self.depth = fd, self.depth + 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.depth = -1, -1


def image_parts(path: str | PurePosixPath) -> list[str]:
    """The components of an in-image path, without empty and ``.`` parts.

    ``..`` components are kept (they are resolved by :func:`safe_join`).
    """
    return [p for p in str(path).split("/") if p and p != "."]


def safe_join(
    root: Path,
    path: str | PurePosixPath,
    *,
    follow_final: bool = False,
    on_missing: Callable[[Path], None] | None = None,
) -> Path:
    """The host path of the in-image ``path``, resolved inside ``root``.

    ``path`` is taken as absolute inside ``root`` (a leading ``/`` or none is
    the same). ``..`` and symlinks are resolved as if ``root`` were ``/``: a
    symlink ``/etc/x -> /etc/shadow`` resolves to ``root/etc/shadow`` and
    ``../../..`` stops at ``root``. Components that do not exist yet are
    appended as they are. The final component is followed only when
    ``follow_final`` is true (so by default the result names a symlink itself,
    like ``lstat``). The result never lies outside ``root``; ``root`` itself is
    not resolved and must be a real directory.

    ``on_missing`` is called with the host path of a component found missing
    (it may raise to abandon the resolution); the components below a missing
    one are missing too and are neither looked up nor reported. Components
    deeper than ``_FD_DEPTH`` are looked up relative to a descriptor of their
    directory, so the cost stays linear in the depth of the path.

    Raises :class:`FilesystemError` for too many levels of symlinks, a path
    that needs a non-directory as a directory, or an unreadable component.
    """
    pending = image_parts(path)
    pending.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    #: the host path (a string: no pathlib parsing per step) of each resolved prefix
    hosts = [str(root).rstrip("/")]
    #: index in ``resolved`` of a component found missing (all below it are missing)
    absent: int | None = None
    followed = 0
    cursor = _Cursor()  # for components deeper than _FD_DEPTH
    try:
        while pending:
            part = pending.pop()
            if part == "..":
                if resolved:
                    resolved.pop()
                    hosts.pop()
                    cursor.close()  # it names a directory below: look it up again
                    if absent is not None and len(resolved) <= absent:
                        absent = None  # back above the missing component
                continue
            is_final = not pending
            if is_final and not follow_final:
                resolved.append(part)
                break
            host = hosts[-1] + "/" + part
            if absent is not None:
                resolved.append(part)  # below a missing component: missing too
                hosts.append(host)
                continue
            deep = len(resolved) >= _FD_DEPTH
            try:
                st = (
                    os.lstat(part, dir_fd=cursor.at(hosts, len(resolved)))
                    if deep
                    else os.lstat(host)
                )
            except FileNotFoundError:
                # nothing there: no symlink to follow, the rest is taken literally
                # (later components are resolved too, since `..` must still clamp)
                if on_missing is not None:
                    on_missing(Path(host))
                absent = len(resolved)
                resolved.append(part)
                hosts.append(host)
                continue
            except NotADirectoryError as exc:
                raise FilesystemError(
                    f"cannot resolve {shorten(str(path))!r} inside {root}: "
                    f"{shorten('/' + '/'.join(resolved))} is not a directory",
                    hint="a file in the image is used as a directory; check the layer or step",
                ) from exc
            except OSError as exc:
                raise FilesystemError(
                    f"cannot resolve {shorten(str(path))!r} inside {root}: {exc.strerror} "
                    f"at {shorten(host)}",
                    hint="check the permissions of the build directory",
                ) from exc
            if not stat.S_ISLNK(st.st_mode):
                if deep and stat.S_ISDIR(st.st_mode) and pending:
                    try:
                        cursor.descend(part)
                    except OSError as exc:
                        raise FilesystemError(
                            f"cannot resolve {shorten(str(path))!r} inside {root}: "
                            f"{exc.strerror} at {shorten(host)}",
                            hint="something else changes the build directory",
                        ) from exc
                resolved.append(part)
                hosts.append(host)
                continue
            followed += 1
            if followed > MAX_SYMLINKS:
                raise FilesystemError(
                    f"cannot resolve {shorten(str(path))!r} inside {root}: "
                    "too many levels of symbolic links",
                    hint="a symlink loop in the image; check the symlinks along this path",
                )
            try:
                target = os.readlink(part, dir_fd=cursor.fd) if deep else os.readlink(host)
            except OSError as exc:
                raise FilesystemError(
                    f"cannot read the symlink {shorten(host)}: {exc.strerror}",
                    hint="check the permissions of the build directory",
                ) from exc
            if target.startswith("/"):
                resolved = []
                del hosts[1:]
                cursor.close()
            target_parts = image_parts(target)
            target_parts.reverse()
            pending.extend(target_parts)
        return Path(root, *resolved)
    finally:
        cursor.close()
