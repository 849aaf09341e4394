from __future__ import annotations

import platform as pyplatform

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import Platform


def test_parse_and_str() -> None:
    p = Platform.parse("linux/arm64/v8")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(p) == "linux/arm64/v8"
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    assert Platform.parse("linux/x86_64").architecture == "amd64"
    assert Platform.parse("linux/aarch64").architecture == "arm64"


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "a/b/c/d", ""])
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ImageFormatError, match="invalid platform"):
        Platform.parse(text)


def test_host() -> None:
    host = Platform.host()
    assert host.os == "linux"
    expected = {"x86_64": "amd64", "aarch64": "arm64"}.get(pyplatform.machine())
    if expected:
        assert host.architecture == expected


@pytest.mark.parametrize(
    ("want", "have", "ok"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/amd64", "linux/amd64/v3", True),
        ("linux/amd64/v3", "linux/amd64/v2", True),
        ("linux/amd64/v2", "linux/amd64/v3", False),
        ("linux/amd64/v2", "linux/amd64", True),
        ("linux/x86_64", "linux/amd64", True),
    ],
)
def test_matches(want: str, have: str, ok: bool) -> None:
    assert Platform.parse(want).matches(Platform.parse(have)) is ok


def test_dict_roundtrip() -> None:
    d = {"architecture": "amd64", "os": "windows", "os.version": "10.0.1", "os.features": ["x"]}
    p = Platform.from_dict(d)
    assert p.to_dict() == d
    with pytest.raises(ImageFormatError):
        Platform.from_dict({"os": "linux"})
