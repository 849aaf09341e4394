"""Content digests and streaming hash helpers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from lamina.errors import ImageFormatError

__all__ = ["Digest", "DigestingReader", "DigestingWriter", "Hasher"]

_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_LOWER_HEX_RE = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Digest:
    """A validated content digest, ``algorithm:hex`` (sha256 or sha512)."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        _validate(self.algorithm, self.hex, f"{self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, s: str) -> Digest:
        """Parse ``sha256:<64 lower hex>`` or ``sha512:<128 lower hex>``."""
        if not isinstance(s, str):
            raise ImageFormatError(
                f"invalid digest {s!r}: expected a string like 'sha256:<64 hex digits>'",
                hint="a digest is written 'sha256:' followed by 64 lowercase hex digits",
            )
        m = _DIGEST_RE.match(s)
        if m is None:
            raise ImageFormatError(
                f"invalid digest {s!r}: expected 'algorithm:hex'",
                hint="a digest is written 'sha256:' followed by 64 lowercase hex digits",
            )
        algorithm, hex_ = m.group(1), m.group(2)
        _validate(algorithm, hex_, s)
        return cls(algorithm=algorithm, hex=hex_)

    @classmethod
    def sha256_hex(cls, hex_: str) -> Digest:
        """A sha256 digest from its hex part."""
        return cls(algorithm="sha256", hex=hex_)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data``."""
        h = Hasher(algorithm)
        h.update(data)
        return h.digest()

    def new_hasher(self) -> Hasher:
        """A hasher for this digest's algorithm."""
        return Hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"

    @property
    def short(self) -> str:
        """The first 12 hex digits, for logs."""
        return self.hex[:12]


def _validate(algorithm: str, hex_: str, text: str) -> None:
    want = _HEX_LENGTHS.get(algorithm)
    if want is None:
        raise ImageFormatError(
            f"invalid digest {text!r}: unsupported algorithm {algorithm!r}",
            hint="lamina supports sha256 and sha512 digests",
        )
    if len(hex_) != want or _LOWER_HEX_RE.match(hex_) is None:
        raise ImageFormatError(
            f"invalid digest {text!r}: a {algorithm} digest needs exactly {want} "
            f"lowercase hex digits (got {len(hex_)} characters)",
            hint="check that the digest was copied completely and is lowercase",
        )


class Hasher:
    """Incremental hashing that also counts bytes."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _HEX_LENGTHS:
            raise ImageFormatError(
                f"unsupported digest algorithm {algorithm!r}",
                hint="lamina supports sha256 and sha512 digests",
            )
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(algorithm=self.algorithm, hex=self._h.hexdigest())


class DigestingWriter:
    """A write-only file-like wrapper hashing (and counting) what passes through.

    ``dest`` may be None to only hash.
    """

    def __init__(self, dest: IO[bytes] | None, algorithm: str = "sha256") -> None:
        self._dest = dest
        self.hasher = Hasher(algorithm)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.hasher.update(data)
        if self._dest is not None:
            self._dest.write(data)
        return len(data)

    def flush(self) -> None:
        if self._dest is not None:
            self._dest.flush()

    def writable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self.hasher.size

    def digest(self) -> Digest:
        return self.hasher.digest()


class DigestingReader:
    """A read-only file-like wrapper hashing what is read through it.

    With ``expected`` (and/or ``expected_size``), reaching EOF verifies the data:
    a digest mismatch, a truncated stream or a too-long stream raises
    :class:`ImageFormatError` naming ``what`` instead of returning the final
    chunk. Reading more than ``expected_size`` bytes is reported as soon as it
    happens.
    """

    def __init__(
        self,
        src: IO[bytes] | BinaryIO | Any,
        *,
        expected: Digest | None = None,
        expected_size: int | None = None,
        what: str = "blob",
        algorithm: str | None = None,
    ) -> None:
        self._src = src
        self._expected = expected
        self._expected_size = expected_size
        self._what = what
        algo = algorithm or (expected.algorithm if expected is not None else "sha256")
        self.hasher = Hasher(algo)
        self._verified = False
        self._eof = False

    @property
    def size(self) -> int:
        return self.hasher.size

    def digest(self) -> Digest:
        return self.hasher.digest()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._eof:
            return b""
        try:
            data = self._src.read() if n is None or n < 0 else self._src.read(n)
        except OSError as exc:
            raise ImageFormatError(
                f"reading {self._what} failed after {self.hasher.size} bytes: {exc}",
                hint="the blob may be truncated or the connection/storage failed; retry",
            ) from exc
        if data is None:
            data = b""
        if data:
            self.hasher.update(data)
            if self._expected_size is not None and self.hasher.size > self._expected_size:
                raise ImageFormatError(
                    f"{self._what} is longer than its declared size of "
                    f"{self._expected_size} bytes (read {self.hasher.size} so far)",
                    hint="the manifest's descriptor does not match the stored blob",
                )
            if n is None or n < 0:
                self._finish()
            elif self._expected_size is not None and self.hasher.size == self._expected_size:
                # all declared bytes read: verify now so the caller never keeps a
                # bad final chunk without an error.
                self._verify_digest()
            return bytes(data)
        self._finish()
        return b""

    def readinto(self, buf: bytearray | memoryview) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._eof = True
        if self._expected_size is not None and self.hasher.size != self._expected_size:
            raise ImageFormatError(
                f"{self._what} is truncated: got {self.hasher.size} bytes, "
                f"expected {self._expected_size}",
                hint="the download or stored file was cut short; retry or re-fetch the blob",
            )
        self._verify_digest()

    def _verify_digest(self) -> None:
        if self._verified or self._expected is None:
            self._verified = True
            return
        got = self.hasher.digest()
        self._verified = True
        if got != self._expected:
            raise ImageFormatError(
                f"{self._what} has digest {got} but {self._expected} was expected "
                f"({self.hasher.size} bytes read)",
                hint="the blob is corrupt or the registry served the wrong content; retry",
            )

    def verify(self) -> None:
        """Drain nothing; verify what was read so far is complete and correct."""
        self._finish()

    def close(self) -> None:
        close = getattr(self._src, "close", None)
        if close is not None:
            close()
