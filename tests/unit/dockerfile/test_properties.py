"""Property tests: random text and token soups only ever raise lamina's own errors."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.dockerfile import (
    ShellLex,
    expand_instruction,
    parse,
    parse_dockerfile,
    parse_dockerignore,
)
from lamina.errors import LaminaError

TOKENS = [
    "FROM", "from", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "ONBUILD", "HEALTHCHECK",
    "CMD", "ENTRYPOINT", "SHELL", "USER", "WORKDIR", "VOLUME", "EXPOSE", "STOPSIGNAL",
    "MAINTAINER", "AS", " ", "  ", "\t", "\n", "\r\n", "\\", "\\\n", "`", "#", "# escape=`\n",
    "# syntax=x\n", "[", "]", '"', "'", ",", "=", "$", "${", "}", ":-", ":+", ":?", "#", "%",
    "/", "//", "*", "?", "<<", "<<-", "EOF", "'EOF'", "--mount=", "type=cache", "type=secret",
    "target=/x", "--from=", "--chown=", "--link", "--exclude=", "--interval=", "5s", "NONE",
    "--network=", "none", "--", "a", "b", "1", "0", "x=y", "\x00", "\ufeff", "♥", "\x85",
]  # fmt: skip
soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
text = st.one_of(st.text(max_size=200), soup)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def _full(src: str) -> None:
    try:
        df = parse_dockerfile(src)
    except LaminaError:
        return
    for stage in df.stages:
        for instr in stage.instructions:
            with contextlib.suppress(LaminaError):
                expand_instruction(instr, {"a": "1 2", "x": ""}, escape=df.escape)


@SETTINGS
@given(text)
def test_parser_only_raises_lamina_errors(src: str) -> None:
    with contextlib.suppress(LaminaError):
        parse(src).dump()
    _full(src)
    _full("FROM x\n" + src)


@SETTINGS
@given(st.binary(max_size=200))
def test_parser_bytes(data: bytes) -> None:
    with contextlib.suppress(LaminaError):
        parse(b"FROM x\n" + data).dump()


@SETTINGS
@given(text, st.booleans(), st.booleans())
def test_expander_only_raises_lamina_errors(word: str, raw_q: bool, raw_e: bool) -> None:
    for lex in (ShellLex(), ShellLex(raw_quotes=raw_q, raw_escapes=raw_e, skip_unset_env=True)):
        with contextlib.suppress(LaminaError):
            lex.process(word, {"a": "b c", "e": ""})


@SETTINGS
@given(text)
def test_dockerignore_only_raises_lamina_errors(src: str) -> None:
    try:
        r = parse_dockerignore(src)
    except LaminaError:
        return
    for path in ("a", "a/b/c", "x.go", "♥/y"):
        r.matches(path)
        r.can_skip_dir(path)
