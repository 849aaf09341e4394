"""Cache keys: a pure function of explicit inputs, and the explanation of a miss.

A step's key is the SHA-256 of a canonical JSON document holding exactly:

* ``parent``: the previous step's key (the first step of a stage starts from the base
  image's manifest digest, or the key of the stage it is built ``FROM``);
* ``instruction``: the instruction after variable expansion, with its flags;
* ``args``: the build arguments and environment variables the step can see *and uses*
  (an unused ``--build-arg`` never changes a key), each as ``[name, sha256:<digest of
  the value>]``: the document is stored in cache entries (a label), so a value (a token
  passed as ``--build-arg``) never appears in it, and a miss still names the arg that
  changed;
* ``sources``: for COPY/ADD, one entry per source file after ``.dockerignore``: its path
  relative to the context (or the source stage's root), type, mode, owner and content
  digest (a symlink's target) — never its mtime or its absolute location;
* ``platform``: ``os/arch[/variant]``.

Nothing else (no clock, hostname, absolute path or Python version) enters a key, so the
same inputs give the same key on every machine. Because every input is named,
:func:`explain_miss` can say which one changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import FilesystemError, ImageFormatError

__all__ = [
    "KeyInputs",
    "SourceEntry",
    "cache_key",
    "explain_miss",
    "hash_sources",
    "value_digest",
]

#: bump when the key document changes shape: old keys then simply miss
#: (2: argument values are digests, the document is ASCII JSON)
KEY_VERSION = 2
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceEntry:
    """One file a COPY/ADD step reads."""

    #: posix path relative to the source root (context or stage root)
    path: str
    #: ``file``, ``dir``, ``symlink`` or ``other``
    type: str
    #: permission bits incl. setuid/setgid/sticky
    mode: int
    uid: int
    gid: int
    #: ``sha256:<hex>`` of a file's bytes, a symlink's target, "" for directories
    content: str

    def as_json(self) -> list[object]:
        return [self.path, self.type, self.mode, self.uid, self.gid, self.content]


def value_digest(value: str) -> str:
    """``sha256:<hex>`` of an argument's value (its bytes as given, invalid UTF-8 too)."""
    raw = value.encode("utf-8", errors="surrogateescape")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Digests(dict[str, str]):
    """Argument values already replaced by their digests (read back from a document)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInputs:
    """The inputs of one key. ``args`` may be given as plain values: they are kept
    as their :func:`value_digest` only (the value itself is never stored)."""

    parent: str
    instruction: str
    platform: str
    #: name -> ``sha256:<digest of the value>``
    args: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[SourceEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.args, _Digests):
            digests = _Digests({k: value_digest(v) for k, v in self.args.items()})
            object.__setattr__(self, "args", digests)

    def document(self) -> bytes:
        doc = {
            "v": KEY_VERSION,
            "parent": self.parent,
            "instruction": self.instruction,
            "platform": self.platform,
            "args": sorted([k, v] for k, v in self.args.items()),
            "sources": [s.as_json() for s in sorted(self.sources, key=lambda s: s.path)],
        }
        # ASCII JSON: text that is not valid UTF-8 (surrogate escapes) stays representable
        return json.dumps(doc, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_document(cls, data: bytes) -> KeyInputs:
        """The inputs whose :meth:`document` is ``data`` (the inverse of :meth:`document`).

        Raises :class:`~lamina.errors.ImageFormatError` for anything that is not a
        document of this :data:`KEY_VERSION` (a cache entry written by another version).
        """
        try:
            doc = json.loads(data.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("v") != KEY_VERSION:
                raise ValueError(f"not a version {KEY_VERSION} key document")
            parent, instruction, platform = doc["parent"], doc["instruction"], doc["platform"]
            if not all(isinstance(x, str) for x in (parent, instruction, platform)):
                raise ValueError("parent, instruction and platform must be strings")
            args = _Digests()
            for pair in doc["args"]:
                k, v = pair
                if not isinstance(k, str) or not isinstance(v, str):
                    raise ValueError("args must be [name, digest] string pairs")
                args[k] = v
            sources: list[SourceEntry] = []
            for item in doc["sources"]:
                path, kind, mode, uid, gid, content = item
                if not (
                    isinstance(path, str)
                    and isinstance(kind, str)
                    and isinstance(content, str)
                    and all(type(n) is int for n in (mode, uid, gid))
                ):
                    raise ValueError(f"malformed source entry {item!r}")
                sources.append(
                    SourceEntry(path=path, type=kind, mode=mode, uid=uid, gid=gid, content=content)
                )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ImageFormatError(
                f"invalid cache key document: {exc}",
                hint="the cache entry was written by another lamina version; it is ignored",
            ) from None
        return cls(
            parent=parent,
            instruction=instruction,
            platform=platform,
            args=args,
            sources=tuple(sources),
        )


def cache_key(inputs: KeyInputs) -> str:
    """The key (64 lower-case hex digits), a valid tag for ``<cache-repo>:<key>``."""
    return hashlib.sha256(inputs.document()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def hash_sources(root: Path, paths: Iterable[str]) -> tuple[SourceEntry, ...]:
    """Describe ``paths`` (posix, relative to ``root``) for a key; directories are walked.

    Symlinks are described, never followed. Entries come out sorted by path.
    """
    entries: dict[str, SourceEntry] = {}

    def add(rel: str) -> None:
        full = root / rel
        try:
            st = full.lstat()
        except OSError as exc:
            raise FilesystemError(
                f"cannot read {full} for the cache key: {exc.strerror}",
                hint="the file changed or vanished during the build",
            ) from exc
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            kind, content = "symlink", os.readlink(full)
        elif stat.S_ISDIR(st.st_mode):
            kind, content = "dir", ""
        elif stat.S_ISREG(st.st_mode):
            try:
                kind, content = "file", _file_digest(full)
            except OSError as exc:
                raise FilesystemError(
                    f"cannot read {full} for the cache key: {exc.strerror}",
                    hint="check the file's permissions",
                ) from exc
        else:
            kind, content = "other", ""
        entries[rel] = SourceEntry(
            path=rel, type=kind, mode=mode, uid=st.st_uid, gid=st.st_gid, content=content
        )
        if kind == "dir":
            for child in sorted(os.listdir(full)):
                add(f"{rel}/{child}" if rel not in ("", ".") else child)

    for p in paths:
        add(p.strip("/") or ".")
    return tuple(entries[k] for k in sorted(entries))


def explain_miss(previous: KeyInputs, current: KeyInputs) -> str:
    """Say which input differs between the nearest known key's inputs and this step's."""
    reasons: list[str] = []
    if previous.parent != current.parent:
        reasons.append("an earlier step or the base image changed")
    if previous.instruction != current.instruction:
        reasons.append("the instruction changed")
    if previous.platform != current.platform:
        reasons.append(f"platform changed ({previous.platform} -> {current.platform})")
    for name in sorted(set(previous.args) | set(current.args)):
        if name not in previous.args:
            reasons.append(f"build arg {name} is new")
        elif name not in current.args:
            reasons.append(f"build arg {name} is no longer set")
        elif previous.args[name] != current.args[name]:
            reasons.append(f"build arg {name} changed")
    old = {s.path: s for s in previous.sources}
    new = {s.path: s for s in current.sources}
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is None:
            reasons.append(f"source file {path} was added")
        elif b is None:
            reasons.append(f"source file {path} was removed")
        elif a.content != b.content or a.type != b.type:
            reasons.append(f"source file {path} changed")
        elif a.mode != b.mode:
            reasons.append(f"mode of source file {path} changed ({a.mode:o} -> {b.mode:o})")
        elif (a.uid, a.gid) != (b.uid, b.gid):
            reasons.append(f"owner of source file {path} changed")
    if not reasons:
        return "no input differs from the nearest known key (the cache entry is missing)"
    shown = reasons[:5]
    more = f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else ""
    return "; ".join(shown) + more
