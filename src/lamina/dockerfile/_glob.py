"""The ``${VAR#pattern}``, ``${VAR%pattern}`` and ``${VAR/pattern/...}`` matcher, in linear time.

BuildKit turns the shell pattern into a Go regular expression (``*`` is ``.*`` or
``.*?``, ``?`` is ``.``; RE2 runs in linear time). Python's backtracking ``re`` takes
O(n^(k+1)) for k stars on a value of n characters: ``${A/*a*a*b/x}`` on 1,000 ``a``
took 86 s. The same leftmost-first result is computed here from the pattern's literal
segments (the parts between stars):

* greedy: each star as long as possible, i.e. every segment at the latest place from
  which the rest still fits (found right to left with ``rfind``), the first segment at
  the leftmost place before that;
* lazy (``#`` and ``%``): every segment at its earliest place, left to right.

As with ``.`` in Go (and Python) regexps, ``?`` and ``*`` never match a newline, so a
match lies within one line. Patterns holding a literal newline (rare) keep the regex.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Glob", "compile_glob"]

#: one token of a segment: a literal character, or None for ``?``
_Token = str | None


class _Finder:
    """Occurrences of one segment in one value, within bounds."""

    __slots__ = ("_lit", "_n", "_rev", "_rrx", "_rx", "_value", "size")

    def __init__(self, seg: tuple[_Token, ...], value: str, reverse: Callable[[], str]) -> None:
        self.size = len(seg)
        self._value = value
        self._n = len(value)
        self._lit: str | None = None
        self._rx: re.Pattern[str] | None = None
        self._rrx: re.Pattern[str] | None = None
        self._rev = reverse
        if all(t is not None for t in seg):
            self._lit = "".join(t for t in seg if t is not None)
        else:
            self._rx = re.compile(_seg_regex(seg))
            self._rrx = re.compile(_seg_regex(tuple(reversed(seg))))

    def first(self, start: int, end: int) -> int | None:
        """The earliest p >= start with the segment in value[p:p+size], p+size <= end."""
        if start > end:
            return None
        if self._lit is not None:
            p = self._value.find(self._lit, start, end)
            return None if p < 0 else p
        assert self._rx is not None
        m = self._rx.search(self._value, start, end)
        return None if m is None else m.start()

    def last(self, start: int, end: int) -> int | None:
        """The latest such p."""
        if start > end:
            return None
        if self._lit is not None:
            p = self._value.rfind(self._lit, start, end)
            return None if p < 0 else p
        assert self._rrx is not None
        m = self._rrx.search(self._rev(), self._n - end, self._n - start)
        return None if m is None else self._n - m.start() - self.size


def _seg_regex(seg: tuple[_Token, ...]) -> str:
    return "".join("." if t is None else re.escape(t) for t in seg)


@dataclass(frozen=True, slots=True)
class Glob:
    """A parsed pattern: literal segments separated by stars."""

    segments: tuple[tuple[_Token, ...], ...]
    greedy: bool

    def _finders(self, value: str) -> list[_Finder]:
        cache: list[str] = []

        def reverse() -> str:
            if not cache:
                cache.append(value[::-1])
            return cache[0]

        return [_Finder(seg, value, reverse) for seg in self.segments]

    def prefix(self, value: str) -> int | None:
        """The end of the match anchored at 0 (None: no match)."""
        f = self._finders(value)
        nl = value.find("\n")
        line_end = len(value) if nl < 0 else nl
        if f[0].first(0, min(f[0].size, len(value))) != 0:
            return None
        if len(f) == 1:
            return f[0].size
        if not self.greedy:
            pos = f[0].size
            for finder in f[1:]:
                p = finder.first(pos, line_end)
                if p is None:
                    return None
                pos = p + finder.size
            return pos
        found = self._latest(f, 0, line_end)
        if found is None or found[0] < f[0].size:
            return None
        return found[1]

    @staticmethod
    def _latest(f: list[_Finder], start: int, line_end: int) -> tuple[int, int] | None:
        """(latest start of the second segment, match end) with every segment after the
        first at its latest place within [start, line_end)."""
        q = f[-1].last(start, line_end)
        if q is None:
            return None
        end = q + f[-1].size
        for finder in reversed(f[1:-1]):
            q = finder.last(start, q)
            if q is None:
                return None
        return q, end

    def _search_line(self, f: list[_Finder], start: int, line_end: int) -> tuple[int, int] | None:
        if len(f) == 1:
            p = f[0].first(start, line_end)
            return None if p is None else (p, p + f[0].size)
        found = self._latest(f, start, line_end)
        if found is None:
            return None
        s = f[0].first(start, found[0])
        return None if s is None else (s, found[1])

    def search_all(self, value: str) -> list[tuple[int, int]]:
        """Every match, left to right, as Python's ``re.sub`` finds them (an empty match
        is not repeated at the place the previous empty match was)."""
        f = self._finders(value)
        n = len(value)
        out: list[tuple[int, int]] = []
        pos, must_advance = 0, False
        while pos <= n:
            found = self._search_from(f, value, pos, must_advance)
            if found is None:
                break
            out.append(found)
            s, e = found
            pos, must_advance = e, s == e
        return out

    def search(self, value: str) -> tuple[int, int] | None:
        """The leftmost match."""
        return self._search_from(self._finders(value), value, 0, False)

    def _search_from(
        self, f: list[_Finder], value: str, pos: int, must_advance: bool
    ) -> tuple[int, int] | None:
        n = len(value)
        start = pos
        while start <= n:
            nl = value.find("\n", start)
            line_end = n if nl < 0 else nl
            found = self._search_line(f, start, line_end)
            if found is not None and must_advance and found == (pos, pos):
                # an empty match where the last one was: the next place instead
                found = self._search_line(f, pos + 1, line_end) if pos + 1 <= line_end else None
            if found is not None:
                return found
            if nl < 0:
                return None
            start = nl + 1
        return None


@functools.lru_cache(maxsize=512)
def compile_glob(tokens: tuple[tuple[str, str], ...], *, greedy: bool) -> Glob | None:
    """A :class:`Glob` from ``(kind, char)`` tokens (``star``, ``any``, ``lit``); None
    when a literal newline makes the line-by-line reasoning wrong (use the regex)."""
    segments: list[tuple[_Token, ...]] = []
    current: list[_Token] = []
    for kind, ch in tokens:
        if kind == "star":
            segments.append(tuple(current))
            current = []
        elif kind == "any":
            current.append(None)
        else:
            if ch == "\n":
                return None
            current.append(ch)
    segments.append(tuple(current))
    return Glob(segments=tuple(segments), greedy=greedy)
