"""The OCI-layout layer cache (``--cache-repo=oci:/path``).

Entries are images in an OCI image layout whose ``org.opencontainers.image.ref.name``
is the key (same shape as the registry entries, see
:mod:`lamina.cache._entry_image`); slots are ref names ``lamina-slot-<hash>``.
A hit's layer is the layout's own blob file, verified when looked up.
Writers take an exclusive ``flock`` on ``<layout>/.lamina-cache.lock`` because
``index.json`` is rewritten as a whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from lamina.cache._common import Clock, check_key, expired_reason, utcnow, verify_file
from lamina.cache._entry_image import (
    WrongShapeError,
    entry_image,
    read_entry,
    read_inputs,
    slot_tag,
)
from lamina.cache._keys import KeyInputs
from lamina.cache._store import CacheHit, CacheLookup
from lamina.errors import FilesystemError, LaminaError
from lamina.oci import FileLayer, Layer
from lamina.oci.oci_layout import REF_NAME_ANNOTATION, OCILayout

__all__ = ["OCILayoutLayerCache"]


class OCILayoutLayerCache:
    """Layer cache entries as images in a local OCI image layout."""

    def __init__(
        self, path: Path, ttl: timedelta, log: logging.Logger, *, clock: Clock = utcnow
    ) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self._log = log
        self._clock = clock
        self._thread_lock = threading.Lock()
        self.description = f"oci:{self.path}"

    def _layout(self, *, create: bool) -> OCILayout | None:
        if (self.path / "index.json").is_file():
            return OCILayout.open(self.path)
        if not create:
            return None
        return OCILayout.create(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path / ".lamina-cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise FilesystemError(
                    f"cannot lock the OCI layout cache {self.path}: {exc.strerror or exc}",
                    hint="check the directory's permissions",
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ lookup
    def lookup(self, key: str) -> CacheLookup:
        bad = check_key(key)
        if bad is not None:
            return CacheLookup(hit=None, reason=bad)
        try:
            layout = self._layout(create=False)
            if layout is None or not any(
                d.annotations.get(REF_NAME_ANNOTATION) == key for d in layout.index().manifests
            ):
                return CacheLookup(hit=None, reason="no entry")
            shape = read_entry(layout.image(key))
            expired = expired_reason(shape.created, self.ttl, self._clock())
            if expired is not None:
                return CacheLookup(hit=None, reason=expired)
            layer: Layer | None = None
            if shape.layer is not None:
                digest, size, media_type, diff_id = shape.layer
                blob = layout.blob_path(digest)
                verify_file(blob, digest, size)
                layer = FileLayer(
                    blob, media_type=media_type, digest=digest, size=size, diff_id=diff_id
                )
        except WrongShapeError as exc:
            return self._warn_miss(key, f"wrong shape: {exc}")
        except LaminaError as exc:
            return self._warn_miss(key, f"corrupted: {exc.message}")
        hit = CacheHit(
            key=key,
            layer=layer,
            inputs=shape.inputs,
            created=shape.created,
            source=self.description,
        )
        return CacheLookup(hit=hit)

    def _warn_miss(self, key: str, reason: str) -> CacheLookup:
        self._log.warning(
            "layer cache %s: key %s: %s; treated as a miss", self.description, key, reason
        )
        return CacheLookup(hit=None, reason=reason)

    # ------------------------------------------------------------------ store
    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        bad = check_key(key)
        if bad is not None:
            raise FilesystemError(bad, hint="cache keys come from lamina.cache.cache_key")
        image = entry_image(key, layer, inputs, self._clock())
        with self._locked():
            layout = self._layout(create=True)
            assert layout is not None
            if layer is not None and layout.has_blob(layer.digest()):
                # a corrupted blob left from an earlier entry would be skipped by
                # write_image: re-check it and drop it when bad
                try:
                    verify_file(layout.blob_path(layer.digest()), layer.digest(), layer.size())
                except LaminaError:
                    with contextlib.suppress(OSError):
                        layout.blob_path(layer.digest()).unlink()
            desc = layout.write_image(image, ref_name=key)
            layout.add_descriptor(desc.with_annotations(**{REF_NAME_ANNOTATION: slot_tag(slot)}))

    def previous(self, slot: str) -> KeyInputs | None:
        try:
            layout = self._layout(create=False)
            if layout is None:
                return None
            return read_inputs(layout.image(slot_tag(slot)))
        except LaminaError:
            return None

    def close(self) -> None:
        """Nothing to release: hit layers read the layout's blob files."""
