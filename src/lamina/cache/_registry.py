"""The registry layer cache (``--cache-repo``): kaniko's ``<repo>:<key>`` images.

Each entry is an image tagged with its key (see :mod:`lamina.cache._entry_image`
for the shape). A slot's latest entry is also tagged ``lamina-slot-<hash>``, so
:meth:`RegistryLayerCache.previous` can read the inputs of the step's last build.

A lookup reads the entry's manifest and config only. A hit's layer is a
:class:`~lamina.cache._lazy.LazyLayer`: its blob is downloaded into ``work_dir`` and
verified (streamed, bounded memory) when first read, and it names the cache repository
as its source, so a push to the same registry mounts the blob instead of uploading it.
The built image reuses the very same blob (digest and media type).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.cache._common import Clock, check_key, expired_reason, utcnow
from lamina.cache._entry_image import (
    WrongShapeError,
    entry_image,
    read_entry,
    read_inputs,
    slot_tag,
)
from lamina.cache._keys import KeyInputs
from lamina.cache._lazy import LazyLayer
from lamina.cache._store import CacheHit, CacheLookup
from lamina.errors import (
    AuthError,
    FilesystemError,
    ImageFormatError,
    LaminaError,
    RegistryError,
)
from lamina.oci import Digest, Layer, Reference

if TYPE_CHECKING:
    from lamina.registry import RegistryClient, RemoteImage

__all__ = ["RegistryLayerCache"]


class RegistryLayerCache:
    """Layer cache entries as images in one registry repository."""

    def __init__(
        self,
        repo_ref: Reference,
        registry_client: RegistryClient,
        ttl: timedelta,
        log: logging.Logger,
        work_dir: Path,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.repo = repo_ref.repository_ref
        self._client = registry_client
        self.ttl = ttl
        self._log = log
        self._clock = clock
        self._work_dir = Path(work_dir)
        self._tmp: Path | None = None
        self._lock = threading.Lock()
        self._previous: dict[str, KeyInputs] = {}
        #: set when the repository failed as a whole (unreachable, denied)
        self._down: str | None = None
        self.description = f"registry {self.repo}"

    # ------------------------------------------------------------------ lookup
    def lookup(self, key: str) -> CacheLookup:
        bad = check_key(key)
        if bad is not None:
            return CacheLookup(hit=None, reason=bad)
        ref = self.repo.with_tag(key)
        with self._lock:
            down = self._down
        if down is not None:
            return CacheLookup(hit=None, reason=f"{down} (not asked again)")
        try:
            # one GET: a 404 is a miss, a manifest is read right away (no HEAD first)
            found = self._client.find_index_or_image(ref)
        except ImageFormatError as exc:
            return self._warn_miss(ref, f"corrupted: {exc.message}")
        except LaminaError as exc:
            # the repository itself fails: say so once, then stop asking this build
            kind = "access denied" if isinstance(exc, AuthError) else "unreachable"
            reason = f"{kind}: {exc.message}"
            with self._lock:
                self._down = reason
            self._log.warning(
                "layer cache %s: %s; no layer cache lookups in this build", self.repo, reason
            )
            return CacheLookup(hit=None, reason=reason)
        if found is None:
            return CacheLookup(hit=None, reason="no entry")
        from lamina.registry import RemoteImage  # the client has loaded it

        try:
            if not isinstance(found, RemoteImage):
                raise WrongShapeError(f"{found.media_type()} is an index, not an image")
            shape = read_entry(found)
            expired = expired_reason(shape.created, self.ttl, self._clock())
            if expired is not None:
                return CacheLookup(hit=None, reason=expired)
            layer: Layer | None = None
            if shape.layer is not None:
                layer = self._lazy(key, found, ref, shape.layer)
        except WrongShapeError as exc:
            return self._warn_miss(ref, f"wrong shape: {exc}")
        except AuthError as exc:
            return self._warn_miss(ref, f"access denied: {exc.message}")
        except RegistryError as exc:
            return self._warn_miss(ref, f"unreachable: {exc.message}")
        except LaminaError as exc:
            return self._warn_miss(ref, f"corrupted: {exc.message}")
        hit = CacheHit(
            key=key,
            layer=layer,
            inputs=shape.inputs,
            created=shape.created,
            source=self.description,
        )
        return CacheLookup(hit=hit)

    def _warn_miss(self, ref: Reference, reason: str) -> CacheLookup:
        self._log.warning("layer cache %s: %s; treated as a miss", ref, reason)
        return CacheLookup(hit=None, reason=reason)

    def _blob_dir(self) -> Path:
        with self._lock:
            if self._tmp is None:
                try:
                    self._work_dir.mkdir(parents=True, exist_ok=True)
                    self._tmp = Path(tempfile.mkdtemp(prefix="cache-", dir=self._work_dir))
                except OSError as exc:
                    raise FilesystemError(
                        f"cannot create a download directory in {self._work_dir}: "
                        f"{exc.strerror or exc}",
                        hint="check the work directory's permissions and free space",
                    ) from exc
            return self._tmp

    def _lazy(
        self, key: str, image: RemoteImage, ref: Reference, desc: tuple[Digest, int, str, Digest]
    ) -> LazyLayer:
        digest, size, media_type, diff_id = desc
        remote = image.layer_by_digest(digest)
        return LazyLayer(
            key=key,
            download=remote.download_to,  # pipelined, verified against digest and size
            dest=self._blob_dir() / f"{digest.algorithm}-{digest.hex}",
            digest=digest,
            size=size,
            media_type=media_type,
            diff_id=diff_id,
            what=f"cache layer {digest.short} of {ref}",
            source_registry=remote.source_registry,
            source_repository=remote.source_repository,
        )

    # ------------------------------------------------------------------ store
    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        bad = check_key(key)
        if bad is not None:
            raise RegistryError(bad, hint="cache keys come from lamina.cache.cache_key")
        image = entry_image(key, layer, inputs, self._clock())
        self._client.push(image, [self.repo.with_tag(key), self.repo.with_tag(slot_tag(slot))])
        with self._lock:
            self._previous[slot] = inputs

    def previous(self, slot: str) -> KeyInputs | None:
        with self._lock:
            if slot in self._previous:
                return self._previous[slot]
        try:
            found = self._client.get_index_or_image(self.repo.with_tag(slot_tag(slot)))
        except LaminaError:
            return None
        from lamina.registry import RemoteImage  # the client has loaded it

        if not isinstance(found, RemoteImage):
            return None
        return read_inputs(found)

    def close(self) -> None:
        with self._lock:
            tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
