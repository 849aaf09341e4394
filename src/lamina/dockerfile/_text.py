"""Small text helpers with Go semantics (whitespace classes, ``strconv.Quote``)."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["go_isspace", "go_lstrip", "go_quote", "go_strip", "suggest"]

# Go's unicode.IsSpace: \t \n \v \f \r, space, U+0085, U+00A0 and the Unicode
# White_Space property (Zs, U+2028, U+2029).  Python's str.isspace() also accepts
# U+001C..U+001F, so an explicit set is used.
_GO_SPACE_CHARS = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
GO_SPACE = frozenset(_GO_SPACE_CHARS)
_SPACE_CLASS = "[" + re.escape(_GO_SPACE_CHARS) + "]"
_LEADING_SPACE = re.compile("^" + _SPACE_CLASS + "+")
_TRAILING_SPACE = re.compile(_SPACE_CLASS + "+$")
SPACE_CLASS = _SPACE_CLASS

_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}
# characters that go_quote can copy as they are (a fast path for plain text)
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def go_isspace(ch: str) -> bool:
    """Go's ``unicode.IsSpace`` for one character."""
    return ch in GO_SPACE


def go_lstrip(s: str) -> str:
    """Go's ``strings.TrimLeftFunc(s, unicode.IsSpace)``."""
    if not s or s[0] not in GO_SPACE:
        return s
    m = _LEADING_SPACE.match(s)
    return s[m.end() :] if m else s


def go_strip(s: str) -> str:
    """Go's ``strings.TrimSpace``."""
    if not s or (s[0] not in GO_SPACE and s[-1] not in GO_SPACE):
        return s
    s = go_lstrip(s)
    m = _TRAILING_SPACE.search(s)
    return s[: m.start()] if m else s


def _is_printable(ch: str) -> bool:
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``.

    ``s`` may hold lone surrogates U+DC80..U+DCFF standing for undecodable bytes
    (``surrogateescape``); they are rendered as ``\\xHH`` like Go renders invalid
    UTF-8 bytes.
    """
    if _PLAIN.fullmatch(s):
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        cp = ord(ch)
        if 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif 0xD800 <= cp <= 0xDFFF:
            # a lone surrogate is not valid UTF-8 for Go: it prints U+FFFD
            out.append("\\ufffd")
        elif _is_printable(ch):
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def _distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(word: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The closest candidate to ``word`` (case-insensitive), if it is close enough."""
    low = word.lower()
    best: tuple[int, str] | None = None
    for cand in candidates:
        d = _distance(low, cand.lower())
        if best is None or d < best[0]:
            best = (d, cand)
    if best is None:
        return None
    limit = max(1, min(3, len(word) // 3 + 1))
    return best[1] if best[0] <= limit else None
