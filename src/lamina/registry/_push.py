"""Pushing images: blobs first (HEAD-skip, cross-repo mount, monolithic or
chunked upload), then the manifest last, so a failed push never leaves a tag
pointing at missing blobs."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import httpx

from lamina.errors import LaminaError, RegistryError
from lamina.oci import Digest, Image, Layer, Reference

from ._auth import normalize_registry
from ._errors import with_retries
from ._options import RegistryOptions
from ._streams import CHUNK
from ._transport import Endpoint, RegistryTransport

__all__ = ["Pusher", "run_parallel"]

_log = logging.getLogger("lamina.registry")
_T = TypeVar("_T")
_OCTET = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Blob:
    digest: Digest
    size: int
    open: Callable[[], AbstractContextManager[BinaryIO]]
    mount_from: tuple[str, str] | None = None  # (registry, repository)
    label: str = "blob"


def _mount_origin(layer: Layer) -> tuple[str, str] | None:
    """Where a layer's blob already is: a pulled layer, or a lazy cache hit (duck-typed)."""
    registry = getattr(layer, "source_registry", None)
    repository = getattr(layer, "source_repository", None)
    if isinstance(registry, str) and isinstance(repository, str):
        return (registry, repository)
    return None


def run_parallel(fn: Callable[[_T], None], items: Iterable[_T], parallel: int) -> None:
    """Run ``fn`` on each item in threads; re-raise the first error once all finish."""
    first: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="lamina-push") as pool:
        futures = [pool.submit(fn, item) for item in items]
        for future in futures:
            exc = future.exception()
            if exc is not None and (first is None or not isinstance(first, LaminaError)):
                first = exc if first is None or isinstance(exc, LaminaError) else first
    if first is not None:
        raise first


def _read_exactly(stream: BinaryIO, length: int) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = stream.read(min(CHUNK, left))
        if not data:
            raise RegistryError(f"the blob ended {left} bytes early while uploading a chunk")
        left -= len(data)
        yield data


def _is_immutable_tag_error(response: httpx.Response) -> bool:
    if response.status_code not in (400, 403, 409):
        return False
    with contextlib.suppress(httpx.HTTPError):
        text = response.read().decode("utf-8", errors="replace").lower()
        return "immutable" in text or "tag_invalid" in text
    return False


class Pusher:
    def __init__(self, transport: RegistryTransport, options: RegistryOptions) -> None:
        self._transport = transport
        self._options = options
        self._lock = threading.Lock()
        # per registry: blob digest -> a repository that now holds it (mount source)
        self._known: dict[str, dict[Digest, str]] = {}

    def _retry(self, operation: Callable[[], _T]) -> _T:
        return with_retries(
            operation,
            retries=self._options.push_retry,
            backoff=self._options.retry_backoff,
            max_delay=self._options.retry_max_delay,
        )

    # ------------------------------------------------------------------ preflight
    def check_push_permission(self, refs: Sequence[Reference]) -> None:
        """Start an upload in each destination repository and cancel it."""
        seen: set[tuple[str, str]] = set()
        for ref in refs:
            key = (normalize_registry(ref.registry), ref.repository)
            if key in seen:
                continue
            seen.add(key)
            endpoint = self._transport.endpoint(ref.registry, "push")
            what = f"checking push permission for {ref}"
            scopes = (f"repository:{ref.repository}:pull,push",)

            def probe(
                endpoint: Endpoint = endpoint,
                ref: Reference = ref,
                what: str = what,
                scopes: tuple[str, ...] = scopes,
            ) -> None:
                response = endpoint.send(
                    "POST", f"/v2/{ref.repository}/blobs/uploads/", scopes=scopes, what=what
                )
                if response.status_code != 202:
                    raise endpoint.error(response, what)
                location = response.headers.get("location")
                if location:
                    with contextlib.suppress(RegistryError):
                        endpoint.send(
                            "DELETE",
                            self._resolve(endpoint, ref, location, what),
                            scopes=scopes,
                            what=what,
                        )

            self._retry(probe)
            _log.debug("push permission to %s confirmed", ref)

    # ------------------------------------------------------------------ push
    def push(self, image: Image, refs: Sequence[Reference]) -> Digest:
        if not refs:
            raise RegistryError("nothing to push: no destination given")
        raw_manifest = image.raw_manifest()
        digest = Digest.of_bytes(raw_manifest, image.digest().algorithm)
        media_type = image.media_type()
        blobs = self._blobs(image)
        # group destinations by repository, keeping the order given
        groups: dict[tuple[str, str], list[Reference]] = {}
        for ref in refs:
            groups.setdefault((normalize_registry(ref.registry), ref.repository), []).append(ref)
        for destinations in groups.values():
            first = destinations[0]
            endpoint = self._transport.endpoint(first.registry, "push")
            what = f"pushing {first}"
            run_parallel(
                functools.partial(self._push_blob, endpoint, first, what=what),
                blobs,
                self._options.max_parallel_transfers,
            )
            for ref in destinations:
                self._put_manifest(endpoint, ref, raw_manifest, media_type, digest)
        return digest

    def _blobs(self, image: Image) -> list[_Blob]:
        manifest = image.manifest()
        raw_config = image.raw_config()
        config_digest = manifest.config.digest
        got = Digest.of_bytes(raw_config, config_digest.algorithm)
        if got != config_digest or len(raw_config) != manifest.config.size:
            raise RegistryError(
                f"the image config has digest {got} but the manifest names {config_digest}",
                hint="this is a bug in how the image was assembled",
            )
        blobs: list[_Blob] = []
        seen: set[Digest] = set()
        layers = image.layers()
        for desc, layer in zip(manifest.layers, layers, strict=True):
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            mount = _mount_origin(layer)
            blobs.append(
                _Blob(
                    digest=desc.digest,
                    size=desc.size,
                    open=layer.compressed,
                    mount_from=mount,
                    label=f"layer {desc.digest}",
                )
            )
        if config_digest not in seen:
            blobs.append(
                _Blob(
                    digest=config_digest,
                    size=len(raw_config),
                    open=lambda: contextlib.nullcontext(io.BytesIO(raw_config)),
                    label=f"config {config_digest}",
                )
            )
        return blobs

    def _resolve(self, endpoint: Endpoint, ref: Reference, location: str, what: str) -> str:
        base = httpx.URL(endpoint.url(f"/v2/{ref.repository}/blobs/uploads/", what))
        return str(base.join(location))

    def _mount_source(self, ref: Reference, blob: _Blob) -> str | None:
        registry = normalize_registry(ref.registry)
        if blob.mount_from is not None:
            src_registry, src_repo = blob.mount_from
            if normalize_registry(src_registry) == registry and src_repo != ref.repository:
                return src_repo
        with self._lock:
            known = self._known.get(registry, {}).get(blob.digest)
        if known is not None and known != ref.repository:
            return known
        return None

    def _remember(self, ref: Reference, digest: Digest) -> None:
        with self._lock:
            self._known.setdefault(normalize_registry(ref.registry), {}).setdefault(
                digest, ref.repository
            )

    def _push_blob(self, endpoint: Endpoint, ref: Reference, blob: _Blob, *, what: str) -> None:
        self._retry(lambda: self._push_blob_once(endpoint, ref, blob, what))
        self._remember(ref, blob.digest)

    def _push_blob_once(self, endpoint: Endpoint, ref: Reference, blob: _Blob, what: str) -> None:
        repo = ref.repository
        source = self._mount_source(ref, blob)
        scopes: tuple[str, ...] = (f"repository:{repo}:pull,push",)
        if source is not None:
            scopes += (f"repository:{source}:pull",)
        head = endpoint.send("HEAD", f"/v2/{repo}/blobs/{blob.digest}", scopes=scopes, what=what)
        if head.status_code == 200:
            _log.debug("%s: %s already present", what, blob.label)
            return
        if head.status_code not in (404,):
            raise endpoint.error(head, what)
        params = {"mount": str(blob.digest), "from": source} if source is not None else None
        start = endpoint.send(
            "POST", f"/v2/{repo}/blobs/uploads/", scopes=scopes, what=what, params=params
        )
        if start.status_code == 201 and source is not None:
            _log.info("%s: mounted %s from %s", what, blob.label, source)
            return
        if start.status_code != 202:
            raise endpoint.error(start, what)
        location = start.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: the registry started an upload without a Location")
        location = self._resolve(endpoint, ref, location, what)
        if blob.size >= self._options.chunked_upload_threshold:
            self._upload_chunked(endpoint, ref, blob, location, scopes=scopes, what=what)
        else:
            self._upload_monolithic(endpoint, blob, location, scopes, what)
        _log.info("%s: uploaded %s (%d bytes)", what, blob.label, blob.size)

    def _upload_monolithic(
        self, endpoint: Endpoint, blob: _Blob, location: str, scopes: tuple[str, ...], what: str
    ) -> None:
        def body() -> Iterator[bytes]:
            with blob.open() as stream:
                while data := stream.read(CHUNK):
                    yield data

        url = httpx.URL(location).copy_add_param("digest", str(blob.digest))
        response = endpoint.send(
            "PUT",
            str(url),
            scopes=scopes,
            what=what,
            headers={"Content-Type": _OCTET, "Content-Length": str(blob.size)},
            body=body,
        )
        if response.status_code not in (201, 204):
            raise endpoint.error(response, f"{what}: uploading {blob.label}")

    def _upload_chunked(
        self,
        endpoint: Endpoint,
        ref: Reference,
        blob: _Blob,
        location: str,
        *,
        scopes: tuple[str, ...],
        what: str,
    ) -> None:
        chunk_size = max(1, self._options.upload_chunk_size)
        offset = 0
        with blob.open() as stream:
            while offset < blob.size:
                length = min(chunk_size, blob.size - offset)
                chunk = _read_exactly(stream, length)
                response = endpoint.send(
                    "PATCH",
                    location,
                    scopes=scopes,
                    what=what,
                    headers={
                        "Content-Type": _OCTET,
                        "Content-Range": f"{offset}-{offset + length - 1}",
                        "Content-Length": str(length),
                    },
                    body=chunk,
                    replayable=False,
                )
                if response.status_code != 202:
                    raise endpoint.error(response, f"{what}: uploading {blob.label}")
                next_location = response.headers.get("location")
                if next_location:
                    location = self._resolve(endpoint, ref, next_location, what)
                offset += length
            if stream.read(1):
                raise RegistryError(
                    f"{what}: {blob.label} is longer than its declared {blob.size} bytes"
                )
        url = httpx.URL(location).copy_add_param("digest", str(blob.digest))
        response = endpoint.send(
            "PUT", str(url), scopes=scopes, what=what, headers={"Content-Length": "0"}, body=b""
        )
        if response.status_code not in (201, 204):
            raise endpoint.error(response, f"{what}: finishing {blob.label}")

    def _put_manifest(
        self,
        endpoint: Endpoint,
        ref: Reference,
        raw: bytes,
        media_type: str,
        digest: Digest,
    ) -> None:
        what = f"pushing {ref}"
        identifier = ref.tag if ref.tag is not None else str(digest)
        if ref.digest is not None and ref.tag is None and ref.digest != digest:
            raise RegistryError(
                f"{what}: the destination names digest {ref.digest} but the image is {digest}",
                hint="push to a tag, or to the image's own digest",
            )
        scopes = (f"repository:{ref.repository}:pull,push",)

        def put() -> None:
            response = endpoint.send(
                "PUT",
                f"/v2/{ref.repository}/manifests/{identifier}",
                scopes=scopes,
                what=what,
                headers={"Content-Type": media_type},
                body=raw,
            )
            if response.status_code in (200, 201, 202):
                claimed = response.headers.get("docker-content-digest")
                if claimed and claimed != str(digest):
                    _log.warning(
                        "%s: registry reports digest %s, expected %s", what, claimed, digest
                    )
                _log.info("pushed %s@%s", ref.name + (f":{ref.tag}" if ref.tag else ""), digest)
                return
            if _is_immutable_tag_error(response):
                if self._options.push_ignore_immutable_tag_errors:
                    _log.warning(
                        "%s: the tag is immutable and already exists; ignored "
                        "(--push-ignore-immutable-tag-errors)",
                        what,
                    )
                    return
                error = endpoint.error(response, what)
                raise type(error)(
                    error.message,
                    hint="the tag is immutable in this repository; push a new tag, or pass "
                    "--push-ignore-immutable-tag-errors",
                )
            raise endpoint.error(response, what)

        self._retry(put)
