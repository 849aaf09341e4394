from __future__ import annotations

import io

import zstandard
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lamina.oci import Digest, compress_layer, decompress, detect_compression

payloads = st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=64), st.integers(1, 5000)),
)


@settings(max_examples=60, deadline=None)
@given(data=payloads, compression=st.sampled_from(["gzip", "zstd", "none"]))
def test_compress_decompress_roundtrip(data: bytes, compression: str) -> None:
    # content is sniffed, so plain data must not begin with a gzip/zstd magic (a tar never does)
    assume(compression != "none" or detect_compression(data[:4]) == "none")
    out = io.BytesIO()
    stats = compress_layer(io.BytesIO(data), out, compression=compression)  # type: ignore[arg-type]
    assert stats.diff_id == Digest.of_bytes(data)
    assert decompress(io.BytesIO(out.getvalue())).read() == data


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(payloads, min_size=1, max_size=3),
    level=st.integers(1, 19),
    checksum=st.booleans(),
    content_size=st.booleans(),
)
def test_zstd_frame_walker_accepts_foreign_streams(
    frames: list[bytes], level: int, checksum: bool, content_size: bool
) -> None:
    c = zstandard.ZstdCompressor(
        level=level, write_checksum=checksum, write_content_size=content_size
    )
    blob = b"".join(c.compress(f) for f in frames)
    assert decompress(io.BytesIO(blob)).read() == b"".join(frames)
