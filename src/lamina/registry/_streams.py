"""Verified byte streams: digests checked while reading, decompression of layers."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

import httpx

from lamina.errors import ImageFormatError, LaminaError
from lamina.oci import Digest
from lamina.oci import mediatypes as mt

from ._errors import error_from_transport

__all__ = ["CHUNK", "VerifyingRaw", "iter_reader", "open_uncompressed", "verified_reader"]

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
                    raise ImageFormatError(
                        f"{self._what} is longer than the {self._size} bytes its "
                        "descriptor declares",
                        hint="the registry served different content than the manifest "
                        "describes; the image is corrupt",
                    )
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
                raise ImageFormatError(
                    f"{self._what} is longer than the {self._size} bytes its descriptor declares",
                    hint="the registry served different content than the manifest "
                    "describes; the image is corrupt",
                )
            yield data

    def _finish(self) -> None:
        if self._eof:
            return
        self._eof = True
        got = self._hasher.size
        if self._size is not None and got != self._size:
            raise ImageFormatError(
                f"{self._what} is truncated: got {got} of {self._size} bytes",
                hint="the transfer was cut short; retry (see --image-download-retry)",
            )
        if self._expected is not None:
            digest = self._hasher.digest()
            if digest != self._expected:
                raise ImageFormatError(
                    f"{self._what} has digest {digest}, expected {self._expected}",
                    hint="the content is corrupt or was altered in transit; it was not used",
                )

    def drain(self) -> None:
        """Read to the end (verifying), discarding the data."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass

    def close(self) -> None:
        if not self.closed and self._close is not None:
            self._close()
        super().close()


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
