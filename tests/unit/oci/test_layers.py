from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zstandard

from lamina.errors import ImageFormatError
from lamina.oci import (
    BlobLayer,
    Digest,
    FileLayer,
    compress_layer,
    decompress,
    detect_compression,
    mediatypes,
)

from .helpers import drain

DATA = os.urandom(300_000) + b"A" * 2_000_000 + bytes(range(256)) * 1000


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compress_layer_deterministic_and_correct(compression: str) -> None:
    outs = []
    for _ in range(2):
        dest = io.BytesIO()
        stats = compress_layer(io.BytesIO(DATA), dest, compression=compression)  # type: ignore[arg-type]
        outs.append((stats, dest.getvalue()))
    (s1, b1), (s2, b2) = outs
    assert s1 == s2
    assert b1 == b2
    assert s1.diff_id.hex == hashlib.sha256(DATA).hexdigest()
    assert s1.digest == Digest.of_bytes(b1)
    assert s1.size == len(b1)
    assert s1.uncompressed_size == len(DATA)
    assert detect_compression(b1[:4]) == compression
    assert decompress(io.BytesIO(b1)).read() == DATA


def test_gzip_header_has_no_mtime_or_name() -> None:
    dest = io.BytesIO()
    compress_layer(io.BytesIO(b"x" * 10), dest, compression="gzip", level=9)
    raw = dest.getvalue()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert gzip.decompress(raw) == b"x" * 10


def test_gzip_levels_differ_but_stay_valid() -> None:
    sizes = set()
    for level in (0, 1, 3, None):
        dest = io.BytesIO()
        compress_layer(io.BytesIO(DATA), dest, compression="gzip", level=level)
        assert gzip.decompress(dest.getvalue()) == DATA
        sizes.add(len(dest.getvalue()))
    assert len(sizes) > 1


def test_decompress_autodetects_mislabelled_and_multiframe() -> None:
    gz = gzip.compress(b"abc") + gzip.compress(b"def")
    assert decompress(io.BytesIO(gz), "none").read() == b"abcdef"
    c = zstandard.ZstdCompressor()
    zs = c.compress(b"abc") + c.compress(b"def")
    assert decompress(io.BytesIO(zs), "gzip").read() == b"abcdef"
    assert decompress(io.BytesIO(b"ab"), "auto").read() == b"ab"
    assert decompress(io.BytesIO(b""), "auto").read() == b""


def test_decompress_corrupt_raises_image_format_error() -> None:
    gz = gzip.compress(DATA)
    r = decompress(io.BytesIO(gz[: len(gz) // 2]), what="layer L")
    with pytest.raises(ImageFormatError, match=r"layer L: gzip data is corrupt or truncated"):
        drain(r)
    zs = zstandard.ZstdCompressor(write_checksum=True).compress(DATA)
    for cut in (5, len(zs) // 2, len(zs) - 2):
        r = decompress(io.BytesIO(zs[:cut]))
        with pytest.raises(ImageFormatError, match="zstd data is corrupt or truncated"):
            drain(r)
    bad = bytearray(zs)
    bad[-6] ^= 0xFF
    with pytest.raises(ImageFormatError, match="zstd data is corrupt"):
        decompress(io.BytesIO(bytes(bad))).read()


def test_file_layer_computes_lazily(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    with blob.open("wb") as f:
        stats = compress_layer(io.BytesIO(DATA), f, compression="gzip")
    layer = FileLayer(blob, media_type=mediatypes.OCI_LAYER_GZIP)
    assert layer.digest() == stats.digest
    assert layer.size() == stats.size
    assert layer.diff_id() == stats.diff_id
    with layer.uncompressed() as u:
        assert u.read() == DATA


def test_file_layer_verifies_given_digest(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(b"hello"))
    wrong = Digest.of_bytes(b"something else")
    layer = FileLayer(
        blob, media_type=mediatypes.DOCKER_LAYER, digest=wrong, size=blob.stat().st_size
    )
    with (
        pytest.raises(ImageFormatError, match=f"layer blob {blob} has digest"),
        layer.compressed() as f,
    ):
        f.read()
    missing = FileLayer(tmp_path / "nope")
    with pytest.raises(ImageFormatError, match="cannot open layer blob"):
        missing.digest()


def test_blob_layer_truncated() -> None:
    full = gzip.compress(DATA)
    layer = BlobLayer(
        lambda: _ctx(full[:1000]),
        media_type=mediatypes.DOCKER_LAYER,
        digest=Digest.of_bytes(full),
        size=len(full),
        what="layer 3 of reg/x:y",
    )
    with (
        layer.compressed() as f,
        pytest.raises(ImageFormatError, match="layer 3 of reg/x:y is truncated"),
    ):
        drain(f)


def _ctx(data: bytes):  # type: ignore[no-untyped-def]
    from contextlib import nullcontext

    return nullcontext(io.BytesIO(data))


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from lamina.oci import compress_layer

    class Gen:
        def __init__(self, total):
            self.left = total
            self.block = bytes(range(256)) * 4096 + b"\\x00" * 3
        def read(self, n=-1):
            if self.left <= 0:
                return b""
            n = min(n if n > 0 else 1 << 20, self.left)
            out = (self.block * (n // len(self.block) + 1))[:n]
            self.left -= n
            return out

    class Null:
        def write(self, b):
            return len(b)

    compress_layer(Gen(8 << 20), Null(), compression=sys.argv[1])  # warm up imports
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = compress_layer(Gen(300 << 20), Null(), compression=sys.argv[1], level=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert stats.uncompressed_size == 300 << 20
    print(after - before)
    """
)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compress_layer_memory_bounded(compression: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, compression],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    growth_kib = int(out.stdout.strip())
    assert growth_kib < 32 * 1024, f"RSS grew by {growth_kib} KiB compressing 300 MiB"
