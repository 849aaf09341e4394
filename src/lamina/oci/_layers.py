"""Concrete layers, the one-pass streaming compressor and decompression."""

from __future__ import annotations

import errno
import io
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from isal import igzip, isal_zlib

from lamina.errors import FilesystemError, ImageFormatError, LaminaError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest, DigestingReader, Hasher
from lamina.oci._protocols import Layer

__all__ = [
    "CHUNK_SIZE",
    "BlobLayer",
    "FileLayer",
    "LayerStats",
    "compress_layer",
    "decompress",
    "detect_compression",
    "recompress",
]

#: read/write chunk size used by every streaming loop in this package
CHUNK_SIZE = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# gzip header: magic, CM=deflate, FLG=0 (no name), MTIME=0, XFL=0, OS=255 (unknown)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_ZSTD_DEFAULT_LEVEL = 3
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)

Compression = mt.Compression


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerStats:
    """What :func:`compress_layer` measured in its single pass."""

    digest: Digest
    diff_id: Digest
    size: int
    uncompressed_size: int


def _isal_level(level: int | None) -> int:
    if level is None or level < 0:
        return int(isal_zlib.ISAL_DEFAULT_COMPRESSION)
    return min(level, int(isal_zlib.ISAL_BEST_COMPRESSION))


def compress_layer(
    uncompressed: IO[bytes] | BinaryIO,
    dest: IO[bytes] | BinaryIO,
    *,
    compression: Compression = "gzip",
    level: int | None = None,
) -> LayerStats:
    """Compress a tar stream to ``dest`` in one pass with bounded memory.

    Computes the diff_id (sha256 of the input), the digest and size of the
    compressed output. gzip output has a fixed header (mtime 0, no file name,
    OS "unknown") so the same input always gives the same digest; gzip levels
    above 3 are clamped to isa-l's best (3), ``None``/negative means default.
    zstd uses level 3 by default, single-threaded (deterministic).
    """
    diff = Hasher()
    out = Hasher()

    def emit(data: bytes) -> None:
        if data:
            out.update(data)
            try:
                dest.write(data)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise FilesystemError(
                        f"the disk is full after writing {out.size - len(data)} bytes of the "
                        f"compressed layer ({diff.size} bytes of its tar): {exc.strerror}",
                        hint="free space (or raise the quota) where the build directory "
                        "(--kaniko-dir) or the output is",
                    ) from exc
                raise ImageFormatError(
                    f"writing the compressed layer failed: {exc}",
                    hint="check free space and permissions of the destination",
                ) from exc

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                chunk = uncompressed.read(CHUNK_SIZE)
            except OSError as exc:
                raise ImageFormatError(
                    f"reading the layer tar stream failed after {diff.size} bytes: {exc}",
                    hint="the layer source was interrupted",
                ) from exc
            if not chunk:
                return
            diff.update(chunk)
            yield chunk

    if compression == "gzip":
        comp = isal_zlib.compressobj(_isal_level(level), isal_zlib.DEFLATED, -15)
        crc = 0
        emit(_GZIP_HEADER)
        for chunk in chunks():
            crc = isal_zlib.crc32(chunk, crc)
            emit(comp.compress(chunk))
        emit(comp.flush())
        emit(struct.pack("<II", crc & 0xFFFFFFFF, diff.size & 0xFFFFFFFF))
    elif compression == "zstd":
        import zstandard  # only zstd layers load it

        zlevel = _ZSTD_DEFAULT_LEVEL if level is None or level < 0 else level
        zcomp = zstandard.ZstdCompressor(
            level=zlevel, write_content_size=False, write_checksum=True
        ).compressobj()
        try:
            for chunk in chunks():
                emit(zcomp.compress(chunk))
            emit(zcomp.flush())
        except zstandard.ZstdError as exc:
            raise ImageFormatError(f"zstd compression failed: {exc}") from exc
    elif compression == "none":
        for chunk in chunks():
            emit(chunk)
    else:
        raise ImageFormatError(
            f"unknown compression {compression!r}", hint="use gzip, zstd or none"
        )
    return LayerStats(
        digest=out.digest(), diff_id=diff.digest(), size=out.size, uncompressed_size=diff.size
    )


def detect_compression(head: bytes) -> Compression:
    """Compression of a blob from its first bytes (gzip, zstd, else none)."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


class _ZstdFrameCheck:
    """Walks zstd frame and block headers (not content) to detect truncation.

    zstandard's stream reader reports a stream cut inside a frame as a clean
    EOF; this cheap parallel walk over the compressed bytes tells whether the
    input ended exactly between frames.
    """

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = b""
        self._skip = 0
        self._checksum = False
        self._last = False
        self.error: str | None = None

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and self.error is None

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and self.error is None:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                if not self._skip:
                    self._after_content()
                continue
            take = min(self._need - len(self._buf), n - i)
            self._buf += data[i : i + take]
            i += take
            if len(self._buf) == self._need:
                field, self._buf = self._buf, b""
                self._handle(field)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _skip_then(self, count: int) -> None:
        self._skip = count
        if not count:
            self._after_content()

    def _after_content(self) -> None:
        if self._state == "skippable":
            self._expect("magic", 4)
        elif self._last:
            self._expect("checksum", 4) if self._checksum else self._expect("magic", 4)
        else:
            self._expect("block", 3)

    def _handle(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(field, "little")
            if magic == 0xFD2FB528:
                self._expect("fhd", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._expect("skippable_size", 4)
            else:
                self.error = "bad frame magic"
        elif state == "skippable_size":
            self._state = "skippable"
            self._skip_then(int.from_bytes(field, "little"))
        elif state == "fhd":
            fhd = field[0]
            fcs_flag, single, self._checksum = fhd >> 6, bool(fhd & 0x20), bool(fhd & 0x04)
            size = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
            size += (1 if single else 0, 2, 4, 8)[fcs_flag]
            self._last = False
            self._expect("header_rest", size)
            if size == 0:
                self._expect("block", 3)
        elif state == "header_rest":
            self._expect("block", 3)
        elif state == "block":
            header = int.from_bytes(field, "little")
            self._last = bool(header & 1)
            block_type, size = (header >> 1) & 3, header >> 3
            if block_type == 3:
                self.error = "reserved block type"
                return
            self._state = "content"
            self._skip_then(1 if block_type == 1 else size)
        elif state == "checksum":
            self._expect("magic", 4)


class _Prefixed(io.RawIOBase):
    """A raw reader that yields ``prefix`` then the rest of ``src``."""

    def __init__(
        self, prefix: bytes, src: IO[bytes] | BinaryIO, check: _ZstdFrameCheck | None = None
    ) -> None:
        self._prefix = prefix
        self._src = src
        self.check = check

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            data = self._prefix[:n]
            self._prefix = self._prefix[n:]
        else:
            data = self._src.read(len(view))
        if not data:
            return 0
        if self.check is not None:
            self.check.feed(data)
        view[: len(data)] = data
        return len(data)


class _Translating(io.RawIOBase):
    """Reads a decompressing stream, turning codec errors into ImageFormatError."""

    def __init__(
        self,
        inner: Any,
        what: str,
        compression: str,
        close: Callable[[], None],
        *,
        at_eof: Callable[[], str | None] | None = None,
        codec_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self._inner = inner
        self._errors: tuple[type[Exception], ...] = (
            OSError,
            EOFError,
            zlib.error,
            _ISAL_ERROR,
            *codec_errors,
        )
        self._at_eof = at_eof
        self._what = what
        self._compression = compression
        self._close = close
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self._read(CHUNK_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        return self._read(size)

    def _fail(self, problem: object) -> ImageFormatError:
        return ImageFormatError(
            f"{self._what}: {self._compression} data is corrupt or truncated after "
            f"{self.bytes_read} uncompressed bytes: {problem}",
            hint="the layer blob is damaged or its media type does not match its content",
        )

    def _read(self, size: int) -> bytes:
        if size == 0:
            return b""
        try:
            data = self._inner.read(size)
        except LaminaError:
            raise
        except self._errors as exc:
            raise self._fail(exc) from exc
        if not data and self._at_eof is not None:
            problem = self._at_eof()
            if problem:
                raise self._fail(problem)
        self.bytes_read += len(data)
        return bytes(data)

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()


def decompress(
    stream: IO[bytes] | BinaryIO,
    compression: Compression | Literal["auto"] = "auto",
    *,
    what: str = "layer",
) -> BinaryIO:
    """A reader of the uncompressed bytes of ``stream``.

    The compression is detected by magic bytes in every case (registries
    sometimes mislabel layers); ``compression`` is only the declared one. Closing
    the result does not close ``stream``. Corrupt data raises ImageFormatError.
    """
    del compression  # the content decides; the declared type is advisory
    try:
        head = stream.read(4)
        while len(head) < 4:
            more = stream.read(4 - len(head))
            if not more:
                break
            head += more
    except OSError as exc:
        raise ImageFormatError(f"{what}: reading failed: {exc}") from exc
    actual = detect_compression(head)
    check = _ZstdFrameCheck() if actual == "zstd" else None
    prefixed = _Prefixed(head, stream, check)
    raw = io.BufferedReader(prefixed, CHUNK_SIZE)
    inner: Any
    at_eof: Callable[[], str | None] | None = None
    codec_errors: tuple[type[Exception], ...] = ()
    if actual == "gzip":
        inner = igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[no-untyped-call]
    elif actual == "zstd":
        import zstandard  # only zstd layers load it

        codec_errors = (zstandard.ZstdError,)
        inner = zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK_SIZE, read_across_frames=True, closefd=False
        )

        def at_eof() -> str | None:
            assert check is not None
            while raw.read(CHUNK_SIZE):  # feed any unread tail to the frame check
                pass
            if check.error:
                return check.error
            return None if check.complete else "the stream ends inside a zstd frame"

    else:
        inner = raw
    translating = _Translating(
        inner, what, actual, inner.close, at_eof=at_eof, codec_errors=codec_errors
    )
    return cast(BinaryIO, translating)


# ---------------------------------------------------------------------------
# Layers


class _Guarded(io.RawIOBase):
    """Passes reads through, turning OSError into ImageFormatError naming the blob."""

    def __init__(self, src: IO[bytes] | BinaryIO, what: str) -> None:
        self._src = src
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._src.read(-1 if size is None else size)
        except OSError as exc:
            raise ImageFormatError(
                f"reading {self._what} failed: {exc}",
                hint="the blob storage or connection failed; retry",
            ) from exc
        return bytes(data or b"")

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


Opener = Callable[[], AbstractContextManager[BinaryIO]]


class BlobLayer:
    """A layer whose compressed blob is opened on demand by ``opener``.

    ``digest``/``size``/``diff_id`` may be given (e.g. from a manifest and
    config) or are computed lazily by streaming the blob once. Opening the
    compressed blob verifies it against the digest and size when they were
    given by the caller.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        media_type: str = mt.OCI_LAYER_GZIP,
        digest: Digest | None = None,
        size: int | None = None,
        diff_id: Digest | None = None,
        what: str = "layer",
        verify: bool = True,
    ) -> None:
        self._opener = opener
        self._media_type = media_type
        self._digest = digest
        self._size = size
        self._diff_id = diff_id
        self._verify = verify and digest is not None
        self.what = what

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.what} {self._digest or '?'}>"

    def _measure(self) -> None:
        with self._opener() as f:
            r = DigestingReader(f, what=self.what)
            while r.read(CHUNK_SIZE):
                pass
        self._digest, self._size = r.digest(), r.size

    def digest(self) -> Digest:
        if self._digest is None:
            self._measure()
        assert self._digest is not None
        return self._digest

    def size(self) -> int:
        if self._size is None:
            self._measure()
        assert self._size is not None
        return self._size

    def diff_id(self) -> Digest:
        if self._diff_id is None:
            h = Hasher()
            with self.uncompressed() as f:
                while chunk := f.read(CHUNK_SIZE):
                    h.update(chunk)
            self._diff_id = h.digest()
        return self._diff_id

    def media_type(self) -> str:
        return self._media_type

    @contextmanager
    def compressed(self) -> Iterator[BinaryIO]:
        with self._opener() as f:
            if self._verify:
                yield cast(
                    BinaryIO,
                    DigestingReader(
                        f, expected=self._digest, expected_size=self._size, what=self.what
                    ),
                )
            else:
                yield cast(BinaryIO, _Guarded(f, self.what))

    @contextmanager
    def uncompressed(self) -> Iterator[BinaryIO]:
        with self.compressed() as f:
            reader = decompress(f, mt.layer_compression(self._media_type), what=self.what)
            try:
                yield reader
            finally:
                reader.close()


class FileLayer(BlobLayer):
    """A layer whose compressed blob is a file on disk."""

    def __init__(
        self,
        path: Path,
        *,
        media_type: str = mt.OCI_LAYER_GZIP,
        digest: Digest | None = None,
        size: int | None = None,
        diff_id: Digest | None = None,
        verify: bool | None = None,
    ) -> None:
        self.path = Path(path)
        super().__init__(
            self._open,
            media_type=media_type,
            digest=digest,
            size=size,
            diff_id=diff_id,
            what=f"layer blob {self.path}",
            verify=digest is not None if verify is None else verify,
        )

    @classmethod
    def from_stats(cls, path: Path, stats: LayerStats, *, media_type: str) -> FileLayer:
        """A layer for a blob just written by :func:`compress_layer` (no re-verification)."""
        return cls(
            path,
            media_type=media_type,
            digest=stats.digest,
            size=stats.size,
            diff_id=stats.diff_id,
            verify=False,
        )

    @contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise ImageFormatError(
                f"cannot open layer blob {self.path}: {exc.strerror or exc}",
                hint="the blob file was removed or is unreadable",
            ) from exc
        with f:
            yield f


def recompress(
    layer: Layer,
    dest: Path,
    *,
    compression: Compression = "gzip",
    level: int | None = None,
    flavour: Literal["oci", "docker"] = "oci",
) -> FileLayer:
    """Write ``layer``'s uncompressed tar, compressed anew, to the file ``dest``.

    For sources whose layers are stored uncompressed (``docker save``) or in a
    compression the destination cannot take. The diff_id is checked against the
    source layer's. The file is written atomically.
    """
    from lamina.oci._fsutil import atomic_file

    with layer.uncompressed() as src, atomic_file(dest) as out:
        stats = compress_layer(src, out, compression=compression, level=level)
    expected = layer.diff_id()
    if stats.diff_id != expected:
        dest.unlink(missing_ok=True)
        raise ImageFormatError(
            f"layer {layer.digest()} uncompressed to {stats.diff_id}, not its diff_id {expected}",
            hint="the layer blob does not match the image config; the image is corrupt",
        )
    return FileLayer.from_stats(dest, stats, media_type=mt.layer_media_type(flavour, compression))
