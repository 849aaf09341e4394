"""``.dockerignore`` with moby's patternmatcher semantics (not gitignore's)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from lamina.errors import DockerfileError, SourceLocation

__all__ = [
    "IgnorePattern",
    "IgnoreRules",
    "dockerignore_candidates",
    "files_read_despite_ignore",
    "parse_dockerignore",
]

_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exact", "prefix", "suffix", "regexp"
_SHOULD_ESCAPE = frozenset(".+()|{}$")
_META = frozenset("*?[\\")


def _go_clean(path: str) -> str:
    """Go's ``path.Clean``."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnorePattern:
    """One compiled pattern line."""

    pattern: str
    exclusion: bool
    match_type: str
    regex: re.Pattern[str] | None
    line: int

    def match(self, path: str) -> bool:
        if self.match_type == _EXACT:
            return path == self.pattern
        if self.match_type == _PREFIX:
            return path.startswith(self.pattern[:-2])
        if self.match_type == _SUFFIX:
            suffix = self.pattern[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
    out = ["^"]
    mtype = _EXACT
    i = 0
    n = len(pattern)
    first = True
    in_class = False
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if mtype == _EXACT:
                        mtype = _PREFIX
                    else:
                        out.append(".*")
                        mtype = _REGEXP
                else:
                    out.append("(.*/)?")
                    mtype = _REGEXP
                if first:
                    mtype = _SUFFIX
            else:
                # moby emits "[^/]*" even inside an open class, where Go's regexp reads
                # its "[" as a literal; escaping it keeps that meaning without Python's
                # nested-set FutureWarning. Its "]" closes the class, as in Go.
                out.append("\\[^/]*" if in_class else "[^/]*")
                in_class = False
                mtype = _REGEXP
        elif ch == "?":
            out.append("\\[^/]" if in_class else "[^/]")
            in_class = False
            mtype = _REGEXP
        elif ch in _SHOULD_ESCAPE:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
                mtype = _REGEXP
            else:
                out.append("\\\\")
        elif ch == "[" and in_class:
            out.append("\\[")
        elif ch in "[]":
            in_class = ch == "["
            out.append(ch)
            mtype = _REGEXP
        else:
            out.append(re.escape(ch))
        first = False
    if mtype != _REGEXP:
        return mtype, None
    out.append("$")
    return mtype, re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoreRules:
    """The patterns of one ``.dockerignore``, in order (the last matching line wins)."""

    patterns: tuple[IgnorePattern, ...]
    filename: str = ".dockerignore"

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """True when ``path`` (posix, relative to the context root) is ignored.

        Like moby's ``MatchesOrParentMatches``: a pattern matching a parent directory
        ignores everything below it unless a later ``!`` pattern re-includes it.
        """
        path = _go_clean(path).lstrip("/") or "."
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            hit = pat.match(path)
            if not hit and parent != ".":
                for i in range(len(parent_dirs)):
                    if pat.match("/".join(parent_dirs[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pat.exclusion
        return matched

    def can_skip_dir(self, path: str) -> bool:
        """True when the directory ``path`` is ignored and nothing below it can be re-included.

        Conservative: a ``!`` pattern whose literal leading components are compatible
        with ``path`` (or which starts with a wildcard) keeps the directory walked.
        """
        if not self.matches(path):
            return False
        parts = _go_clean(path).lstrip("/").split("/")
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            pparts = pat.pattern.split("/")
            for a, b in zip(parts, pparts, strict=False):
                if any(c in _META for c in b):
                    return False
                if a != b:
                    break
            else:
                return False
        return True


def parse_dockerignore(text: str | bytes, *, filename: str = ".dockerignore") -> IgnoreRules:
    """Parse ``.dockerignore`` text (moby's ``ignorefile.ReadAll`` + ``patternmatcher.New``)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    patterns: list[IgnorePattern] = []
    for lineno, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        loc = SourceLocation(file=filename, line=lineno, text=line)
        if invert and not pattern:
            raise DockerfileError(
                'illegal exclusion pattern: "!"',
                hint="write !<pattern> to re-include files, or remove the line",
                location=loc,
            )
        try:
            mtype, regex = _compile(pattern)
        except re.error as exc:
            raise DockerfileError(
                f"syntax error in pattern {pattern!r}: {exc}",
                hint="escape [ and ] with \\ when they are literal",
                location=loc,
            ) from None
        patterns.append(
            IgnorePattern(
                pattern=pattern, exclusion=invert, match_type=mtype, regex=regex, line=lineno
            )
        )
    return IgnoreRules(patterns=tuple(patterns), filename=filename)


def dockerignore_candidates(dockerfile_name: str) -> list[str]:
    """Ignore files to look for, in order: ``<Dockerfile>.dockerignore``, then ``.dockerignore``.

    The first that exists is used alone (they are not merged).
    """
    name = dockerfile_name.rstrip("/")
    out = []
    if name and name not in (".", "-"):
        out.append(name + ".dockerignore")
    out.append(".dockerignore")
    return out


def files_read_despite_ignore(dockerfile_name: str) -> frozenset[str]:
    """Files the builder still reads even when ``.dockerignore`` excludes them.

    The Dockerfile and the ignore files are always sent to the builder (moby/BuildKit
    rule), but stay invisible to COPY/ADD when they match a pattern.
    """
    return frozenset({_go_clean(dockerfile_name), *dockerignore_candidates(dockerfile_name)})
