"""The Dockerfile and ``.dockerignore`` of a build context, resolved inside it.

A path that lies inside the context directory is resolved as if the context
were ``/`` (:func:`lamina.fs.safe_join`): a ``Dockerfile`` or ``.dockerignore``
that is a symlink to ``/etc/shadow`` or ``../../x`` names a file inside the
context (most likely a missing one), never the host file, as BuildKit and
Docker do. Only a path the user gave outside the context (``--dockerfile
/elsewhere/Dockerfile``) is read as it is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lamina.errors import ContextError, LaminaError

__all__ = ["context_path", "read_context_text"]


def _inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` when it lies lexically inside it, else None."""
    absolute = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), Path(os.path.realpath(root))):
        if absolute.is_relative_to(base):
            return absolute.relative_to(base).as_posix()
    return None


def context_path(root: Path, path: Path) -> tuple[Path, bool]:
    """Where ``path`` leads, and whether it is inside the context ``root``.

    Inside the context every symlink along the path (the last one included) is
    followed inside it only; a path outside the context is returned as it is.
    """
    from lamina.fs import safe_join

    rel = _inside(root, path)
    if rel is None:
        return path, False
    try:
        return safe_join(Path(os.path.realpath(root)), rel, follow_final=True), True
    except LaminaError as exc:
        raise ContextError(
            f"cannot resolve {path} inside the build context: {exc.message}",
            hint="the Dockerfile and .dockerignore must be files inside the build context",
        ) from None


def read_context_text(root: Path, path: Path, *, what: str) -> tuple[str, Path] | None:
    """The text of ``path`` (resolved by :func:`context_path`) and where it was read.

    None when there is no such file. Inside the context only a regular file is
    read (a FIFO or a device is refused, no symlink is followed at the last step).
    """
    host, inside = context_path(root, path)
    flags = os.O_RDONLY | os.O_CLOEXEC
    if inside:
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(host, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ContextError(
            f"cannot read the {what} {path}: {exc.strerror or exc}",
            hint="check the permissions of the build context",
        ) from None
    with os.fdopen(fd, "rb") as f:
        if inside and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContextError(
                f"the {what} {path} is not a regular file",
                hint=f"the {what} in the build context must be a plain file",
            )
        try:
            data = f.read()
        except OSError as exc:
            raise ContextError(
                f"cannot read the {what} {path}: {exc.strerror or exc}",
                hint="check the permissions of the build context",
            ) from None
    return data.decode("utf-8", errors="surrogateescape"), host
