"""Low-level Dockerfile parser: text → untyped nodes (BuildKit's ``parser`` package).

Handles parser directives, logical lines (continuations, comments and blank lines
inside them), flag extraction, the per-keyword split of arguments, JSON (exec) form,
ONBUILD nesting and heredoc bodies. No variable is expanded here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lamina.errors import DockerfileError, SourceLocation

from ._lexer import ShellLex, ShellSyntaxError
from ._records import fast_init
from ._text import GO_SPACE, SPACE_CLASS, go_lstrip, go_quote, go_strip

__all__ = [
    "DockerfileWarning",
    "Heredoc",
    "Node",
    "ParseResult",
    "dump",
    "parse",
]

_WS_SPLIT = re.compile(r"[\t\v\f\r ]+")
_GO_SPACE_SPLIT = re.compile(SPACE_CLASS + "+")
_GO_S = r"[\t\n\f\r ]*"
_DIRECTIVE = re.compile(rf"^#{_GO_S}([a-zA-Z][a-zA-Z0-9]*){_GO_S}={_GO_S}(.+?){_GO_S}\Z")
_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_ESCAPES = ("\\", "`")  # the escape tokens a directive may choose
_HEREDOC = re.compile(r"^([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_HEREDOC_ALONE = re.compile(r"^([0-9]*)<<(-?)\Z")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})
_BOM = "\ufeff"
# a flag word without quotes or escape characters (either escape token)
_PLAIN_FLAG = re.compile("[^" + re.escape("".join(sorted(GO_SPACE)) + "'\"\\`") + "]*")
_SPACES = re.compile(SPACE_CLASS + "*")
_NO_SPACES = re.compile("[^" + re.escape("".join(sorted(GO_SPACE))) + "]*")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@functools.cache  # compiled on first use: most Dockerfiles never meet the backtick escape
def _continuation_regex(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z", re.DOTALL)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DockerfileWarning:
    """A non-fatal finding (deprecated syntax, lint-like rule), collected, never printed."""

    rule: str
    message: str
    location: SourceLocation | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location is not None else ""
        return f"{where}{self.message} ({self.rule})"


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Heredoc:
    """One here-document: ``[fd]<<[-]NAME`` and its body (raw, newline-terminated lines)."""

    name: str
    content: str
    expand: bool
    chomp: bool
    file_descriptor: int = 0

    @property
    def body(self) -> str:
        """The body with leading tabs removed from each line when ``<<-`` was used."""
        if self.chomp:
            return _LEADING_TABS.sub("", self.content)
        return self.content


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One instruction as BuildKit's parser sees it (before any validation).

    ``keyword`` is lower-cased; ``args`` are the split arguments (see the README of
    the conformance data, §1.5); for ONBUILD ``inner`` is the nested instruction.
    ``original`` is the logical line as written (continuations joined),
    ``text`` the first physical line (for error messages).
    """

    keyword: str
    args: tuple[str, ...]
    flags: tuple[str, ...] = ()
    original: str = ""
    json: bool = False
    inner: Node | None = None
    heredocs: tuple[Heredoc, ...] = ()
    start_line: int = 0
    end_line: int = 0
    text: str = ""
    filename: str = "Dockerfile"

    @property
    def location(self) -> SourceLocation:
        return SourceLocation(
            file=self.filename, line=self.start_line, end_line=self.end_line, text=self.text
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseResult:
    """The low-level parse: nodes, directives and warnings."""

    nodes: tuple[Node, ...]
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)
    warnings: tuple[DockerfileWarning, ...] = ()
    filename: str = "Dockerfile"
    start_line: int = 0
    end_line: int = 0

    @property
    def syntax(self) -> str | None:
        return self.directives.get("syntax")

    def dump(self) -> str:
        """The parse tree in the format of BuildKit's parser test ``result`` files."""
        return "".join("(" + dump(n) + ")\n" for n in self.nodes)


def dump(node: Node) -> str:
    """One node in BuildKit's ``Node.Dump`` format (without the outer parentheses)."""
    parts = [node.keyword]
    if node.flags:
        parts.append("[" + " ".join(go_quote(f) for f in node.flags) + "]")
    if node.inner is not None:
        parts.append("(" + dump(node.inner) + ")")
    else:
        parts.extend(go_quote(a) for a in node.args)
    return " ".join(parts)


# --------------------------------------------------------------------------- flags


def _extract_flags(rest: str, escape: str) -> tuple[str, list[str]]:
    """Read ``--flag`` words from the start of ``rest``; return (arguments, flags)."""
    words: list[str] = []
    n = len(rest)
    pos = 0
    spaces = _SPACES.match
    plain = _PLAIN_FLAG.match
    while True:
        if pos < n and rest[pos] in GO_SPACE:
            pos = spaces(rest, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return "", words
        if not rest.startswith("--", pos):
            return rest[pos:], words
        end = plain(rest, pos).end()  # type: ignore[union-attr]
        if end >= n or rest[end] in GO_SPACE:
            text = rest[pos:end]
            if text == "--":
                return rest[end:], words
            words.append(text)
            pos = end
            continue
        word: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            ch = rest[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == escape:
                    if pos + 1 == n:
                        quote = ""
                        pos += 1
                        continue
                    pos += 1
                    word.append(rest[pos])
                else:
                    word.append(ch)
                pos += 1
                continue
            if ch in GO_SPACE:
                break
            if ch in "'\"":
                quote = ch
                blank_ok = True
            elif ch == escape:
                if pos + 1 < n:
                    pos += 1
                    word.append(rest[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return (rest[pos:] if pos < n else ""), words
        if blank_ok or text:
            words.append(text)
        if pos >= n:
            return "", words


# ------------------------------------------------------------------ argument split


class _NotStringArrayError(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _fix_surrogates(s: str) -> str:
    # Go's decoder replaces invalid UTF-8 (and lone surrogate escapes) with U+FFFD
    if _SURROGATE.search(s) is not None:
        return _SURROGATE.sub("\ufffd", s)
    return s


# json.loads(rest, parse_constant=_reject_constant) without its per-call overhead:
# one decoder, its scanner called directly, then the same "Extra data" check
_JSON_SCAN: Callable[[str, int], tuple[object, int]] = json.JSONDecoder(
    parse_constant=_reject_constant
).scan_once  # type: ignore[attr-defined]
_JSON_WS = re.compile(r"[ \t\n\r]*")


def _parse_json(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        rest = go_lstrip(rest)
        if not rest.startswith("["):
            return None
    try:
        value, end = _JSON_SCAN(rest, 0)
    except RecursionError as exc:
        raise _NotStringArrayError from exc
    except (ValueError, StopIteration):
        return None
    if _JSON_WS.match(rest, end).end() != len(rest):  # type: ignore[union-attr]
        return None  # extra data after the value
    if not isinstance(value, list):
        return None
    for item in value:
        if type(item) is not str:
            raise _NotStringArrayError
    if _SURROGATE.search(rest) is None and "\\u" not in rest:
        return value
    return [_fix_surrogates(item) for item in value]


def _split_ws(rest: str) -> tuple[str, ...]:
    if not rest:
        return ()
    return tuple(_WS_SPLIT.split(rest))


@functools.cache  # compiled on first use, like _continuation_regex
def _words_regex(escape: str) -> re.Pattern[str]:
    # one word of parseWords: escaped characters, "..." (escapes inside), '...'
    # (no escapes inside) and other non-space characters; an unterminated quote
    # runs to the end. Only valid when ``rest`` does not end with the escape token.
    e = re.escape(escape)
    sp = re.escape("".join(sorted(GO_SPACE)))
    return re.compile(
        rf"(?:{e}.|\"(?:{e}.|[^\"{e}])*(?:\"|\Z)|'[^']*(?:'|\Z)|[^{sp}'\"{e}])+",
        re.DOTALL,
    )


def _parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's ``parseWords``: split on whitespace, quotes and escapes kept."""
    if escape not in rest and "'" not in rest and '"' not in rest:
        rest = go_strip(rest)
        return _GO_SPACE_SPLIT.split(rest) if rest else []
    if escape in _ESCAPES and not rest.endswith(escape):
        return _words_regex(escape).findall(rest)
    return _parse_words_loop(rest, escape)


def _parse_words_loop(rest: str, escape: str) -> list[str]:
    words: list[str] = []
    word: list[str] = []
    blank_ok = False
    quote = ""
    in_word = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if not in_word:
            if ch in GO_SPACE:
                pos += 1
                continue
            in_word = True
        if not quote:
            if ch in GO_SPACE:
                in_word = False
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # inside quotes
        if ch == quote:
            quote = ""
        if ch == escape and quote != "'":
            if pos + 1 == n:
                quote = ""
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


class _LineError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _name_val(rest: str, key: str, escape: str) -> tuple[str, ...]:
    words = _parse_words(rest, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _WS_SPLIT.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _LineError(
                f"{key} must have two arguments",
                f"write {key} {parts[0]}=<value>",
            )
        return (parts[0], parts[1], "")
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise _LineError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value",
                f"every word of {key} must be name=value; quote values that contain spaces",
            )
        name, value = word.split("=", 1)
        out.extend((name, value, "="))
    return tuple(out)


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if not rest:
        return (), False
    try:
        parsed = _parse_json(rest)
    except _NotStringArrayError:
        raise _LineError(
            "when using JSON array syntax, arrays must be comprised of strings only",
            'write the exec form as a list of strings, e.g. ["executable", "arg"]',
        ) from None
    if parsed is not None:
        return tuple(parsed), True
    return (rest,), False


def _maybe_json_list(rest: str) -> tuple[tuple[str, ...], bool]:
    try:
        parsed = _parse_json(rest)
    except _NotStringArrayError:
        raise _LineError(
            "when using JSON array syntax, arrays must be comprised of strings only",
            'write the list as JSON strings, e.g. ["src", "/dest/"]',
        ) from None
    if parsed is not None:
        return tuple(parsed), True
    return _split_ws(rest), False


def _health(rest: str) -> tuple[tuple[str, ...], bool]:
    sep = _NO_SPACES.match(rest).end()  # type: ignore[union-attr]
    if sep == 0:
        return (), False
    nxt = _SPACES.match(rest, sep).end()  # type: ignore[union-attr]
    args, is_json = _maybe_json(rest[nxt:])
    return (rest[:sep], *args), is_json


# ------------------------------------------------------------------------- parser


class _State:
    """What the parser carries from line to line (a plain class: built once per parse,
    never compared or printed, so it skips a dataclass's ~1 ms of import-time set-up)."""

    __slots__ = ("directives", "directives_done", "escape", "filename", "warnings")

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.escape = "\\"
        self.directives: dict[str, str] = {}
        self.directives_done = False
        self.warnings: list[DockerfileWarning] = []


# how each keyword's arguments are split (anything else: one empty argument)
_K_WS, _K_JSON_LIST, _K_JSON, _K_HEALTH, _K_ONE, _K_WORDS, _K_NAME_VAL, _K_ONBUILD = range(1, 9)
_KINDS = {
    "from": _K_WS,
    "expose": _K_WS,
    "add": _K_JSON_LIST,
    "copy": _K_JSON_LIST,
    "volume": _K_JSON_LIST,
    "run": _K_JSON,
    "cmd": _K_JSON,
    "entrypoint": _K_JSON,
    "shell": _K_JSON,
    "healthcheck": _K_HEALTH,
    "maintainer": _K_ONE,
    "user": _K_ONE,
    "workdir": _K_ONE,
    "stopsignal": _K_ONE,
    "arg": _K_WORDS,
    "env": _K_NAME_VAL,
    "label": _K_NAME_VAL,
    "onbuild": _K_ONBUILD,
}


def _node_from_line(
    line: str, st: _State, start: int, end: int, text: str
) -> tuple[str, tuple[str, ...], tuple[str, ...], bool, Node | None]:
    """Split a logical line into (keyword, flags, args, json, inner)."""
    stripped = go_strip(line)
    parts = _WS_SPLIT.split(stripped, maxsplit=1)
    keyword = parts[0]
    rest = ""
    flags: tuple[str, ...] = ()
    if len(parts) == 2:
        rest = parts[1]
        if rest.startswith("--") or (rest and rest[0] in GO_SPACE):
            rest, flag_words = _extract_flags(rest, st.escape)
            flags = tuple(flag_words)
        rest = go_strip(rest)
    key = keyword.lower()
    is_json = False
    inner: Node | None = None
    args: tuple[str, ...]
    kind = _KINDS.get(key, 0)
    if kind == _K_WS:
        args = _split_ws(rest)
    elif kind == _K_JSON_LIST:
        args, is_json = _maybe_json_list(rest)
    elif kind == _K_JSON:
        args, is_json = _maybe_json(rest)
    elif kind == _K_HEALTH:
        args, is_json = _health(rest)
    elif kind == _K_ONE:
        args = (rest,) if rest else ()
    elif kind == _K_WORDS:
        args = tuple(_parse_words(rest, st.escape))
    elif kind == _K_NAME_VAL:
        args = _name_val(rest, key.upper(), st.escape)
    elif kind == _K_ONBUILD:
        args = ()
        if rest:
            ikw, iflags, iargs, ijson, _ = _node_from_line(rest, st, start, end, text)
            inner = Node(
                keyword=ikw,
                args=iargs,
                flags=iflags,
                original=rest,
                json=ijson,
                start_line=start,
                end_line=end,
                text=text,
                filename=st.filename,
            )
    else:
        args = ("",)
    return key, flags, args, is_json, inner


_HEREDOC_WORDS = ShellLex(raw_quotes=True, raw_escapes=True)
_HEREDOC_NAME = ShellLex(skip_unset_env=True)
_HEREDOC_NAME_RAW = ShellLex(skip_unset_env=True, raw_quotes=True)
# a heredoc name without ``$``, quotes, escapes or spaces
_PLAIN_HEREDOC_NAME = re.compile("[^" + re.escape("".join(sorted(GO_SPACE)) + "$'\"\\") + "]+")


def _parse_heredoc(fd: str, chomp: str, rest: str) -> Heredoc | None:
    if not rest:
        return None
    if _PLAIN_HEREDOC_NAME.fullmatch(rest) is not None:
        # nothing to expand, unquote or split: the name is the word itself
        return Heredoc(
            name=rest,
            content="",
            expand=True,
            chomp=chomp == "-",
            file_descriptor=int(fd) if fd else 0,
        )
    try:
        words = _HEREDOC_NAME.process_words(rest, {})
        raw = _HEREDOC_NAME_RAW.process_words(rest, {})
    except ShellSyntaxError:
        return None
    if len(words) != 1 or len(raw) != 1:
        return None
    word = words[0]
    quotes = word.count("'") + word.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(
        name=word,
        content="",
        expand=quotes == raw_quotes,
        chomp=chomp == "-",
        file_descriptor=int(fd) if fd else 0,
    )


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredoc markers (``[n]<<[-]WORD``) of a RUN/COPY/ADD line, in order."""
    try:
        words = _HEREDOC_WORDS.process_words(line, {})
    except ShellSyntaxError:
        return []
    docs: list[Heredoc] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if "<<" not in word:
            continue
        alone = _HEREDOC_ALONE.match(word)
        if alone is not None and i < len(words):
            doc = _parse_heredoc(alone.group(1), alone.group(2), words[i])
            if doc is not None:
                i += 1
                docs.append(doc)
            continue
        m = _HEREDOC.match(word)
        if m is None:
            continue
        doc = _parse_heredoc(m.group(1), m.group(2), m.group(3))
        if doc is not None:
            docs.append(doc)
    return docs


def _check_directive(line: str, st: _State, lineno: int, raw: str) -> None:
    m = _DIRECTIVE.match(line)
    if m is None:
        st.directives_done = True
        return
    key = m.group(1).lower()
    if key not in _VALID_DIRECTIVES:
        st.directives_done = True
        return
    loc = SourceLocation(file=st.filename, line=lineno, text=raw)
    if key in st.directives:
        raise DockerfileError(
            f"only one {key} parser directive can be used",
            hint=f"remove the repeated '# {key}=' line",
            location=loc,
        )
    value = m.group(2)
    if key == "escape":
        if value not in ("\\", "`"):
            raise DockerfileError(
                f"invalid escape token '{value}' does not match ` or \\",
                hint="use '# escape=\\' (the default) or '# escape=`'",
                location=loc,
            )
        st.escape = value
    st.directives[key] = value


def parse(text: str | bytes, *, filename: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile text into low-level nodes; raise :class:`DockerfileError`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][1:]
    st = _State(filename=filename)
    nodes: list[Node] = []
    n = len(lines)
    i = 0
    esc = st.escape
    cont = _continuation_regex(esc)
    # lines come from split("\n"): only "\r" can trail them, and usually none does
    has_cr = "\r" in text
    while i < n:
        raw = lines[i]
        i += 1
        if has_cr:
            raw = raw.rstrip("\r")
        s = raw
        if s and s[0] in GO_SPACE:
            s = go_lstrip(s)
        if not st.directives_done:
            _check_directive(s, st, i, raw)
            if st.escape != esc:
                esc = st.escape
                cont = _continuation_regex(esc)
        if not s or s[0] == "#":
            continue
        start = i
        last = s[-1]
        m = cont.search(s) if last in (esc, " ", "\t") and s.rstrip(" \t").endswith(esc) else None
        empty_cont = False
        if m is None:
            line = s
        else:
            pieces = [s[: m.start()] + (m.group(1) or "")]
            while i < n:
                s2 = lines[i]
                i += 1
                if has_cr:
                    s2 = s2.rstrip("\r")
                ls = go_lstrip(s2) if s2 and s2[0] in GO_SPACE else s2
                if ls.startswith("#"):
                    continue
                if not ls:
                    empty_cont = True
                    continue
                m = cont.search(s2) if s2.rstrip(" \t").endswith(esc) else None
                if m is None:
                    pieces.append(s2)
                    break
                pieces.append(s2[: m.start()] + (m.group(1) or ""))
            line = "".join(pieces) if len(pieces) > 1 else pieces[0]
        text_line = raw
        if start == 1 and text_line.startswith(_BOM):
            text_line = text_line[1:]
        try:
            key, flags, args, is_json, inner = _node_from_line(line, st, start, i, text_line)
        except _LineError as exc:
            raise DockerfileError(
                exc.message,
                hint=exc.hint,
                location=SourceLocation(file=filename, line=start, end_line=i, text=text_line),
            ) from None
        if empty_cont:
            st.warnings.append(
                DockerfileWarning(
                    rule="NoEmptyContinuation",
                    message="Empty continuation line found in: " + go_strip(line)[:80],
                    location=SourceLocation(file=filename, line=start, text=text_line),
                )
            )
        heredocs: list[Heredoc] = []
        target_key, target_json = key, is_json
        if inner is not None:
            target_key, target_json = inner.keyword, inner.json
        if "<<" in line and target_key in _HEREDOC_KEYWORDS and not target_json:
            for doc in heredocs_from_line(line):
                body: list[str] = []
                terminated = False
                while i < n:
                    b = lines[i]
                    i += 1
                    if b.endswith("\r"):
                        b = b[:-1]
                    cand = b.rstrip("\r\n")
                    if doc.chomp:
                        cand = cand.lstrip("\t")
                    if cand == doc.name:
                        terminated = True
                        break
                    body.append(b + "\n")
                if not terminated:
                    raise DockerfileError(
                        f"unterminated heredoc {doc.name!r}",
                        hint=f"end the here-document with a line containing only {doc.name}",
                        location=SourceLocation(
                            file=filename, line=start, end_line=i, text=text_line
                        ),
                    )
                heredocs.append(
                    Heredoc(
                        name=doc.name,
                        content="".join(body),
                        expand=doc.expand,
                        chomp=doc.chomp,
                        file_descriptor=doc.file_descriptor,
                    )
                )
        if inner is not None:
            inner = Node(
                keyword=inner.keyword,
                args=inner.args,
                flags=inner.flags,
                original=inner.original,
                json=inner.json,
                heredocs=tuple(heredocs),
                start_line=start,
                end_line=i,
                text=text_line,
                filename=filename,
            )
            heredocs = []
        nodes.append(
            Node(
                keyword=key,
                args=args,
                flags=flags,
                original=line,
                json=is_json,
                inner=inner,
                heredocs=tuple(heredocs) if heredocs else (),
                start_line=start,
                end_line=i,
                text=text_line,
                filename=filename,
            )
        )
    if not nodes:
        raise DockerfileError(
            "file with no instructions",
            hint="a Dockerfile needs at least a FROM instruction",
            location=SourceLocation(file=filename, line=max(1, n)),
        )
    return ParseResult(
        nodes=tuple(nodes),
        escape=st.escape,
        directives=dict(st.directives),
        warnings=tuple(st.warnings),
        filename=filename,
        start_line=nodes[0].start_line,
        end_line=nodes[-1].end_line,
    )
