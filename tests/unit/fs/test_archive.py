from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from lamina.errors import ImageFormatError
from lamina.fs import extract_archive

from .tarbuild import build_tar, d, file, sym

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "tar": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: bytes(zstandard.ZstdCompressor().compress(b)),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_sniffs_and_unpacks(tmp_path: Path, kind: str) -> None:
    raw = build_tar([d("pkg"), file("pkg/a", b"A" * 3000), file("pkg/.wh.b", b"kept")]).getvalue()
    warnings: list[str] = []
    stats = extract_archive(
        tmp_path, "/opt/app", io.BytesIO(COMPRESSORS[kind](raw)), on_warning=warnings.append
    )
    assert (tmp_path / "opt" / "app" / "pkg" / "a").read_bytes() == b"A" * 3000
    assert (tmp_path / "opt" / "app" / "pkg" / ".wh.b").read_bytes() == b"kept"
    assert stats.files == 2
    assert warnings == []


def test_confined_to_destination(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("image")
    warnings: list[str] = []
    raw = build_tar(
        [file("../../etc/passwd", b"evil"), sym("l", "/etc"), file("l/passwd", b"in dest")]
    )
    extract_archive(
        root, "/dest", io.BytesIO(gzip.compress(raw.getvalue())), on_warning=warnings.append
    )
    assert (root / "etc" / "passwd").read_text() == "image"
    assert (root / "dest" / "etc" / "passwd").read_text() == "in dest"
    assert any("refused" in w for w in warnings)
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_corrupt_compressed_archive(tmp_path: Path) -> None:
    data = gzip.compress(build_tar([file("a", os.urandom(50_000))]).getvalue())[:5000]
    with pytest.raises(ImageFormatError):
        extract_archive(tmp_path, "/", io.BytesIO(data), on_warning=print)
