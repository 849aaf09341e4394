"""Copying files of a root a RUN wrote: only regular files are ever opened.

A RUN as root may leave a device node or a FIFO anywhere in its root (the
root is ``nodev``, so the step cannot open the device). lamina copies parts
of such roots on the host side, where no ``nodev`` holds: a cache seeded
from a stage, a cache moved across filesystems, the file of a writable bind
mount. Opening a node there would read the host device it names (a disk) or
block on a FIFO. :func:`copy_entry` reads regular files only and re-creates
every other node (device nodes as root only, sockets skipped), and
:func:`copy_tree` copies a tree with it (symlinks as symlinks).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from lamina.errors import FilesystemError

__all__ = ["copy_entry", "copy_tree"]

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_entry(src: str | Path, dst: str | Path) -> None:
    """Copy the non-directory ``src`` to ``dst``: a file by content, other nodes re-made.

    Mode, times and extended attributes are copied (as ``shutil.copy2``); a
    symlink is copied as a symlink. ``dst`` itself is never followed.
    """
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        return
    if stat.S_ISREG(st.st_mode):
        fin = os.open(src, _READ)
        try:
            if not stat.S_ISREG(os.fstat(fin).st_mode):  # swapped since the lstat
                raise FilesystemError(
                    f"{src} is no longer a regular file",
                    hint="something else is changing the build root",
                )
            fout = os.open(dst, _WRITE, 0o600)
            try:
                with open(fin, "rb", closefd=False) as r, open(fout, "wb", closefd=False) as w:
                    shutil.copyfileobj(r, w, 1 << 20)
            finally:
                os.close(fout)
        finally:
            os.close(fin)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, 0o600)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        if os.geteuid() != 0:
            return
        os.mknod(dst, (st.st_mode & ~0o7777) | 0o600, st.st_rdev)
    else:  # a socket: nothing to copy
        return
    shutil.copystat(src, dst, follow_symlinks=False)


def copy_tree(src: str | Path, dst: str | Path, *, dirs_exist_ok: bool = False) -> None:
    """Copy the directory ``src`` to ``dst`` with :func:`copy_entry` (symlinks kept)."""
    shutil.copytree(src, dst, symlinks=True, copy_function=copy_entry, dirs_exist_ok=dirs_exist_ok)
