"""Choosing the layer caches from kaniko's flags, and combining them.

Rules (``--cache=true`` only; otherwise there is no layer cache):

* **Remote tier**: ``--cache-repo`` names a registry repository; ``oci:/path`` names an
  OCI image layout instead. Without ``--cache-repo`` it is ``<first destination's
  repository>/cache`` (kaniko's default); without destinations there is no remote tier.
  ``--no-push-cache`` makes the remote tier read-only (lookups only).
* **Local tier**: the ``layers/`` subdirectory of ``--cache-dir`` when the flag was set
  explicitly (the directory is created) or when the default directory already exists
  (kaniko's image ships ``/cache``); kaniko's warmed base images in the same directory
  are left alone. The local tier is written even with ``--no-push-cache`` (nothing is
  pushed to it).
* With both tiers, lookups try local first, then remote; a remote hit is written
  through to the local tier (when it recorded its inputs) once its layer is read; stores go to both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.cache._dir import DirLayerCache
from lamina.cache._keys import KeyInputs
from lamina.cache._lazy import LazyLayer
from lamina.cache._oci import OCILayoutLayerCache
from lamina.cache._registry import RegistryLayerCache
from lamina.cache._store import CacheLookup, LayerCache
from lamina.errors import LaminaError, UsageError
from lamina.oci import Layer, Reference

if TYPE_CHECKING:
    from lamina.registry import RegistryClient

__all__ = ["CompositeLayerCache", "ReadOnlyLayerCache", "open_layer_cache"]


class ReadOnlyLayerCache:
    """Lookups only (``--no-push-cache``): stores are skipped."""

    def __init__(self, cache: LayerCache, log: logging.Logger) -> None:
        self.inner = cache
        self.description = f"{cache.description} (read-only)"
        self._log = log

    def lookup(self, key: str) -> CacheLookup:
        return self.inner.lookup(key)

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        self._log.debug("layer cache %s: not storing %s (--no-push-cache)", self.description, key)

    def previous(self, slot: str) -> KeyInputs | None:
        return self.inner.previous(slot)

    def close(self) -> None:
        self.inner.close()


class CompositeLayerCache:
    """A local tier in front of a remote tier (see the module docstring)."""

    def __init__(self, local: LayerCache, remote: LayerCache, log: logging.Logger) -> None:
        self.local = local
        self.remote = remote
        self.description = f"{local.description} + {remote.description}"
        self._log = log

    def lookup(self, key: str) -> CacheLookup:
        near = self.local.lookup(key)
        if near.hit is not None:
            return near
        far = self.remote.lookup(key)
        if far.hit is not None and far.hit.inputs is not None:
            copy = partial(self._write_through, key, far.hit.inputs)
            if isinstance(far.hit.layer, LazyLayer):
                far.hit.layer.after_fetch(copy)  # only if the build reads the layer
            else:
                copy(far.hit.layer)
        if far.hit is not None:
            return far
        if near.reason == far.reason:
            return far
        return CacheLookup(
            hit=None,
            reason=f"{self.local.description}: {near.reason}; {self.remote.description}: "
            f"{far.reason}",
        )

    def _write_through(self, key: str, inputs: KeyInputs, layer: Layer | None) -> None:
        try:
            self.local.store(key, layer, inputs, slot=_HIT_SLOT)
        except LaminaError as exc:
            self._log.warning(
                "layer cache %s: copying key %s from %s failed: %s",
                self.local.description,
                key,
                self.remote.description,
                exc.message,
            )

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        first: LaminaError | None = None
        for tier in (self.local, self.remote):
            try:
                tier.store(key, layer, inputs, slot=slot)
            except LaminaError as exc:
                if first is None:
                    first = exc
                else:
                    self._log.warning(
                        "layer cache %s: storing key %s failed: %s",
                        tier.description,
                        key,
                        exc.message,
                    )
        if first is not None:
            raise first

    def previous(self, slot: str) -> KeyInputs | None:
        return self.local.previous(slot) or self.remote.previous(slot)

    def close(self) -> None:
        try:
            self.remote.close()
        finally:
            self.local.close()


#: the slot under which write-through copies are remembered (never asked for)
_HIT_SLOT = "lamina:write-through"


def open_layer_cache(
    *,
    enabled: bool,
    cache_repo: str,
    cache_dir: Path | None,
    cache_dir_explicit: bool,
    ttl: timedelta,
    no_push_cache: bool,
    destinations: Sequence[Reference],
    registry_client: RegistryClient | None,
    work_dir: Path,
    log: logging.Logger,
) -> LayerCache | None:
    """The layer cache for kaniko's cache flags (see the module docstring), or None.

    ``cache_dir`` is ``--cache-dir`` (None: not usable); ``cache_dir_explicit`` says
    whether the user gave it. ``registry_client`` may be None only when no registry
    tier is wanted. The result is not yet wrapped in a :class:`BackgroundCache`.
    """
    if not enabled:
        return None
    remote: LayerCache | None = None
    repo = cache_repo.strip()
    if repo.startswith("oci:"):
        path = repo.removeprefix("oci:")
        if not path:
            raise UsageError(
                "--cache-repo=oci: needs a directory after 'oci:'",
                hint="write --cache-repo=oci:/path/to/layout",
            )
        remote = OCILayoutLayerCache(Path(path), ttl, log)
    else:
        ref: Reference | None = None
        if repo:
            try:
                ref = Reference.parse(repo, default_tag=None)
            except LaminaError as exc:
                raise UsageError(
                    f"--cache-repo={repo}: {exc.message}",
                    hint="give a repository such as registry.example/team/app/cache or oci:/dir",
                ) from None
        elif destinations:
            first = destinations[0].repository_ref
            ref = Reference.parse(f"{first.name}/cache", default_tag=None)
        else:
            log.info("layer cache: no --cache-repo and no --destination, no remote cache")
        if ref is not None:
            if registry_client is None:
                raise UsageError(
                    f"the layer cache {ref} needs a registry client",
                    hint="this is a bug in the caller of open_layer_cache",
                )
            remote = RegistryLayerCache(ref, registry_client, ttl, log, work_dir)
    if remote is not None and no_push_cache:
        remote = ReadOnlyLayerCache(remote, log)
    local: LayerCache | None = None
    if cache_dir is not None and (cache_dir_explicit or cache_dir.is_dir()):
        local = DirLayerCache(cache_dir, ttl, log)
    if local is not None and remote is not None:
        return CompositeLayerCache(local, remote, log)
    return local or remote
