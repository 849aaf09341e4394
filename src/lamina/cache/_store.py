"""The layer-cache contract between the builder and the cache back ends.

A cache maps a step's key (:func:`lamina.cache.cache_key`) to what the step produced:
one layer, or no layer at all (a RUN that changed nothing). Every entry also records the
:class:`~lamina.cache.KeyInputs` that made its key, so a later miss can be explained
against it, and each back end remembers, per *slot* (a stable name for a step's position
in a Dockerfile, chosen by the builder and opaque here), the inputs of the last entry
stored for that slot.

Rules every back end follows:

* :meth:`LayerCache.lookup` never raises for cache trouble (unreachable, read-only,
  corrupted, expired, wrong shape): it returns a miss whose ``reason`` says what happened,
  and logs a warning where the user should know.
* A hit's layer has been verified (its bytes match its digest) or is a
  :class:`~lamina.cache.LazyLayer`, verified when first read (a corrupted blob then
  raises :class:`~lamina.cache.CorruptedCacheError` naming the key); either stays
  readable until :meth:`LayerCache.close`.
* :meth:`LayerCache.store` may raise :class:`~lamina.errors.LaminaError`; callers run it
  in the background and turn failures into warnings, never into build failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from lamina.cache._keys import KeyInputs
from lamina.oci import Layer

__all__ = ["CacheHit", "CacheLookup", "LayerCache"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheHit:
    """A usable cache entry."""

    key: str
    #: None: the step changed no file (the entry holds no layer)
    layer: Layer | None
    #: the inputs recorded with the entry (None when the entry did not record them)
    inputs: KeyInputs | None
    #: when the entry was written (its TTL counts from here)
    created: datetime
    #: where it came from, for logs ("registry r/cache", "oci:/path", "dir /cache")
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheLookup:
    """The answer to a lookup: a hit, or a miss with its reason."""

    hit: CacheHit | None
    #: for a miss: "no entry", "expired (written 2026-01-02T03:04:05Z, ttl 336h)",
    #: "corrupted: ...", "unreachable: ..."; empty for a hit
    reason: str = ""


class LayerCache(Protocol):
    """One layer cache (registry repository, OCI layout, local directory, or several)."""

    #: for logs: where entries live
    description: str

    def lookup(self, key: str) -> CacheLookup: ...

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        """Write an entry (and remember ``inputs`` as the latest for ``slot``)."""
        ...

    def previous(self, slot: str) -> KeyInputs | None:
        """The inputs of the latest entry stored for ``slot``, if any (for explanations)."""
        ...

    def close(self) -> None:
        """Release resources (temporary blob files); waits for nothing."""
        ...
