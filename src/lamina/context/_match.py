"""Go ``filepath.Match`` globs as regular expressions (COPY/ADD sources)."""

from __future__ import annotations

import re

__all__ = ["glob_regex", "has_glob"]

_META = frozenset("*?[\\")


def has_glob(pattern: str) -> bool:
    """True when ``pattern`` contains a ``filepath.Match`` metacharacter."""
    return any(c in _META for c in pattern)


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the ``[...]`` class starting at ``pattern[i] == '['``; return (regex, next)."""
    j = i + 1
    out = ["["]
    if j < len(pattern) and pattern[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < len(pattern):
        c = pattern[j]
        if c == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        if c == "\\" and j + 1 < len(pattern):
            j += 1
            c = pattern[j]
        if c == "/":
            raise ValueError("'/' in a character class")
        out.append(re.escape(c) if c not in "-" else "-")
        first = False
        j += 1
    raise ValueError("unterminated character class")


def glob_regex(pattern: str, *, double_star: bool = False) -> str:
    """The regex (without anchors) for a Go ``filepath.Match`` pattern.

    ``*`` and ``?`` never match ``/``; ``\\`` escapes the next character. With
    ``double_star`` (``.dockerignore``), ``**`` matches any number of
    directories, including none. Raises ``ValueError`` for a malformed pattern.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if double_star and pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls, i = _class(pattern, i)
            out.append(cls)
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
