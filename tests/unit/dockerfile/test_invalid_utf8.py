"""A Dockerfile that is not valid UTF-8 (issue 12, item 12): a variable or label name is a
DockerfileError naming the line; a value reaches the image config's JSON as Go writes it
(U+FFFD per invalid byte), and cache key documents stay writable."""

from __future__ import annotations

import json

import pytest

from lamina.cache import KeyInputs, cache_key
from lamina.dockerfile import parse_dockerfile
from lamina.errors import DockerfileError
from lamina.oci._json import dumps


@pytest.mark.parametrize(
    ("text", "line", "kw"),
    [
        (b"FROM scratch\nARG A\xff=1\n", 2, "ARG"),
        (b"ARG \xfe\nFROM scratch\n", 1, "ARG"),
        (b"FROM scratch\nENV ok=1 B\xfe=2\n", 2, "ENV"),
        (b"FROM scratch\n\nLABEL l\xff=1\n", 3, "LABEL"),
        (b"FROM scratch\nENV B\xfe value\n", 2, "ENV"),
    ],
)
def test_a_name_that_is_not_utf8_is_an_error_naming_the_line(
    text: bytes, line: int, kw: str
) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text.decode("utf-8", "surrogateescape"))
    assert info.value.location is not None
    assert info.value.location.line == line
    assert f"{kw} name" in info.value.message
    assert "not valid UTF-8" in info.value.message


def test_values_are_written_as_go_writes_them() -> None:
    value = b"a\xfeb\xff".decode("utf-8", "surrogateescape")
    raw = dumps({"Env": [f"B={value}"], "ok": "é"})
    assert json.loads(raw) == {"Env": ["B=a\ufffdb\ufffd"], "ok": "é"}
    assert dumps({"ok": "é"}) == '{"ok":"é"}'.encode()  # valid text unchanged


def test_key_documents_hold_text_that_is_not_utf8() -> None:
    bad = b"\xff".decode("utf-8", "surrogateescape")
    inputs = KeyInputs(
        parent="p", instruction=f"RUN echo {bad}", platform="linux/amd64", args={"A": bad}
    )
    back = KeyInputs.from_document(inputs.document())
    assert cache_key(back) == cache_key(inputs)
    assert back.instruction == inputs.instruction
    other = KeyInputs(
        parent="p", instruction="RUN echo \ufffd", platform="linux/amd64", args={"A": bad}
    )
    assert cache_key(other) != cache_key(inputs)
