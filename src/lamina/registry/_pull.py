"""Lazy remote images: manifests, configs and layers fetched on demand, verified."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from lamina.errors import FilesystemError, ImageFormatError, LaminaError, RegistryError
from lamina.oci import (
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Layer,
    Manifest,
    Reference,
)
from lamina.oci import mediatypes as mt

from ._errors import TransientRegistryError, with_retries
from ._options import RegistryOptions
from ._streams import (
    CHUNK,
    VerifyingRaw,
    copy_verified,
    iter_reader,
    open_uncompressed,
    verified_reader,
)
from ._transport import Endpoint

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteImage", "RemoteIndex", "RemoteLayer", "RemoteRepository", "download_layers"]

_log = logging.getLogger("lamina.registry")
_T = TypeVar("_T")

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_CONFIG_SIZE = 64 * 1024 * 1024
_SCHEMA1_HINT = (
    "Docker schema1 manifests are deprecated and unsupported; re-push the image with a "
    "current docker or with 'skopeo copy --format v2s2'"
)


class RemoteRepository:
    """One repository on one registry, read side; every call retried per the options."""

    def __init__(
        self, endpoint: Endpoint, ref: Reference, options: RegistryOptions, *, what: str
    ) -> None:
        self.endpoint = endpoint
        self.ref = ref
        self.options = options
        self.what = what
        self.scopes = (f"repository:{ref.repository}:pull",)

    @property
    def registry(self) -> str:
        return self.ref.registry

    @property
    def repository(self) -> str:
        return self.ref.repository

    def retry(self, operation: Callable[[], _T]) -> _T:
        return with_retries(
            operation,
            retries=self.options.image_download_retry,
            backoff=self.options.retry_backoff,
            max_delay=self.options.retry_max_delay,
        )

    # ------------------------------------------------------------------ manifests
    def fetch_manifest(self, identifier: str) -> tuple[bytes, str, Digest]:
        """(raw bytes, media type, digest) of the manifest at a tag or digest."""
        found = self.retry(lambda: self._fetch_manifest(identifier))
        assert found is not None
        return found

    def fetch_manifest_if_present(self, identifier: str) -> tuple[bytes, str, Digest] | None:
        """Like :meth:`fetch_manifest`, but None when the registry answers 404 (one GET)."""
        return self.retry(lambda: self._fetch_manifest(identifier, missing_ok=True))

    def _fetch_manifest(
        self, identifier: str, *, missing_ok: bool = False
    ) -> tuple[bytes, str, Digest] | None:
        path = f"/v2/{self.repository}/manifests/{identifier}"
        accept = ", ".join(mt.MANIFEST_ACCEPT)
        response = self.endpoint.send(
            "GET",
            path,
            scopes=self.scopes,
            what=self.what,
            headers={"Accept": accept},
            stream=True,
            follow_redirects=True,
        )
        with contextlib.closing(response):
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise self.endpoint.error(response, self.what)
            declared = int(response.headers.get("content-length") or 0)
            if declared > MAX_MANIFEST_SIZE:
                raise ImageFormatError(
                    f"{self.what}: the manifest is {declared} bytes, more than the "
                    f"{MAX_MANIFEST_SIZE} lamina accepts",
                )
            expected = Digest.parse(identifier) if ":" in identifier else None
            raw = VerifyingRaw(
                iter_reader(response.iter_bytes(), what=self.what, host=self.registry),
                expected=expected,
                size=declared or None,
                what=f"{self.what}: manifest",
            )
            body = bytearray()
            buf = bytearray(CHUNK)
            while n := raw.readinto(buf):
                body += buf[:n]
                if len(body) > MAX_MANIFEST_SIZE:
                    raise ImageFormatError(
                        f"{self.what}: the manifest is larger than the "
                        f"{MAX_MANIFEST_SIZE} bytes lamina accepts",
                    )
            data = bytes(body)
            content_type = response.headers.get("content-type", "")
            header_digest = response.headers.get("docker-content-digest")
        digest = Digest.of_bytes(data)
        if expected is None and header_digest:
            try:
                claimed = Digest.parse(header_digest)
            except ImageFormatError:
                claimed = None
            if claimed is not None and claimed.algorithm == "sha256" and claimed != digest:
                raise ImageFormatError(
                    f"{self.what}: the manifest has digest {digest} but the registry "
                    f"announced {claimed}",
                    hint="the registry or a proxy altered the manifest; it was not used",
                )
        media_type = self._media_type(data, content_type)
        return data, media_type, digest

    def _media_type(self, data: bytes, content_type: str) -> str:
        if mt.is_schema1(content_type):
            raise ImageFormatError(
                f"{self.what}: the image uses a Docker schema1 manifest", hint=_SCHEMA1_HINT
            )
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ImageFormatError(
                f"{self.what}: the manifest is not valid JSON",
                hint="the registry served a corrupt manifest",
            ) from None
        if not isinstance(obj, dict):
            raise ImageFormatError(f"{self.what}: the manifest is not a JSON object")
        if obj.get("schemaVersion") == 1:
            raise ImageFormatError(
                f"{self.what}: the image uses a Docker schema1 manifest", hint=_SCHEMA1_HINT
            )
        declared = obj.get("mediaType")
        media_type = declared if isinstance(declared, str) and declared else content_type
        media_type = media_type.split(";", 1)[0].strip()
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            media_type = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
        if not (mt.is_index(media_type) or mt.is_manifest(media_type)):
            raise ImageFormatError(
                f"{self.what}: unknown manifest media type {media_type!r}",
                hint="lamina pulls OCI manifests and indexes and Docker schema2 manifests "
                "and manifest lists",
            )
        return media_type

    def head_manifest(self, identifier: str) -> Descriptor | None:
        def head() -> Descriptor | None:
            response = self.endpoint.send(
                "HEAD",
                f"/v2/{self.repository}/manifests/{identifier}",
                scopes=self.scopes,
                what=self.what,
                headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)},
                follow_redirects=True,
            )
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self.endpoint.error(response, self.what)
            digest_header = response.headers.get("docker-content-digest")
            if not digest_header:
                return None  # cannot describe it without a GET
            return Descriptor(
                media_type=response.headers.get("content-type", "").split(";")[0].strip(),
                digest=Digest.parse(digest_header),
                size=int(response.headers.get("content-length") or 0),
            )

        return self.retry(head)

    # ------------------------------------------------------------------ blobs
    @contextlib.contextmanager
    def open_blob(
        self, digest: Digest, size: int | None, *, what: str, retry_start: bool = False
    ) -> Iterator[VerifyingRaw]:
        """A verifying stream of a blob (follows redirects to blob storage).

        ``retry_start`` retries getting the response; callers that can restart
        the whole transfer retry around this instead.
        """

        def start() -> VerifyingRaw:
            body = _ResumingBody(self, digest, size, what)
            return VerifyingRaw(body.read, expected=digest, size=size, what=what, close=body.close)

        raw = self.retry(start) if retry_start else start()
        try:
            yield raw
        finally:
            raw.close()

    def _blob_response(self, digest: Digest, what: str, offset: int = 0) -> httpx.Response:
        """The streaming GET of a blob (redirects to blob storage followed); 200 or an error.

        From ``offset`` on, a ``Range`` is asked for: the answer is 206 or a plain 200.
        """
        response = self.endpoint.send(
            "GET",
            f"/v2/{self.repository}/blobs/{digest}",
            scopes=self.scopes,
            what=what,
            headers={"Range": f"bytes={offset}-"} if offset else None,
            stream=True,
            follow_redirects=True,
        )
        if response.status_code not in ((200, 206) if offset else (200,)):
            try:
                raise self.endpoint.error(response, what)
            finally:
                response.close()
        return response

    def fetch_blob_bytes(self, digest: Digest, size: int, limit: int, *, what: str) -> bytes:
        if size > limit:
            raise ImageFormatError(f"{what} is {size} bytes, more than the {limit} allowed")

        def fetch() -> bytes:
            with self.open_blob(digest, size, what=what) as raw:
                return verified_reader_read_all(raw)

        return self.retry(fetch)

    def download_blob(self, digest: Digest, size: int, dest: Path, *, what: str) -> None:
        """Stream a blob into ``dest`` (atomically: a partial file never stays; concurrent
        downloads of one blob each write their own partial file)."""
        partial = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.partial")

        def download() -> None:
            try:
                body = _ResumingBody(self, digest, size, what)
                try:
                    with partial.open("wb") as out:
                        copy_verified(body.read, out, expected=digest, size=size, what=what)
                finally:
                    body.close()
                os.replace(partial, dest)
            except OSError as exc:  # the local disk, not the registry
                raise FilesystemError(
                    f"{what}: cannot write {partial}: {exc.strerror or exc}",
                    hint="check the free space and permissions of the build directory",
                ) from exc
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()

        self.retry(download)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", re.IGNORECASE)


class _ResumingBody:
    """The body of a blob GET that survives a transfer cut mid-stream.

    When the connection drops (or the body ends before ``size`` bytes), the blob is
    asked for again from the first byte not yet received, with a ``Range`` request: a
    206 answering that range continues the stream; a plain 200 (a server without range
    support) restarts it, and the bytes already delivered are skipped. At most
    ``--image-download-retry`` such resumptions per blob, with the usual backoff. The
    reader above verifies size and digest over everything delivered, so a server that
    changed the blob between the two requests is caught at the end.
    """

    def __init__(self, repo: RemoteRepository, digest: Digest, size: int | None, what: str):
        self._repo = repo
        self._digest = digest
        self._size = size
        self._what = what
        self._received = 0
        self._resumed = 0
        self._response: httpx.Response | None = None
        try:
            self._chunks: Callable[[int], bytes] = self._open(0)
        except BaseException:
            self.close()
            raise

    def _open(self, offset: int) -> Callable[[int], bytes]:
        response = self._repo._blob_response(self._digest, self._what, offset)
        self._response = response
        chunks = iter_reader(response.iter_bytes(), what=self._what, host=self._repo.registry)
        skip = offset
        if offset and response.status_code == 206:
            found = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if found is None or int(found.group(1)) != offset:
                raise ImageFormatError(
                    f"{self._what}: asked for bytes {offset}- of the blob, the registry "
                    f"answered the range {response.headers.get('content-range')!r}",
                    hint="the registry or a proxy mangles Range requests; retry the build",
                )
            skip = 0
        while skip:  # a plain 200: the blob again from its start
            chunk = chunks(CHUNK)
            if not chunk:
                break  # ends early again: read() resumes or reports it
            if len(chunk) > skip:
                rest = chunk[skip:]
                skip = 0
                return _prepend(rest, chunks)
            skip -= len(chunk)
        return chunks

    def _resume(self, cause: TransientRegistryError) -> TransientRegistryError | None:
        """Reopen the blob from the first byte not received; the last error when the
        retries are used up (None: resumed)."""
        options = self._repo.options
        while True:
            if self._resumed >= options.image_download_retry:
                return cause
            delay = min(options.retry_backoff * (2**self._resumed), options.retry_max_delay)
            self._resumed += 1
            _log.warning(
                "%s; resuming at byte %d, retry %d/%d in %.1fs",
                cause.message,
                self._received,
                self._resumed,
                options.image_download_retry,
                delay,
            )
            time.sleep(delay)
            self.close()
            try:
                self._chunks = self._open(self._received)
                return None
            except TransientRegistryError as exc:
                self.close()
                cause = exc

    def read(self, n: int) -> bytes:
        while True:
            try:
                chunk = self._chunks(n)
            except TransientRegistryError as exc:
                failed = self._resume(exc)
                if failed is not None:  # not transient any more: the retries are spent
                    raise RegistryError(failed.message, hint=failed.hint) from None
                continue
            if not chunk and self._size is not None and self._received < self._size:
                ended = TransientRegistryError(
                    f"{self._what}: the transfer ended after {self._received} of {self._size} bytes"
                )
                if self._resume(ended) is not None:
                    return b""  # the reader reports the truncation
                continue
            self._received += len(chunk)
            return chunk

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None


def _prepend(first: bytes, rest: Callable[[int], bytes]) -> Callable[[int], bytes]:
    pending = [first]

    def read(n: int) -> bytes:
        return pending.pop() if pending else rest(n)

    return read


def verified_reader_read_all(raw: VerifyingRaw) -> bytes:
    return b"".join(raw.chunks())


class RemoteLayer:
    """A layer in a registry: downloads nothing until opened."""

    def __init__(
        self,
        repo: RemoteRepository,
        descriptor: Descriptor,
        diff_id: Digest,
        *,
        image_ref: Reference,
    ) -> None:
        self._repo = repo
        self._descriptor = descriptor
        self._diff_id = diff_id
        self._what = f"{repo.what}: layer {descriptor.digest}"
        self._local: Path | None = None
        self.image_ref = image_ref

    @property
    def source_registry(self) -> str:
        return self._repo.registry

    @property
    def source_repository(self) -> str:
        return self._repo.repository

    @property
    def local_path(self) -> Path | None:
        """The verified blob on disk after :func:`download_layers`, else None."""
        return self._local

    def download_to(self, dest: Path) -> None:
        """Download the blob into ``dest`` (verified, atomically, retried per the options)."""
        self._repo.download_blob(self.digest(), self.size(), dest, what=self._what)

    def set_local_path(self, path: Path) -> None:
        self._local = path

    def descriptor(self) -> Descriptor:
        return self._descriptor

    def digest(self) -> Digest:
        return self._descriptor.digest

    def diff_id(self) -> Digest:
        return self._diff_id

    def size(self) -> int:
        return self._descriptor.size

    def media_type(self) -> str:
        return self._descriptor.media_type

    @contextlib.contextmanager
    def _compressed_raw(self) -> Iterator[VerifyingRaw]:
        if self._local is not None:
            try:
                fh = self._local.open("rb")
            except OSError as exc:
                raise RegistryError(
                    f"{self._what}: cannot open the downloaded blob {self._local}: "
                    f"{exc.strerror or exc}"
                ) from exc
            raw = VerifyingRaw(
                fh.read, expected=self.digest(), size=self.size(), what=self._what, close=fh.close
            )
            try:
                yield raw
            finally:
                raw.close()
            return
        with self._repo.open_blob(
            self.digest(), self.size(), what=self._what, retry_start=True
        ) as raw:
            yield raw

    @contextlib.contextmanager
    def compressed(self) -> Iterator[BinaryIO]:
        with self._compressed_raw() as raw:
            yield verified_reader(raw)
            raw.drain()  # a stream not read to the end is still verified

    @contextlib.contextmanager
    def uncompressed(self) -> Iterator[BinaryIO]:
        with self._compressed_raw() as raw:
            source = verified_reader(raw)
            tar = open_uncompressed(
                source, self.media_type(), diff_id=self._diff_id, what=self._what
            )
            try:
                yield verified_reader(tar)
                tar.drain()  # a stream not read to the end is still verified
                raw.drain()
            finally:
                tar.close()


class RemoteImage:
    """A single-platform image in a registry (lazy config, lazy layers)."""

    def __init__(
        self, repo: RemoteRepository, ref: Reference, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        self._repo = repo
        self.ref = ref
        self._raw = raw
        self._media_type = media_type
        self._digest = digest
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._raw_config: bytes | None = None
        self._config: ImageConfig | None = None
        self._layers: tuple[RemoteLayer, ...] | None = None

    @property
    def repository(self) -> RemoteRepository:
        return self._repo

    def manifest(self) -> Manifest:
        if self._manifest is None:
            manifest = Manifest.from_json(self._raw, what=f"manifest of {self.ref}")
            for i, layer in enumerate(manifest.layers):
                mt.check_layer_media_type(layer.media_type, f"layer {i} of {self.ref}")
            self._manifest = manifest
        return self._manifest

    def raw_manifest(self) -> bytes:
        return self._raw

    def digest(self) -> Digest:
        return self._digest

    def media_type(self) -> str:
        return self._media_type

    def raw_config(self) -> bytes:
        with self._lock:
            if self._raw_config is None:
                desc = self.manifest().config
                self._raw_config = self._repo.fetch_blob_bytes(
                    desc.digest,
                    desc.size,
                    MAX_CONFIG_SIZE,
                    what=f"{self._repo.what}: config {desc.digest}",
                )
            return self._raw_config

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.from_json(self.raw_config(), what=f"config of {self.ref}")
        return self._config

    def layers(self) -> Sequence[RemoteLayer]:
        if self._layers is None:
            manifest = self.manifest()
            diff_ids = self.config().diff_ids
            if len(diff_ids) != len(manifest.layers):
                raise ImageFormatError(
                    f"{self.ref}: the manifest lists {len(manifest.layers)} layers but the "
                    f"config has {len(diff_ids)} diff_ids",
                    hint="the image is malformed; rebuild or re-push it",
                )
            self._layers = tuple(
                RemoteLayer(self._repo, desc, diff_id, image_ref=self.ref)
                for desc, diff_id in zip(manifest.layers, diff_ids, strict=True)
            )
        return self._layers

    def layer_by_digest(self, digest: Digest) -> RemoteLayer:
        for layer in self.layers():
            if layer.digest() == digest:
                return layer
        raise ImageFormatError(f"{self.ref} has no layer {digest}")


class RemoteIndex:
    """An image index / manifest list in a registry."""

    def __init__(
        self, repo: RemoteRepository, ref: Reference, raw: bytes, media_type: str, digest: Digest
    ) -> None:
        self._repo = repo
        self.ref = ref
        self._raw = raw
        self._media_type = media_type
        self._digest = digest
        self._index: Index | None = None

    def index(self) -> Index:
        if self._index is None:
            self._index = Index.from_json(self._raw, what=f"index of {self.ref}")
        return self._index

    def raw_manifest(self) -> bytes:
        return self._raw

    def digest(self) -> Digest:
        return self._digest

    def media_type(self) -> str:
        return self._media_type

    def _child(self, digest: Digest) -> tuple[Reference, bytes, str, Digest]:
        if all(d.digest != digest for d in self.index().manifests):
            raise ImageFormatError(f"{self.ref} has no manifest {digest}")
        child_ref = self.ref.with_digest(digest)
        raw, media_type, got = self._repo.fetch_manifest(str(digest))
        return child_ref, raw, media_type, got

    def image(self, digest: Digest) -> RemoteImage:
        child_ref, raw, media_type, got = self._child(digest)
        if not mt.is_manifest(media_type):
            raise ImageFormatError(
                f"{child_ref} is {media_type}, not an image manifest",
            )
        return RemoteImage(self._repo, child_ref, raw, media_type, got)

    def child_index(self, digest: Digest) -> RemoteIndex:
        child_ref, raw, media_type, got = self._child(digest)
        if not mt.is_index(media_type):
            raise ImageFormatError(f"{child_ref} is {media_type}, not an index")
        return RemoteIndex(self._repo, child_ref, raw, media_type, got)


def download_layers(
    layers: Sequence[Layer], dest_dir: Path, *, parallel: int = 4
) -> Mapping[Digest, Path]:
    """Download remote layers' blobs in parallel into ``dest_dir`` (verified).

    Files are named ``<algorithm>-<hex>``; a blob already there is not fetched
    again (it is re-verified when opened). Afterwards each :class:`RemoteLayer`
    reads from its local file. Non-remote layers are skipped.
    """
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create the download directory {dest_dir}: {exc}") from exc
    remote = [layer for layer in layers if isinstance(layer, RemoteLayer)]
    unique: dict[Digest, RemoteLayer] = {}
    for layer in remote:
        unique.setdefault(layer.digest(), layer)
    result: dict[Digest, Path] = {}

    def fetch(layer: RemoteLayer) -> None:
        digest = layer.digest()
        path = dest_dir / f"{digest.algorithm}-{digest.hex}"
        if not path.exists():
            layer.download_to(path)
        result[digest] = path

    first_error: LaminaError | None = None
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="lamina-pull") as pool:
        futures = [pool.submit(fetch, layer) for layer in unique.values()]
        for future in futures:
            failure = future.exception()
            if failure is not None and first_error is None:
                if not isinstance(failure, LaminaError):
                    raise failure
                first_error = failure
    if first_error is not None:
        raise first_error
    for layer in remote:
        layer.set_local_path(result[layer.digest()])
    return result
