"""The local directory layer cache (``--cache-dir``'s ``layers/`` subdirectory).

Layout under the root (kaniko's warmed base images ``sha256:<digest>`` and
``<digest>.json`` sit next to ``layers/`` and are never touched)::

    layers/blobs/sha256/<hex>      compressed layer blobs, content-addressed
    layers/entries/<key>.json      one entry per cache key
    layers/slots/<sha256(slot)>.json   the inputs last stored for a slot

An entry is ``{"key", "created", "layer": null | {"mediaType", "digest", "size",
"diffID"}, "inputs": <KeyInputs document>}``. Every file is written to a temp file
and renamed, so concurrent builds sharing the directory see whole files only; two
builds storing the same key simply race to the same content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from lamina.cache._common import (
    Clock,
    atomic_write,
    check_key,
    copy_layer_blob,
    expired_reason,
    utcnow,
    verify_file,
)
from lamina.cache._keys import KeyInputs
from lamina.cache._store import CacheHit, CacheLookup
from lamina.errors import FilesystemError, LaminaError
from lamina.oci import Digest, FileLayer, Layer, format_time, parse_time
from lamina.oci import mediatypes as mt

__all__ = ["DirLayerCache"]

_ENTRY_VERSION = 1
#: seconds between two prunes of one directory
_PRUNE_EVERY = 24 * 3600
#: a blob written or reused this recently is never pruned
_BLOB_GRACE = 3600


class DirLayerCache:
    """A content-addressed layer cache in a local directory (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        ttl: timedelta,
        log: logging.Logger,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.root = Path(root)
        self.base = self.root / "layers"
        self.ttl = ttl
        self._log = log
        self._clock = clock
        self.description = f"dir {self.root}"

    # ------------------------------------------------------------------ paths
    def blob_path(self, digest: Digest) -> Path:
        return self.base / "blobs" / digest.algorithm / digest.hex

    def entry_path(self, key: str) -> Path:
        return self.base / "entries" / f"{key}.json"

    def _slot_path(self, slot: str) -> Path:
        return self.base / "slots" / f"{hashlib.sha256(slot.encode()).hexdigest()}.json"

    # ------------------------------------------------------------------ lookup
    def lookup(self, key: str) -> CacheLookup:
        bad = check_key(key)
        if bad is not None:
            return CacheLookup(hit=None, reason=bad)
        path = self.entry_path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return CacheLookup(hit=None, reason="no entry")
        except OSError as exc:
            return self._warn_miss(key, f"unreadable: {path}: {exc.strerror or exc}")
        try:
            created, layer_doc, inputs = _parse_entry(raw, key)
        except (LaminaError, ValueError, KeyError, TypeError) as exc:
            self._remove(path)
            return self._warn_miss(key, f"corrupted: entry {path}: {_text(exc)}")
        expired = expired_reason(created, self.ttl, self._clock())
        if expired is not None:
            self._remove(path)
            return CacheLookup(hit=None, reason=expired)
        layer: Layer | None = None
        if layer_doc is not None:
            digest, size, media_type, diff_id = layer_doc
            blob = self.blob_path(digest)
            try:
                verify_file(blob, digest, size)
            except LaminaError as exc:
                self._remove(path)
                self._remove(blob)
                return self._warn_miss(key, f"corrupted: {exc.message}")
            layer = FileLayer(
                blob, media_type=media_type, digest=digest, size=size, diff_id=diff_id
            )
        hit = CacheHit(
            key=key, layer=layer, inputs=inputs, created=created, source=self.description
        )
        return CacheLookup(hit=hit)

    def _warn_miss(self, key: str, reason: str) -> CacheLookup:
        self._log.warning("layer cache %s: key %s: %s; treated as a miss", self.root, key, reason)
        return CacheLookup(hit=None, reason=reason)

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    # ------------------------------------------------------------------ store
    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        bad = check_key(key)
        if bad is not None:
            raise FilesystemError(bad, hint="cache keys come from lamina.cache.cache_key")
        created = self._clock()
        layer_doc: dict[str, Any] | None = None
        if layer is not None:
            digest = layer.digest()
            blob = self.blob_path(digest)
            if blob.is_file() and blob.stat().st_size == layer.size():
                with contextlib.suppress(OSError):
                    os.utime(blob)  # in use again: keep it out of prune()'s reach
            else:
                copy_layer_blob(layer, blob)
            layer_doc = {
                "mediaType": layer.media_type(),
                "digest": str(digest),
                "size": layer.size(),
                "diffID": str(layer.diff_id()),
            }
        document = json.loads(inputs.document())
        entry = {
            "v": _ENTRY_VERSION,
            "key": key,
            "created": format_time(created),
            "layer": layer_doc,
            "inputs": document,
        }
        with atomic_write(self.entry_path(key)) as f:
            f.write(json.dumps(entry, separators=(",", ":")).encode())
        with atomic_write(self._slot_path(slot)) as f:
            f.write(json.dumps({"slot": slot, "key": key, "inputs": document}).encode())

    def previous(self, slot: str) -> KeyInputs | None:
        try:
            doc = json.loads(self._slot_path(slot).read_bytes())
            if doc.get("slot") != slot:
                return None
            return KeyInputs.from_document(json.dumps(doc["inputs"]).encode())
        except (OSError, LaminaError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def close(self) -> None:
        """Prune the directory at most once a day (see :meth:`prune`); never raises."""
        marker = self.base / ".pruned"
        try:
            if time.time() - marker.stat().st_mtime < _PRUNE_EVERY:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            self.prune()
        except (OSError, LaminaError) as exc:
            self._log.debug("layer cache %s: pruning failed: %s", self.root, exc)

    def prune(self) -> tuple[int, int]:
        """Remove expired or unreadable entries, then blobs no entry uses.

        A blob touched within the last hour is kept, so a build storing an entry
        for it concurrently does not lose it. Returns (entries, blobs) removed.
        """
        now = self._clock()
        used: set[str] = set()
        entries = blobs = 0
        for path in sorted((self.base / "entries").glob("*.json")):
            try:
                created, layer, _ = _parse_entry(path.read_bytes(), path.stem)
            except FileNotFoundError:
                continue
            except (OSError, LaminaError, ValueError, KeyError, TypeError):
                created, layer = None, None
            if created is None or expired_reason(created, self.ttl, now) is not None:
                self._remove(path)
                entries += 1
                continue
            if layer is not None:
                used.add(str(layer[0]))
        horizon = time.time() - _BLOB_GRACE
        for algorithm_dir in (self.base / "blobs").glob("*"):
            for blob in algorithm_dir.iterdir():
                name = f"{algorithm_dir.name}:{blob.name}"
                try:
                    young = blob.stat().st_mtime > horizon
                except OSError:
                    continue
                if name not in used and not young:
                    self._remove(blob)
                    blobs += 1
        if entries or blobs:
            self._log.info(
                "layer cache %s: pruned %d entries and %d blobs", self.root, entries, blobs
            )
        return entries, blobs


def _text(exc: BaseException) -> str:
    return exc.message if isinstance(exc, LaminaError) else str(exc)


def _parse_entry(
    raw: bytes, key: str
) -> tuple[Any, tuple[Digest, int, str, Digest] | None, KeyInputs | None]:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != _ENTRY_VERSION or doc.get("key") != key:
        raise ValueError("not an entry of this lamina version for this key")
    created = parse_time(doc["created"])
    layer = doc["layer"]
    parsed: tuple[Digest, int, str, Digest] | None = None
    if layer is not None:
        media_type = layer["mediaType"]
        if not isinstance(media_type, str) or not mt.is_layer(media_type):
            raise ValueError(f"unknown layer media type {media_type!r}")
        size = layer["size"]
        if type(size) is not int or size < 0:
            raise ValueError(f"bad layer size {size!r}")
        parsed = (Digest.parse(layer["digest"]), size, media_type, Digest.parse(layer["diffID"]))
    inputs = None
    if doc.get("inputs") is not None:
        inputs = KeyInputs.from_document(json.dumps(doc["inputs"]).encode())
    return created, parsed, inputs
