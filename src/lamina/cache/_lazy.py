"""Lazy cache hits: a hit's layer is downloaded and verified when it is first read.

A registry lookup checks the entry's manifest, config, shape and age but leaves the
layer blob where it is. :class:`LazyLayer` fetches the blob on first read into a file
under the work directory (streamed, bounded memory, digest and size checked) and later
reads use the file. A build whose stages all hit therefore downloads only the layers
its outputs need, and a push to the cache's registry can mount them instead.

When the fetch finds the blob corrupted (or cannot get it), the read raises
:class:`CorruptedCacheError` naming the entry's key: the builder marks the key bad
(it misses from then on) and rebuilds from the stage that used it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from lamina.cache._common import CHUNK
from lamina.errors import FilesystemError, ImageFormatError, LaminaError
from lamina.oci import Digest, DigestingReader, FileLayer, Layer

__all__ = ["CorruptedCacheError", "LazyLayer", "fetch_all"]


class CorruptedCacheError(LaminaError):
    """Cache entries whose layer blob turned out unusable when it was read: corrupted
    (its bytes do not match the descriptor) or unreadable (it could not be fetched).
    The message starts with that word."""

    code = "cache-corrupted"

    def __init__(self, keys: Sequence[str], message: str) -> None:
        super().__init__(
            message,
            hint="the entries are treated as misses and rebuilt; nothing to do unless "
            "this repeats (then check the cache repository's storage)",
        )
        self.keys = tuple(keys)


class LazyLayer:
    """A cached layer whose blob is fetched, verified and kept in a file on first read."""

    def __init__(
        self,
        *,
        key: str,
        open_blob: Callable[[], contextlib.AbstractContextManager[BinaryIO]] | None = None,
        download: Callable[[Path], None] | None = None,
        dest: Path,
        digest: Digest,
        size: int,
        media_type: str,
        diff_id: Digest,
        what: str,
        source_registry: str | None = None,
        source_repository: str | None = None,
    ) -> None:
        """The blob comes from ``open_blob`` (a stream this layer verifies while writing
        it) or from ``download`` (which writes ``dest`` itself, verified and atomically:
        a registry layer's pipelined download); exactly one is given."""
        if (open_blob is None) == (download is None):
            raise TypeError("LazyLayer needs exactly one of open_blob and download")
        self.key = key
        self._open_blob = open_blob
        self._dest = dest
        self._digest = digest
        self._size = size
        self._media_type = media_type
        self._diff_id = diff_id
        self._what = what
        #: where a push to the same registry can mount the blob from
        self.source_registry = source_registry
        self.source_repository = source_repository
        self._download_to = download
        self._lock = threading.Lock()
        self._file: FileLayer | None = None
        self._failed: str | None = None
        self._after: list[Callable[[Layer], None]] = []

    # the Layer protocol: metadata never needs the blob
    def digest(self) -> Digest:
        return self._digest

    def diff_id(self) -> Digest:
        return self._diff_id

    def size(self) -> int:
        return self._size

    def media_type(self) -> str:
        return self._media_type

    @contextlib.contextmanager
    def compressed(self) -> Iterator[BinaryIO]:
        with self.fetch().compressed() as f:
            yield f

    @contextlib.contextmanager
    def uncompressed(self) -> Iterator[BinaryIO]:
        with self.fetch().uncompressed() as f:
            yield f

    @property
    def fetched(self) -> bool:
        return self._file is not None

    def verified_file(self) -> Path | None:
        """The fetched, verified blob file (None before the first read)."""
        done = self._file
        return done.path if done is not None else None

    def after_fetch(self, callback: Callable[[Layer], None]) -> None:
        """Call ``callback(verified file layer)`` once the blob is fetched (now if it is)."""
        with self._lock:
            done = self._file
            if done is None:
                self._after.append(callback)
        if done is not None:
            callback(done)

    def fetch(self) -> FileLayer:
        """The verified blob as a file layer (downloading it the first time)."""
        with self._lock:
            if self._file is not None:
                return self._file
            if self._failed is not None:
                raise CorruptedCacheError([self.key], self._failed)
            try:
                self._download()
            except FilesystemError:
                raise
            except LaminaError as exc:
                # wrong bytes (digest, size, format) or no bytes at all (the registry
                # unreachable, the blob gone): a miss either way, said as what it is
                word = "corrupted" if isinstance(exc, ImageFormatError) else "unreadable"
                self._failed = f"{word}: {self._what}: {exc.message}"
                raise CorruptedCacheError([self.key], self._failed) from exc
            self._file = FileLayer(
                self._dest,
                media_type=self._media_type,
                digest=self._digest,
                size=self._size,
                diff_id=self._diff_id,
                verify=False,  # just verified while downloaded
            )
            done, after, self._after = self._file, self._after, []
        for callback in after:
            callback(done)
        return done

    def _download(self) -> None:
        dest = self._dest
        if dest.exists():  # another entry with the same blob fetched it (verified)
            return
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FilesystemError(
                f"cannot create {dest.parent}: {exc.strerror or exc}",
                hint="check the work directory's free space and permissions",
            ) from exc
        if self._download_to is not None:
            self._download_to(dest)
            return
        assert self._open_blob is not None
        partial = dest.with_name(f"{dest.name}.{threading.get_ident()}.partial")
        try:
            with self._open_blob() as src, partial.open("wb") as out:
                reader = DigestingReader(
                    src, expected=self._digest, expected_size=self._size, what=self._what
                )
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
                reader.verify()
            partial.replace(dest)
        except OSError as exc:
            raise FilesystemError(
                f"cannot write {partial}: {exc.strerror or exc}",
                hint="check the work directory's free space",
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()


def fetch_all(layers: Sequence[Layer], *, parallel: int = 4) -> None:
    """Fetch and verify every :class:`LazyLayer` among ``layers``, in parallel.

    Raises one :class:`CorruptedCacheError` naming every entry found unusable.
    """
    lazy = [layer for layer in layers if isinstance(layer, LazyLayer) and not layer.fetched]
    if not lazy:
        return
    bad: list[CorruptedCacheError] = []

    def one(layer: LazyLayer) -> None:
        try:
            layer.fetch()
        except CorruptedCacheError as exc:
            bad.append(exc)

    if len(lazy) == 1:
        one(lazy[0])
    else:
        with ThreadPoolExecutor(max_workers=min(parallel, len(lazy))) as pool:
            for future in [pool.submit(one, layer) for layer in lazy]:
                future.result()
    if bad:
        keys = [k for exc in bad for k in exc.keys]
        raise CorruptedCacheError(keys, "; ".join(exc.message for exc in bad))
