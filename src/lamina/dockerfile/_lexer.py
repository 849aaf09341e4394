"""The shell-word lexer: quote removal, escapes and ``$VAR`` expansion as BuildKit does it.

This is a port of the *behaviour* of BuildKit's ``frontend/dockerfile/shell`` lexer:
single words (``expand_word``) or whitespace-split words (``expand_words``), the
``${VAR<modifier>}`` forms, and the sets of variables that were (not) found.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lamina.errors import DockerfileError

from ._glob import compile_glob
from ._text import GO_SPACE

__all__ = [
    "MAX_EXPANSION",
    "MAX_NESTING",
    "Expansion",
    "ShellLex",
    "ShellSyntaxError",
    "expand_word",
    "expand_words",
]

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_EOF = ""


#: how many characters variable substitution may add to one word (or, through
#: :attr:`Expansion.substituted`, one instruction): ``ARG A=${A}${A}`` doubled 20 times
#: would otherwise build a 1 GiB value (literal text is not counted: a large heredoc
#: body stays fine)
MAX_EXPANSION = 1 << 20
#: how deeply ``${A:-${B:-...}}`` may nest (the scanner recurses per level)
MAX_NESTING = 64


class ShellSyntaxError(DockerfileError):
    """A word could not be expanded (bad ``${...}``, unterminated quote, ``${X:?msg}``)."""


class _TooLargeError(ShellSyntaxError):
    """An expansion past :data:`MAX_EXPANSION` or :data:`MAX_NESTING`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Expansion:
    """The result of expanding one word."""

    result: str
    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]
    #: characters the substitutions added (counted against :data:`MAX_EXPANSION`)
    substituted: int = 0


class _Words:
    """Words being split at unquoted whitespace, built from slices (joined once per
    word), never one character at a time: expanding a 1 MiB value stays linear."""

    __slots__ = ("parts", "words")

    def __init__(self) -> None:
        self.parts: list[str] = []  # the pieces of the word being built
        self.words: list[str] = []

    def _end_word(self) -> None:
        if self.parts:
            word = "".join(self.parts)
            self.parts.clear()
            if word:
                self.words.append(word)

    def add_char(self, ch: str) -> None:
        if ch in GO_SPACE:
            self._end_word()
        else:
            self.parts.append(ch)

    def add_raw_char(self, ch: str) -> None:
        self.parts.append(ch)

    def add_string(self, s: str) -> None:
        """``s`` (an expanded value): split at its whitespace runs."""
        pieces = _SPACE_RUN.split(s)
        if pieces[0]:
            self.parts.append(pieces[0])
        for piece in pieces[1:]:
            self._end_word()
            if piece:
                self.parts.append(piece)

    def add_raw_string(self, s: str) -> None:
        self.parts.append(s)

    def get(self) -> list[str]:
        self._end_word()
        return self.words


def _is_name_char(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdecimal()


class _Scanner:
    """One expansion run over one word (BuildKit's ``shellWord``)."""

    __slots__ = (
        "budget",
        "depth",
        "env",
        "escape",
        "matched",
        "pos",
        "raw_escapes",
        "raw_quotes",
        "skip_process_quotes",
        "skip_unset",
        "src",
        "unmatched",
    )

    def __init__(self, src: str, env: Mapping[str, str], lex: ShellLex, budget: int) -> None:
        self.src = src
        self.pos = 0
        #: how many characters substitutions may still add (see MAX_EXPANSION)
        self.budget = budget
        self.depth = 0
        self.env = env
        self.escape = lex.escape
        self.raw_quotes = lex.raw_quotes
        self.raw_escapes = lex.raw_escapes
        self.skip_unset = lex.skip_unset_env
        self.skip_process_quotes = lex.skip_process_quotes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- scanner primitives -------------------------------------------------
    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF

    def spend(self, size: int) -> None:
        """Account for ``size`` characters a substitution adds; too many is an error."""
        self.budget -= size
        if self.budget < 0:
            raise _TooLargeError(
                f"variable expansion makes the word larger than {MAX_EXPANSION // (1 << 20)} MiB"
            )

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is not None:
            self.matched.add(name)
            self.spend(len(value))
            return value, True
        self.unmatched.add(name)
        return "", False

    # -- the grammar ----------------------------------------------------------
    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _TooLargeError(f"${{...}} nested more than {MAX_NESTING} levels deep")
        try:
            while self.pos < len(self.src):
                ch = self.src[self.pos]
                if stop and ch == stop:
                    self.pos += 1
                    return "".join(result), words.get()
                if ch == "$":
                    tmp = self.process_dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif not self.skip_process_quotes and ch in "'\"":
                    tmp = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                else:
                    self.pos += 1
                    if ch == self.escape:
                        if self.raw_escapes:
                            words.add_raw_char(ch)
                            result.append(ch)
                        ch = self.next()
                        if ch == _EOF:
                            break
                        words.add_raw_char(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
        finally:
            self.raw_escapes = saved
            self.depth -= 1
        if stop:
            raise ShellSyntaxError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def process_single_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        end = self.src.find("'", self.pos)
        if end < 0:
            raise ShellSyntaxError(
                "unexpected end of statement while looking for matching single-quote"
            )
        result.append(self.src[self.pos : end])
        self.pos = end + 1
        if self.raw_quotes:
            result.append("'")
        return "".join(result)

    def process_double_quote(self) -> str:
        result: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            result.append(ch)
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise ShellSyntaxError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if ch == '"':
                self.pos += 1
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.process_dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                nxt = self.peek()
                if nxt == _EOF:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            result.append(ch)

    def process_name(self) -> str:
        src = self.src
        start = self.pos
        if start >= len(src):
            return ""
        ch = src[start]
        if ch.isdecimal():
            end = start
            while end < len(src) and src[end].isdecimal():
                end += 1
            self.pos = end
            return src[start:end]
        if ch in _SPECIAL_PARAMS:
            self.pos += 1
            return ch
        end = start
        while end < len(src) and _is_name_char(src[end]):
            end += 1
        self.pos = end
        return src[start:end]

    def process_dollar(self) -> str:
        self.pos += 1  # the '$'
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.pos += 1  # the '{'
        ch = self.peek()
        if ch == _EOF:
            raise ShellSyntaxError("syntax error: missing '}'")
        if ch in "{}:":
            raise ShellSyntaxError("syntax error: bad substitution")
        name = self.process_name()
        ch = self.next()
        chs = ch
        null_is_unset = False
        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            chs += ch
        if null_is_unset or ch in ("+", "-", "?", "#", "%"):
            return self._modifier(name, ch, chs, null_is_unset)
        if ch == "/":
            return self._replace(name)
        raise ShellSyntaxError(f"unsupported modifier ({chs}) in substitution")

    def _word_until(self, stop: str, raw_escapes: bool, missing: str) -> str:
        """The word up to ``stop``; running into the end of input is ``missing``."""
        try:
            word, _ = self.process_stop_on(stop, raw_escapes)
        except ShellSyntaxError:
            if self.peek() == _EOF:
                raise ShellSyntaxError(missing) from None
            raise
        return word

    def _modifier(self, name: str, ch: str, chs: str, null_is_unset: bool) -> str:
        raw = ch in ("#", "%")
        if null_is_unset and raw:
            raise ShellSyntaxError(f"unsupported modifier ({chs}) in substitution")
        word = self._word_until("}", raw, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.skip_unset and not found:
            return "${" + name + chs + word + "}"
        if ch == "-":
            if not found or (null_is_unset and not value):
                return word
            return value
        if ch == "+":
            if not found or (null_is_unset and not value):
                return ""
            return word
        if ch == "?":
            if not found:
                raise ShellSyntaxError(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and not value:
                raise ShellSyntaxError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            greedy = False
            if word.startswith(ch):
                greedy = True
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise ShellSyntaxError(f"unsupported modifier ({chs}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        pattern = self._word_until("/", True, "syntax error: missing '/' in ${}")
        replacement = self._word_until("}", True, "syntax error: missing '}'")
        value, found = self.get_env(name)
        if self.skip_unset and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        tokens = _pattern_tokens(pattern)
        stars = sum(1 for kind, _ in tokens if kind == "star")
        glob = compile_glob(tokens, greedy=True) if stars else None
        spans: list[tuple[int, int]]
        if glob is None:
            # no star: the regex cannot backtrack far (else a literal newline: rare)
            _check_backtracking(pattern, value, stars)
            rx = _pattern_to_regex(pattern, greedy=True, anchored=False)
            if replace_all and not stars and "$" not in replacement:
                # every match has the pattern's length: count first, then let C replace
                count = len(rx.findall(value))
                self.spend(max(0, count * (len(replacement) - len(tokens))))
                return rx.sub(replacement.replace("\\", "\\\\"), value)
            if replace_all:
                spans = [m.span() for m in rx.finditer(value)]
            else:
                m = rx.search(value)
                spans = [] if m is None else [m.span()]
        elif replace_all:
            spans = glob.search_all(value)
        else:
            hit = glob.search(value)
            spans = [] if hit is None else [hit]
        if not spans:
            return value
        out: list[str] = []
        last = 0
        for start, end in spans:
            text = (
                _go_expand_template(replacement, value[start:end]) if replace_all else replacement
            )
            self.spend(max(0, len(text) - (end - start)))  # the value is counted already
            out.append(value[last:start])
            out.append(text)
            last = end
        out.append(value[last:])
        return "".join(out)


_TEMPLATE_REF = re.compile(r"\$(\$|\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]+))")


def _go_expand_template(template: str, matched: str) -> str:
    """Go's ``Regexp.Expand`` for ``ReplaceAllString`` (``$0``/``${0}`` only; no groups)."""
    if "$" not in template:
        return template

    def one(ref: re.Match[str]) -> str:
        if ref.group(1) == "$":
            return "$"
        name = ref.group(2) if ref.group(2) is not None else ref.group(3)
        return matched if name in ("0", "00", "000") else ""

    return _TEMPLATE_REF.sub(one, template)


_REGEX_SPECIAL = frozenset("[]{}.+()|^$")
_pattern_cache: dict[tuple[str, bool, bool], re.Pattern[str]] = {}


def _pattern_to_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    key = (pattern, greedy, anchored)
    cached = _pattern_cache.get(key)
    if cached is not None:
        return cached
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            if i < n and pattern[i] == "}":
                continue
            if i >= n or pattern[i] not in "*?\\":
                bad = pattern[i] if i < n else "EOF"
                raise ShellSyntaxError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{bad}'"
                )
            out.append("\\" + pattern[i])
            i += 1
            continue
        if tok in _REGEX_SPECIAL:
            out.append("\\" + tok)
        else:
            out.append(re.escape(tok))
    rx = re.compile("".join(out))
    if len(_pattern_cache) < 512:
        _pattern_cache[key] = rx
    return rx


@functools.lru_cache(maxsize=512)
def _pattern_tokens(pattern: str) -> tuple[tuple[str, str], ...]:
    """The pattern as ``(kind, char)`` tokens (``star``, ``any``, ``lit``), with the
    escapes and errors of :func:`_pattern_to_regex`."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(("star", tok))
        elif tok == "?":
            out.append(("any", tok))
        elif tok == "\\":
            if i < n and pattern[i] == "}":
                continue
            if i >= n or pattern[i] not in "*?\\":
                bad = pattern[i] if i < n else "EOF"
                raise ShellSyntaxError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{bad}'"
                )
            out.append(("lit", pattern[i]))
            i += 1
        else:
            out.append(("lit", tok))
    return tuple(out)


#: the work a backtracking regex may do: about len(value) ** (stars + 1) steps
_MAX_BACKTRACKING = 10_000_000


def _check_backtracking(pattern: str, value: str, stars: int) -> None:
    """Refuse the regex for a pattern with a newline and stars on a long value."""
    if stars and (len(value) + 1) ** (stars + 1) > _MAX_BACKTRACKING:
        raise _TooLargeError(
            f"the pattern {pattern[:50]!r} holds a newline and {stars} '*': too costly to "
            f"match against a value of {len(value)} characters"
        )


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    tokens = _pattern_tokens(pattern)
    glob = compile_glob(tokens, greedy=greedy)
    if glob is None:  # a literal newline in the pattern: the regex (backtracking)
        _check_backtracking(pattern, value, sum(1 for kind, _ in tokens if kind == "star"))
        m = _pattern_to_regex(pattern, greedy=greedy, anchored=True).search(value)
        return value[m.end() :] if m else value
    end = glob.prefix(value)
    return value if end is None else value[end:]


def _reverse_pattern(pattern: str) -> str:
    chars = list(pattern)
    out = [""] * len(chars)
    last = len(chars) - 1
    i = 0
    while i <= last:
        tok = chars[i]
        o = last - i
        if tok == "\\" and i != last:
            out[o - 1] = tok
            out[o] = chars[i + 1]
            i += 2
        else:
            out[o] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellLex:
    """BuildKit's ``shell.Lex``: an escape token plus the processing switches.

    * ``raw_quotes``: keep quote characters in the result;
    * ``raw_escapes``: keep escape characters in the result;
    * ``skip_unset_env``: leave ``$UNSET`` / ``${UNSET...}`` as written;
    * ``skip_process_quotes``: quotes are ordinary characters (heredoc bodies).
    """

    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_unset_env: bool = False
    skip_process_quotes: bool = False

    def process(
        self, word: str, env: Mapping[str, str], *, budget: int = MAX_EXPANSION
    ) -> Expansion:
        """Expand ``word``; raise :class:`ShellSyntaxError` on a syntax error, or when
        substitutions would add more than ``budget`` characters (or nest too deeply).

        Linear in the size of ``word`` plus what the substitutions add.
        """
        if "$" not in word and self.escape not in word and "'" not in word and '"' not in word:
            return Expansion(
                result=word,
                words=tuple(_split_plain(word)),
                matched=frozenset(),
                unmatched=frozenset(),
            )
        sc = _Scanner(word, env, self, budget)
        try:
            result, words = sc.process_stop_on(_EOF, self.raw_escapes)
        except _TooLargeError as exc:
            raise ShellSyntaxError(
                f"failed to process {_excerpt(word)}: {exc.message}",
                hint="a variable is doubled or repeated too often; expansions are limited "
                "to 1 MiB per instruction",
            ) from None
        except RecursionError:
            raise ShellSyntaxError(
                f"failed to process {_excerpt(word)}: ${{...}} nested too deeply",
                hint="simplify the nested ${...} forms",
            ) from None
        except ShellSyntaxError as exc:
            raise ShellSyntaxError(
                f"failed to process {_excerpt(word)}: {exc.message}",
                hint="check the quotes and ${...} forms in this word",
            ) from None
        return Expansion(
            result=result,
            words=tuple(words),
            matched=frozenset(sc.matched),
            unmatched=frozenset(sc.unmatched),
            substituted=budget - sc.budget,
        )

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """One word, quotes removed, no splitting."""
        return self.process(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expanded and split at unquoted whitespace."""
        return list(self.process(word, env).words)


_NON_SPACE_RUN = re.compile("[^" + re.escape("".join(sorted(GO_SPACE))) + "]+")
_SPACE_RUN = re.compile("[" + re.escape("".join(sorted(GO_SPACE))) + "]+")


def _excerpt(word: str, limit: int = 200) -> str:
    """``word`` quoted for a message, cut to ``limit`` characters."""
    return repr(word) if len(word) <= limit else repr(word[:limit]) + f"… ({len(word)} chars)"


def _split_plain(word: str) -> list[str]:
    return _NON_SPACE_RUN.findall(word)


_DEFAULT = ShellLex()
_BACKTICK = ShellLex(escape="`")


def _lex_for(escape: str) -> ShellLex:
    if escape == "\\":
        return _DEFAULT
    if escape == "`":
        return _BACKTICK
    return ShellLex(escape=escape)


def expand_word(word: str, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """Expand one word as BuildKit's ``ProcessWord``: quotes removed, unset → empty."""
    return _lex_for(escape).process(word, env).result


def expand_words(word: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Expand and split as BuildKit's ``ProcessWords``."""
    return list(_lex_for(escape).process(word, env).words)
