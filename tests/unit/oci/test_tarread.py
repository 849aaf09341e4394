"""The bounded tar header reader: every tar lamina reads goes through it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lamina.errors import ImageFormatError
from lamina.oci._tarread import (
    MAX_ENTRY_HEADERS,
    TarHeaderLimitError,
    next_member,
    open_stream,
)
from lamina.oci._text import shorten
from lamina.oci.docker_archive import DockerArchive


def _pax_tar(size: int) -> bytes:
    info = tarfile.TarInfo("manifest.json")
    info.pax_headers = {"comment": "c" * size}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def test_headers_under_the_cap_are_read() -> None:
    tar = open_stream(io.BytesIO(_pax_tar(MAX_ENTRY_HEADERS - 4096)))
    member = next_member(tar)
    assert member is not None
    assert len(member.pax_headers["comment"]) == MAX_ENTRY_HEADERS - 4096
    assert next_member(tar) is None


def test_a_header_over_the_cap_is_refused() -> None:
    with pytest.raises(TarHeaderLimitError) as info:
        open_stream(io.BytesIO(_pax_tar(MAX_ENTRY_HEADERS + 1)))
    assert "PAX extended header" in str(info.value)


def test_docker_archive_header_bomb_is_an_image_format_error(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(_pax_tar(2 * MAX_ENTRY_HEADERS))
    with pytest.raises(ImageFormatError) as info:
        DockerArchive(path)
    assert str(path) in info.value.message
    assert "PAX extended header" in info.value.message
    assert len(info.value.message) < 400


def test_shorten() -> None:
    assert shorten("abc") == "abc"
    cut = shorten("x" * 1000)
    assert cut.startswith("x" * 200)
    assert cut.endswith("… (1000 characters)")
