"""Helpers shared by the cache back ends: atomic files, TTL wording, key checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from lamina.errors import FilesystemError
from lamina.oci import Digest, DigestingReader, Layer, atomic_file, format_time

__all__ = [
    "CHUNK",
    "Clock",
    "atomic_write",
    "check_key",
    "copy_layer_blob",
    "expired_reason",
    "format_ttl",
    "utcnow",
]

CHUNK = 1 << 20
Clock = Callable[[], datetime]
# a key is used as a tag and a file name: tag grammar, no path separators
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_key(key: str) -> str | None:
    """None when ``key`` can name an entry, else why not (keys come from cache_key)."""
    if _KEY_RE.fullmatch(key) is None:
        return f"invalid cache key {key!r} (expected up to 128 letters, digits, '_', '.', '-')"
    return None


def format_ttl(ttl: timedelta) -> str:
    """``336h`` / ``90m`` / ``45s``, as kaniko's --cache-ttl is written."""
    seconds = int(ttl.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def expired_reason(created: datetime, ttl: timedelta, now: datetime) -> str | None:
    """The miss reason when an entry written at ``created`` is past ``ttl``, else None."""
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if now - created <= ttl:
        return None
    return f"expired (written {format_time(created)}, ttl {format_ttl(ttl)})"


def atomic_write(path: Path, mode: int = 0o644) -> AbstractContextManager[IO[bytes]]:
    """:func:`lamina.oci.atomic_file` with the cache directory's hint."""
    return atomic_file(path, mode, hint="check the cache directory's permissions and free space")


def copy_layer_blob(layer: Layer, dest: Path) -> None:
    """Stream ``layer``'s compressed blob into ``dest`` (atomically), checking its digest."""
    expected = layer.digest()
    with atomic_write(dest) as out, layer.compressed() as src:
        reader = DigestingReader(src, expected=expected, what=f"layer {expected.short}")
        while chunk := reader.read(CHUNK):
            out.write(chunk)
        reader.verify()


def verify_file(path: Path, digest: Digest, size: int | None) -> None:
    """Raise ImageFormatError/FilesystemError unless ``path`` holds exactly ``digest``."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise FilesystemError(
            f"cannot open cached blob {path}: {exc.strerror or exc}",
            hint="the blob was removed or is unreadable",
        ) from exc
    with f:
        reader = DigestingReader(f, expected=digest, expected_size=size, what=f"cached blob {path}")
        while reader.read(CHUNK):
            pass
        reader.verify()
