"""copy_verified: the pipelined, verified blob copy used for downloads."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import Digest
from lamina.registry._streams import _IN_FLIGHT, copy_verified


def _reader(chunks: list[bytes]) -> Iterator[bytes]:
    yield from chunks


def _read_chunk(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    it = _reader(chunks)
    return lambda _n: next(it, b"")


def _digest(data: bytes) -> Digest:
    return Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


CHUNKS = [bytes([i]) * (64 * 1024) for i in range(50)]
DATA = b"".join(CHUNKS)


def test_copies_and_verifies() -> None:
    out = io.BytesIO()
    copy_verified(_read_chunk(CHUNKS), out, expected=_digest(DATA), size=len(DATA), what="blob")
    assert out.getvalue() == DATA


def test_wrong_digest_truncation_and_excess_are_errors() -> None:
    with pytest.raises(ImageFormatError, match="has digest"):
        copy_verified(
            _read_chunk(CHUNKS), io.BytesIO(), expected=_digest(b"x"), size=len(DATA), what="b"
        )
    with pytest.raises(ImageFormatError, match="truncated"):
        copy_verified(
            _read_chunk(CHUNKS[:-1]), io.BytesIO(), expected=_digest(DATA), size=len(DATA), what="b"
        )
    received: list[int] = []
    chunks = iter(CHUNKS)

    def counting(_n: int) -> bytes:
        chunk = next(chunks, b"")
        received.append(len(chunk))
        return chunk

    with pytest.raises(ImageFormatError, match="longer than the 100 bytes"):
        copy_verified(counting, io.BytesIO(), expected=_digest(DATA), size=100, what="b")
    assert len(received) == 1  # refused as soon as the first chunk overflowed


class _SlowFailingWriter(io.RawIOBase):
    """Blocks its first write until released, then fails the third one."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        self.release.wait(10)
        self.writes += 1
        if self.writes == 3:
            raise OSError(28, "No space left on device")
        return len(b)  # type: ignore[arg-type]


def test_memory_is_bounded_and_a_write_failure_stops_the_copy() -> None:
    writer = _SlowFailingWriter()
    many = [b"z" * 1024] * (_IN_FLIGHT * 4)
    received = 0
    at_release: list[int] = []

    def reading(_n: int) -> bytes:
        nonlocal received
        if received >= len(many):
            return b""
        received += 1
        return many[received - 1]

    def release() -> None:
        at_release.append(received)
        writer.release.set()

    # the first write is stuck for 0.5 s: the receiver must stall on the full queue
    timer = threading.Timer(0.5, release)
    timer.start()
    try:
        with pytest.raises(OSError, match="No space left"):
            copy_verified(
                reading,
                writer,  # type: ignore[arg-type]
                expected=_digest(b"".join(many)),
                size=None,
                what="b",
            )
    finally:
        timer.cancel()
    # one chunk in the writer, _IN_FLIGHT queued, one waiting to be queued
    assert at_release == [_IN_FLIGHT + 2]
    assert writer.writes == 3
    assert received < len(many)  # the receiver stopped after the failure
