"""A build context (or any source tree) in a local directory."""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lamina.context._files import read_context_text
from lamina.context._match import glob_regex, has_glob
from lamina.dockerfile import IgnoreRules, dockerignore_candidates, parse_dockerignore
from lamina.errors import ContextError, SourceLocation

__all__ = ["ContextSource", "LocalContext", "SourceKind", "TreeEntry"]

SourceKind = Literal["file", "dir", "symlink", "other"]
_MAX_SYMLINKS = 40


def _kind(st: os.stat_result) -> SourceKind:
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextSource:
    """One resolved COPY/ADD source.

    ``path`` is relative to the tree's root (``""`` for the root itself),
    ``host`` the path on this machine (never outside the root), ``kind`` what
    it is. A symlink source is followed when its target lies inside the root
    (``host`` is then the target); one pointing outside stays a link.
    """

    path: str
    host: Path
    kind: SourceKind


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeEntry:
    """One entry below a directory source: ``rel`` is relative to that source."""

    rel: str
    host: Path
    st: os.stat_result


class LocalContext:
    """A directory used as a source of files: the build context or a stage's rootfs.

    Every path is resolved inside ``root`` as if it were ``/``: ``..`` in a
    source is refused, symlinks along the way are followed inside the root
    only (an absolute target restarts at the root), a source that is itself a
    symlink is returned as a link. ``ignore`` (``.dockerignore``) hides paths.
    """

    def __init__(
        self, root: Path, ignore: IgnoreRules | None = None, *, name: str = "build context"
    ) -> None:
        self.root = Path(root)
        self.ignore = ignore if ignore is not None and ignore.patterns else None
        self.name = name

    @classmethod
    def open(cls, root: Path, *, dockerfile: Path | None = None) -> LocalContext:
        """The context at ``root`` with its ``.dockerignore`` (or ``<Dockerfile>.dockerignore``)."""
        if not root.is_dir():
            raise ContextError(
                f"the build context {root} is not a directory",
                hint="pass an existing directory with --context",
            )
        names = dockerignore_candidates(dockerfile.name if dockerfile is not None else "")
        candidates = [
            root / n if dockerfile is None or n == ".dockerignore" else dockerfile.with_name(n)
            for n in names
        ]
        for candidate in candidates:
            found = read_context_text(root, candidate, what=".dockerignore")
            if found is not None:
                return cls(root, parse_dockerignore(found[0], filename=str(candidate)))
        return cls(root)

    # ----------------------------------------------------------------- resolution

    def _error(self, message: str, hint: str, location: SourceLocation | None) -> ContextError:
        return ContextError(message, hint=hint, location=location)

    def _clean(self, source: str, location: SourceLocation | None) -> list[str]:
        parts: list[str] = []
        for part in source.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not parts:
                    raise self._error(
                        f"the source {source!r} is outside the {self.name}",
                        "COPY and ADD can only use files inside the build context; "
                        "move the file into it or change --context",
                        location,
                    )
                parts.pop()
                continue
            parts.append(part)
        return parts

    def _resolve_dir(self, parts: list[str], source: str) -> Path | None:
        """Host path of the directory ``parts`` (symlinks followed inside the root)."""
        pending = list(reversed(parts))
        resolved: list[str] = []
        followed = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            if part in ("", "."):
                continue
            host = Path(self.root, *resolved, part)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise ContextError(
                    f"cannot read {host} in the {self.name}: {exc.strerror}",
                    hint="check the permissions of the build context",
                ) from exc
            if stat.S_ISLNK(st.st_mode):
                followed += 1
                if followed > _MAX_SYMLINKS:
                    raise ContextError(
                        f"too many levels of symbolic links resolving {source!r}",
                        hint="a symlink loop in the build context",
                    )
                target = os.readlink(host)
                if target.startswith("/"):
                    resolved = []
                pending.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                return None
            resolved.append(part)
        return Path(self.root, *resolved)

    def _lstat(self, host: Path) -> os.stat_result | None:
        try:
            return os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ContextError(
                f"cannot read {host} in the {self.name}: {exc.strerror}",
                hint="check the permissions of the build context",
            ) from exc

    def _follow(self, link: Path) -> tuple[Path, os.stat_result] | None:
        """Where the symlink ``link`` leads inside the root (as if the root were ``/``).

        ``None`` when it dangles there: its target is outside the root or missing.
        """
        host = link
        for _ in range(_MAX_SYMLINKS):
            target = os.readlink(host)
            base = [] if target.startswith("/") else list(host.parent.relative_to(self.root).parts)
            parts = [*base, *target.split("/")]
            name = next((p for p in reversed(parts) if p not in ("", ".")), None)
            if name is None or name == "..":
                parent = self._resolve_dir(parts, target)
                return None if parent is None else (parent, os.lstat(parent))
            while parts and parts[-1] in ("", "."):
                parts.pop()
            parent = self._resolve_dir(parts[:-1], target)
            if parent is None:
                return None
            host = parent / parts[-1]
            st = self._lstat(host)
            if st is None:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return host, st
        raise ContextError(
            f"too many levels of symbolic links resolving {link}",
            hint="a symlink loop in the build context",
        )

    def _source(self, rel_parts: list[str], parent: Path) -> ContextSource | None:
        """The named source; a symlink is followed as BuildKit does when its target
        lies inside the root, and otherwise copied as a link (never followed out)."""
        host = parent / rel_parts[-1] if rel_parts else parent
        st = self._lstat(host)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            followed = self._follow(host)
            if followed is not None:
                host, st = followed
        return ContextSource(path="/".join(rel_parts), host=host, kind=_kind(st))

    def is_ignored(self, path: str) -> bool:
        return self.ignore is not None and self.ignore.matches(path)

    def resolve(
        self, source: str, *, location: SourceLocation | None = None
    ) -> list[ContextSource]:
        """The sources a COPY/ADD source (literal path or glob) names, sorted.

        A missing literal path (or one hidden by ``.dockerignore``) is a
        :class:`ContextError` naming it and the Dockerfile line; a glob that
        matches nothing gives an empty list (as BuildKit).
        """
        parts = self._clean(source, location)
        if not any(has_glob(p) for p in parts):
            return [self._literal(source, parts, location)]
        return self._glob(source, parts)

    def _literal(
        self, source: str, parts: list[str], location: SourceLocation | None
    ) -> ContextSource:
        parent = self._resolve_dir(parts[:-1], source) if parts else self.root
        found = self._source(parts, parent) if parent is not None else None
        if found is None:
            raise self._error(
                f"{source!r} not found in the {self.name}",
                f"check the path (it is relative to the root of the {self.name})",
                location,
            )
        if self.is_ignored(found.path):
            raise self._error(
                f"{source!r} is excluded from the {self.name} by .dockerignore",
                "remove the matching pattern from .dockerignore, or add an exception (!path)",
                location,
            )
        return found

    def _glob(self, source: str, parts: list[str]) -> list[ContextSource]:
        matches: list[ContextSource] = []
        prefixes: list[list[str]] = [[]]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            new: list[list[str]] = []
            for prefix in prefixes:
                if not has_glob(part):
                    new.append([*prefix, part])
                    continue
                directory = self._resolve_dir(prefix, source)
                if directory is None:
                    continue
                try:
                    regex = re.compile("^" + glob_regex(part) + "$", re.DOTALL)
                except (ValueError, re.error) as exc:
                    raise ContextError(
                        f"invalid pattern {source!r}: {exc}",
                        hint="sources follow Go filepath.Match syntax; escape '[' as '[[]'",
                    ) from exc
                try:
                    names = sorted(os.listdir(directory))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                except OSError as exc:
                    raise ContextError(
                        f"cannot list {directory}: {exc.strerror}",
                        hint="check the permissions of the build context",
                    ) from exc
                new.extend([*prefix, name] for name in names if regex.match(name))
            prefixes = new
            if last:
                for rel in prefixes:
                    parent = self._resolve_dir(rel[:-1], source)
                    if parent is None:
                        continue
                    found = self._source(rel, parent)
                    if found is not None and not self.is_ignored(found.path):
                        matches.append(found)
        return sorted(matches, key=lambda s: s.path)

    # -------------------------------------------------------------------- walking

    def walk(self, source: ContextSource) -> Iterator[TreeEntry]:
        """Entries below the directory ``source`` (pre-order, sorted, symlinks not followed).

        Paths hidden by ``.dockerignore`` are skipped (a hidden directory is
        still entered when an exception rule may re-include something in it).
        """
        stack: list[tuple[Path, str]] = [(source.host, "")]
        while stack:
            directory, rel_dir = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name, reverse=True)
            except OSError as exc:
                raise ContextError(
                    f"cannot list {directory} in the {self.name}: {exc.strerror}",
                    hint="check the permissions of the build context",
                ) from exc
            # reverse-sorted onto a stack, so we pop in sorted order: emit depth-first
            pending: list[tuple[Path, str]] = []
            out: list[TreeEntry] = []
            for entry in reversed(entries):
                rel = posixpath.join(rel_dir, entry.name) if rel_dir else entry.name
                ctx_rel = posixpath.join(source.path, rel) if source.path else rel
                host = Path(entry.path)
                try:
                    st = os.lstat(host)
                except OSError as exc:
                    raise ContextError(
                        f"cannot read {host} in the {self.name}: {exc.strerror}",
                        hint="check the permissions of the build context",
                    ) from exc
                ignored = self.is_ignored(ctx_rel)
                is_dir = stat.S_ISDIR(st.st_mode)
                if not ignored:
                    out.append(TreeEntry(rel=rel, host=host, st=st))
                if is_dir and (
                    not ignored
                    or (self.ignore is not None and not self.ignore.can_skip_dir(ctx_rel))
                ):
                    pending.append((host, rel))
            yield from out
            stack.extend(reversed(pending))
