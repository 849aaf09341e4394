from __future__ import annotations

import hashlib
import io

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import Digest, DigestingReader, DigestingWriter, Hasher

HEX = "a" * 64


def test_parse_roundtrip_and_fields() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert d.algorithm == "sha256"
    assert d.hex == HEX
    assert str(d) == f"sha256:{HEX}"
    assert d == Digest.sha256_hex(HEX)
    assert {d: 1}[Digest.parse(f"sha256:{HEX}")] == 1


def test_sha512() -> None:
    d = Digest.parse("sha512:" + "0" * 128)
    assert d.algorithm == "sha512"


def test_of_bytes() -> None:
    assert Digest.of_bytes(b"abc").hex == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected 'algorithm:hex'"),
        (HEX, "expected 'algorithm:hex'"),
        (f"md5:{HEX}", "unsupported algorithm 'md5'"),
        ("sha256:" + "A" * 64, "lowercase hex"),
        ("sha256:" + "a" * 63, "exactly 64"),
        ("sha256:" + "g" * 64, "lowercase hex"),
        ("sha512:" + "a" * 64, "exactly 128"),
        (f"sha256:{HEX} ", "expected 'algorithm:hex'"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        Digest.parse(text)
    assert fragment in info.value.message
    assert repr(text) in info.value.message
    assert info.value.hint


def test_hasher_and_writer_count() -> None:
    h = Hasher()
    h.update(b"ab")
    h.update(b"c")
    assert h.size == 3
    assert h.digest() == Digest.of_bytes(b"abc")
    sink = io.BytesIO()
    w = DigestingWriter(sink)
    w.write(b"hello ")
    w.write(b"world")
    assert sink.getvalue() == b"hello world"
    assert w.size == 11
    assert w.digest() == Digest.of_bytes(b"hello world")


def _drain(r: DigestingReader, n: int = 4) -> bytes:
    out = b""
    while chunk := r.read(n):
        out += chunk
    return out


def test_reader_verifies_ok() -> None:
    data = b"0123456789"
    r = DigestingReader(io.BytesIO(data), expected=Digest.of_bytes(data), expected_size=10)
    assert _drain(r) == data
    assert r.read(4) == b""


def test_reader_mismatch_raises_before_returning_last_chunk() -> None:
    data = b"0123456789"
    r = DigestingReader(
        io.BytesIO(data), expected=Digest.of_bytes(b"other"), expected_size=10, what="blob X"
    )
    got = r.read(4) + r.read(4)
    assert got == b"01234567"
    with pytest.raises(ImageFormatError, match=r"blob X has digest sha256:.* but sha256:"):
        r.read(4)


def test_reader_truncation() -> None:
    data = b"01234"
    r = DigestingReader(io.BytesIO(data), expected=Digest.of_bytes(b"0123456789"), expected_size=10)
    with pytest.raises(ImageFormatError, match="truncated: got 5 bytes, expected 10"):
        _drain(r)


def test_reader_too_long() -> None:
    r = DigestingReader(io.BytesIO(b"0123456789AB"), expected_size=10)
    with pytest.raises(ImageFormatError, match="longer than its declared size"):
        _drain(r, 5)


def test_reader_digest_only_read_all() -> None:
    r = DigestingReader(io.BytesIO(b"abc"), expected=Digest.of_bytes(b"abd"))
    with pytest.raises(ImageFormatError, match="was expected"):
        r.read()
