"""The records describing what a build step changed in the rootfs."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import PurePosixPath

from lamina.errors import FilesystemError

__all__ = ["Change", "ChangeKind", "normalise_changes"]


class ChangeKind(enum.Enum):
    """What happened to one path."""

    #: the entry at the path was created or modified (one entry, not its subtree)
    ADD = "add"
    #: the path (and its subtree) was deleted: a ``.wh.NAME`` whiteout
    DELETE = "delete"
    #: the directory at the path is added and hides every lower entry below it:
    #: the directory entry plus a ``.wh..wh..opq`` marker
    OPAQUE = "opaque"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One changed in-image path (absolute, normalised: ``/etc/passwd``)."""

    kind: ChangeKind
    path: PurePosixPath

    @classmethod
    def add(cls, path: str | PurePosixPath) -> Change:
        return cls(kind=ChangeKind.ADD, path=_abs(path))

    @classmethod
    def delete(cls, path: str | PurePosixPath) -> Change:
        return cls(kind=ChangeKind.DELETE, path=_abs(path))

    @classmethod
    def opaque(cls, path: str | PurePosixPath) -> Change:
        return cls(kind=ChangeKind.OPAQUE, path=_abs(path))


def _abs(path: str | PurePosixPath) -> PurePosixPath:
    parts = [p for p in str(path).split("/") if p and p != "."]
    if ".." in parts:
        raise FilesystemError(
            f"the in-image path {str(path)!r} contains '..'",
            hint="changes name absolute, normalised paths inside the image",
        )
    return PurePosixPath("/", *parts)


def normalise_changes(changes: list[Change]) -> list[Change]:
    """Deduplicate and drop deletions made redundant by a deleted ancestor.

    An ``ADD`` and a ``DELETE`` of the same path keep the last one; an
    ``OPAQUE`` wins over an ``ADD`` of the same directory. The order of the
    result is unspecified (the tar writer sorts).
    """
    by_path: dict[PurePosixPath, Change] = {}
    for ch in changes:
        prev = by_path.get(ch.path)
        if prev is not None and prev.kind is ChangeKind.OPAQUE and ch.kind is ChangeKind.ADD:
            continue
        by_path[ch.path] = ch
    deleted = {p for p, ch in by_path.items() if ch.kind is ChangeKind.DELETE}
    out: list[Change] = []
    for p, ch in by_path.items():
        if ch.kind is ChangeKind.DELETE and any(a in deleted for a in p.parents):
            continue
        out.append(ch)
    return out
