"""Atomic file writing and bounded reading helpers for the local sinks/sources."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from lamina.errors import FilesystemError, ImageFormatError

__all__ = ["BoundedReader", "atomic_file", "copy_stream", "oserror"]


def oserror(
    action: str, path: Path | str, exc: OSError, hint: str | None = None
) -> ImageFormatError:
    return ImageFormatError(
        f"{action} {path} failed: {exc.strerror or exc}",
        hint=hint or "check the path, free space and permissions",
    )


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644, *, hint: str | None = None) -> Iterator[IO[bytes]]:
    """Write ``path`` through a unique temp file in its directory, renamed on success.

    On any exception the temp file is removed and ``path`` is left as it was;
    concurrent writers of one path never see each other's partial files (the
    last rename wins). OS failures raise :class:`FilesystemError` with ``hint``.
    """
    hint = hint or "check the path, free space and permissions"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FilesystemError(
            f"cannot create a temporary file in {path.parent}: {exc.strerror or exc}", hint=hint
        ) from exc
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise FilesystemError(f"cannot write {path}: {exc.strerror or exc}", hint=hint) from exc
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def copy_stream(src: IO[bytes] | BinaryIO | Any, dst: IO[bytes] | Any, chunk: int = 1 << 20) -> int:
    """Copy in fixed-size chunks; returns the number of bytes copied."""
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)


class BoundedReader(io.RawIOBase):
    """Reads ``size`` bytes of ``f`` starting at ``offset`` (a tar member, say)."""

    def __init__(self, f: IO[bytes] | BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._pos = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = min(len(view), self._left)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        view[: len(data)] = data
        self._pos += len(data)
        self._left -= len(data)
        return len(data)
