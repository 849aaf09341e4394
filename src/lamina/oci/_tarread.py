"""Reading tar archives with bounded memory: every tar lamina reads is opened here.

Python's :mod:`tarfile` reads a PAX extended header, a GNU long name or link
and a GNU sparse map whole into memory, and follows a chain of extended
headers by recursion, so a few kilobytes of compressed input could take
gigabytes (a 512 MiB PAX header in a 0.5 MB blob) or end in a RecursionError.
The tars opened by :func:`open_stream` and :func:`open_file` check, before
the bytes are read:

* the extended headers of one entry (PAX records, GNU long name and long
  link, sparse maps) total at most :data:`MAX_ENTRY_HEADERS` (1 MiB: a path is
  at most 4 KiB, an xattr value 64 KiB);
* at most :data:`MAX_HEADER_CHAIN` headers precede one entry;
* global PAX headers total at most :data:`MAX_GLOBAL_HEADERS` per archive
  (every later entry copies them).

Over a limit, :class:`TarHeaderLimitError` is raised (callers name the layer or
archive). :func:`next_member` also turns the stray exceptions tarfile's parsers
raise on hostile bytes (ValueError, IndexError) into :class:`tarfile.ReadError`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MAX_ENTRY_HEADERS",
    "MAX_GLOBAL_HEADERS",
    "MAX_HEADER_CHAIN",
    "TarHeaderLimitError",
    "next_member",
    "open_file",
    "open_stream",
]

#: bytes of extended headers (and their 512-byte blocks) one entry may have
MAX_ENTRY_HEADERS = 1 << 20
#: headers (extended ones plus the entry's own) read for one entry
MAX_HEADER_CHAIN = 16
#: bytes of global PAX headers one archive may have
MAX_GLOBAL_HEADERS = 64 << 10

_KINDS = {
    tarfile.XHDTYPE: "PAX extended header",
    tarfile.SOLARIS_XHDTYPE: "PAX extended header",
    tarfile.XGLTYPE: "PAX global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
    tarfile.GNUTYPE_SPARSE: "GNU sparse map",
}


def _size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MiB"
    if size >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size} bytes"


class TarHeaderLimitError(Exception):
    """A tar header is larger than lamina reads (not a tarfile error: tarfile must pass it on)."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"a {what} of {_size(size)} (lamina reads at most {_size(limit)} of headers "
            "for one entry)"
            if what != "chain"
            else f"more than {limit} tar headers in a row for one entry"
        )


class _Guard:
    """Stands in for ``TarFile.fileobj``: counts what header parsing reads."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        #: nesting of ``fromtarfile`` (0: reading entry data, not headers)
        self.depth = 0
        self.used = 0
        self.global_bytes = 0
        self.kind = "tar header"

    def read(self, size: int | None = -1) -> bytes:
        if self.depth:
            if size is None or size < 0 or self.used + size > MAX_ENTRY_HEADERS:
                raise TarHeaderLimitError(self.kind, self.used + (size or 0), MAX_ENTRY_HEADERS)
            self.used += size
        data: bytes = self._inner.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _BoundedInfo(tarfile.TarInfo):
    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _BoundedInfo:
        guard = tf.fileobj
        if not isinstance(guard, _Guard):
            guard = _Guard(guard)
            tf.fileobj = guard
        if guard.depth == 0:
            guard.used = 0
            guard.kind = "tar header"
        elif guard.depth >= MAX_HEADER_CHAIN:
            raise TarHeaderLimitError("chain", guard.depth, MAX_HEADER_CHAIN)
        guard.depth += 1
        try:
            info: _BoundedInfo = super().fromtarfile(tf)
            return info
        finally:
            guard.depth -= 1

    def _proc_member(self, tf: tarfile.TarFile) -> Any:
        guard = tf.fileobj
        kind = _KINDS.get(self.type)
        if isinstance(guard, _Guard) and kind is not None:
            guard.kind = kind
            if guard.used + self.size > MAX_ENTRY_HEADERS:  # before tarfile reads it
                raise TarHeaderLimitError(kind, guard.used + self.size, MAX_ENTRY_HEADERS)
            if self.type == tarfile.XGLTYPE:
                guard.global_bytes += self.size
                if guard.global_bytes > MAX_GLOBAL_HEADERS:
                    raise TarHeaderLimitError(
                        "PAX global header", guard.global_bytes, MAX_GLOBAL_HEADERS
                    )
        return super()._proc_member(tf)  # type: ignore[misc]


def open_stream(fileobj: BinaryIO) -> tarfile.TarFile:
    """A tar read once, front to back (``r|``), with bounded headers.

    Raises :class:`tarfile.ReadError` (``"empty file"`` for no data) and
    :class:`TarHeaderLimitError` for the first header.
    """
    try:
        return tarfile.open(fileobj=fileobj, mode="r|", tarinfo=_BoundedInfo)
    except (ValueError, IndexError) as exc:
        raise tarfile.ReadError(f"malformed tar header: {exc}") from exc


def open_file(path: Path) -> tarfile.TarFile:
    """An uncompressed tar file opened for random access (``r:``), with bounded headers."""
    try:
        return tarfile.open(path, mode="r:", tarinfo=_BoundedInfo)
    except (ValueError, IndexError) as exc:
        raise tarfile.ReadError(f"malformed tar header: {exc}") from exc


def next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    """The next entry of ``tar`` (None at the end), dropping the list of entries read.

    Raises :class:`tarfile.TarError` for malformed data (including what
    tarfile's parsers let escape on hostile bytes) and
    :class:`TarHeaderLimitError`.
    """
    try:
        member = tar.next()
    except (ValueError, IndexError) as exc:
        raise tarfile.ReadError(f"malformed tar header: {exc}") from exc
    tar.members.clear()  # type: ignore[attr-defined]  # streaming: keep no headers
    return member
