"""Verified byte streams: digests checked while reading, decompression of layers."""

from __future__ import annotations

import io
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

import httpx

from lamina.errors import ImageFormatError, LaminaError
from lamina.oci import Digest, Hasher
from lamina.oci import mediatypes as mt

from ._errors import error_from_transport

__all__ = [
    "CHUNK",
    "VerifyingRaw",
    "copy_verified",
    "iter_reader",
    "open_uncompressed",
    "verified_reader",
]

CHUNK = 1024 * 1024


class VerifyingRaw(io.RawIOBase):
    """Reads through ``read_chunk`` and checks size and digest at EOF.

    A mismatch raises :class:`ImageFormatError` instead of returning the last
    bytes (so bad content is never used as if it were complete); so does more
    data than ``size`` as soon as it arrives.
    """

    def __init__(
        self,
        read_chunk: Callable[[int], bytes],
        *,
        expected: Digest | None,
        size: int | None,
        what: str,
        close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._read_chunk = read_chunk
        self._expected = expected
        self._size = size
        self._what = what
        self._hasher = (expected or Digest.of_bytes(b"")).new_hasher()
        self._pending = memoryview(b"")
        self._eof = False
        self._close = close

    def readable(self) -> bool:
        return True

    @property
    def bytes_read(self) -> int:
        return self._hasher.size

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._pending and not self._eof:
            data = self._read_chunk(max(len(view), CHUNK))
            if data:
                self._hasher.update(data)
                if self._size is not None and self._hasher.size > self._size:
                    raise _too_long(self._what, self._size)
                self._pending = memoryview(data)
            else:
                self._finish()
        if not self._pending:
            return 0
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def chunks(self) -> Iterator[bytes]:
        """The remaining data as it arrives (verified at the end), without extra copies."""
        if self._pending:
            yield bytes(self._pending)
            self._pending = memoryview(b"")
        while not self._eof:
            data = self._read_chunk(CHUNK)
            if not data:
                self._finish()
                return
            self._hasher.update(data)
            if self._size is not None and self._hasher.size > self._size:
                raise _too_long(self._what, self._size)
            yield data

    def _finish(self) -> None:
        if self._eof:
            return
        self._eof = True
        _check_complete(self._hasher, self._expected, self._size, self._what)

    def drain(self) -> None:
        """Read to the end (verifying), discarding the data."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass

    def close(self) -> None:
        if not self.closed and self._close is not None:
            self._close()
        super().close()


def _too_long(what: str, size: int) -> ImageFormatError:
    return ImageFormatError(
        f"{what} is longer than the {size} bytes its descriptor declares",
        hint="the registry served different content than the manifest describes; the image "
        "is corrupt",
    )


def _check_complete(hasher: Hasher, expected: Digest | None, size: int | None, what: str) -> None:
    got = hasher.size
    if size is not None and got != size:
        raise ImageFormatError(
            f"{what} is truncated: got {got} of {size} bytes",
            hint="the transfer was cut short; retry (see --image-download-retry)",
        )
    if expected is not None:
        digest = hasher.digest()
        if digest != expected:
            raise ImageFormatError(
                f"{what} has digest {digest}, expected {expected}",
                hint="the content is corrupt or was altered in transit; it was not used",
            )


#: chunks received but not yet hashed and written (bounds copy_verified's memory: the
#: network gives at most 64 KiB per chunk, so this is a few MiB at most)
_IN_FLIGHT = 32


def copy_verified(
    read_chunk: Callable[[int], bytes],
    out: BinaryIO,
    *,
    expected: Digest,
    size: int | None,
    what: str,
) -> None:
    """Copy a stream into ``out``, checking its size and digest at the end.

    Receiving runs in the calling thread while a second thread hashes and writes what
    has arrived (both release the GIL for their large buffers), so a fast link waits
    neither for the hash nor for the disk. A mismatch raises :class:`ImageFormatError`
    after the copy; the caller must not use ``out`` then.
    """
    hasher = expected.new_hasher()
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=_IN_FLIGHT)
    failed: list[BaseException] = []

    def consume() -> None:
        try:
            while (chunk := pending.get()) is not None:
                hasher.update(chunk)
                out.write(chunk)
        except BaseException as exc:
            failed.append(exc)
            while pending.get() is not None:  # keep the receiver from blocking
                pass

    worker = threading.Thread(target=consume, name="lamina-blob-write", daemon=True)
    worker.start()
    received = 0
    try:
        while not failed:
            chunk = read_chunk(CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if size is not None and received > size:
                raise _too_long(what, size)
            pending.put(chunk)
    finally:
        pending.put(None)
        worker.join()
    if failed:
        raise failed[0]
    _check_complete(hasher, expected, size, what)


def iter_reader(chunks: Iterator[bytes], *, what: str, host: str) -> Callable[[int], bytes]:
    """A ``read_chunk`` over an httpx byte iterator, translating transport errors."""

    def read(_n: int) -> bytes:
        try:
            return next(chunks, b"")
        except httpx.TransportError as exc:
            raise error_from_transport(exc, what, host) from None
        except httpx.StreamError as exc:
            raise ImageFormatError(f"{what}: broken stream: {exc}") from None

    return read


def verified_reader(raw: VerifyingRaw) -> BinaryIO:
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=CHUNK))


def _decompressor_reader(src: BinaryIO, compression: str, what: str) -> Callable[[int], bytes]:
    if compression == "none":
        return src.read
    if compression == "gzip":
        from isal import igzip

        stream: Any = igzip.IGzipFile(fileobj=src, mode="rb")  # type: ignore[no-untyped-call]
    else:
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)

    def read(n: int) -> bytes:
        try:
            return bytes(stream.read(n))
        except LaminaError:
            raise
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise ImageFormatError(
                f"{what} is not valid {compression} data: {exc}",
                hint="the layer blob is corrupt or its media type is wrong",
            ) from None
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ == "ZstdError":
                raise ImageFormatError(
                    f"{what} is not valid zstd data: {exc}",
                    hint="the layer blob is corrupt or its media type is wrong",
                ) from None
            raise

    return read


def open_uncompressed(
    src: BinaryIO, media_type: str, *, diff_id: Digest | None, what: str
) -> VerifyingRaw:
    """The uncompressed tar of a layer blob stream, verified against ``diff_id``."""
    compression = mt.check_layer_media_type(media_type, what)
    return VerifyingRaw(
        _decompressor_reader(src, compression, what),
        expected=diff_id,
        size=None,
        what=f"{what} (uncompressed)",
    )
