"""kaniko's base-image cache in ``--cache-dir``, filled by ``lamina warm``.

For each warmed image (one platform), keyed by its manifest digest:

* ``<cache-dir>/sha256:<hex>``: the image as a ``docker save`` tarball;
* ``<cache-dir>/sha256:<hex>.json``: its raw manifest, byte for byte.

Both are written to temp files and renamed (tarball first, so a manifest file never
points at a missing tarball). An entry is stale once its tarball's mtime plus the TTL
is past. Reading an entry back gives an image with the very manifest digest, media
types and layer blobs of the original: blobs are located through the tarball's
``manifest.json`` (so tarballs written by kaniko's warmer read too) and verified
against the manifest while they are read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lamina.cache._common import atomic_write
from lamina.errors import FilesystemError, ImageFormatError, LaminaError
from lamina.oci import BlobImage, Descriptor, Digest, Image, Manifest, Platform, Reference

if TYPE_CHECKING:
    from lamina.oci.docker_archive import DockerArchive
    from lamina.registry import RegistryClient

__all__ = ["BaseImageCache", "WarmResult", "warm_base_images"]


class BaseImageCache:
    """Warmed base images in ``cache_dir`` (kaniko's layout, see the module docstring)."""

    def __init__(self, cache_dir: Path, ttl: timedelta, log: logging.Logger | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.ttl = ttl
        self._log = log or logging.getLogger("lamina.cache")

    def tarball_path(self, digest: Digest) -> Path:
        return self.cache_dir / str(digest)

    def manifest_path(self, digest: Digest) -> Path:
        return self.cache_dir / f"{digest}.json"

    def is_fresh(self, digest: Digest) -> bool:
        """Both files exist and the tarball is younger than the TTL."""
        try:
            mtime = self.tarball_path(digest).stat().st_mtime
        except OSError:
            return False
        if not self.manifest_path(digest).is_file():
            return False
        return time.time() <= mtime + self.ttl.total_seconds()

    def lookup(self, digest: Digest) -> Image | None:
        """The warmed image with manifest ``digest``, or None (absent, stale or unusable).

        Cheap checks run here (manifest digest, config digest, every layer present in
        the tarball); layer bytes are verified as they are read.
        """
        if not self.is_fresh(digest):
            return None
        what = f"warmed image {self.tarball_path(digest)}"
        try:
            raw = self.manifest_path(digest).read_bytes()
            got = Digest.of_bytes(raw, digest.algorithm)
            if got != digest:
                raise _UnusableError(f"{self.manifest_path(digest)} has digest {got}")
            manifest = Manifest.from_json(raw, f"manifest of {what}")
            from lamina.oci.docker_archive import DockerArchive  # only warmed images need it

            archive = DockerArchive(self.tarball_path(digest))
            members = _members(archive, manifest)
            image = BlobImage(raw, _fetcher(archive, members), what=what)
            image.config()  # reads and verifies the config
        except (LaminaError, OSError, _UnusableError) as exc:
            message = exc.message if isinstance(exc, LaminaError) else str(exc)
            self._log.warning(
                "base-image cache: %s is unusable (%s); pulling instead", what, message
            )
            return None
        return image

    def store(self, image: Image, ref: Reference | None = None) -> Digest:
        """Write ``image`` (streaming its layers) as an entry; returns its digest.

        ``ref`` (when it has a tag) names the image inside the tarball, for ``docker load``.
        """
        digest = image.digest()
        raw = image.raw_manifest()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FilesystemError(
                f"cannot create the cache directory {self.cache_dir}: {exc.strerror or exc}",
                hint="check --cache-dir and its permissions",
            ) from exc
        tags = [ref.repository_ref.with_tag(ref.tag)] if ref is not None and ref.tag else []
        from lamina.oci.docker_archive import write_docker_archive

        write_docker_archive(self.tarball_path(digest), image, tags)
        with atomic_write(self.manifest_path(digest)) as f:
            f.write(raw)
        return digest


class _UnusableError(Exception):
    pass


def _members(archive: DockerArchive, manifest: Manifest) -> dict[Digest, str]:
    """Tar member names of the manifest's config and layers."""
    if len(archive.entries) != 1:
        raise _UnusableError(f"{len(archive.entries)} images in the tarball, expected one")
    entry = archive.entries[0]
    if len(entry.layers) != len(manifest.layers):
        raise _UnusableError(
            f"the tarball has {len(entry.layers)} layers, the manifest {len(manifest.layers)}"
        )
    members = {manifest.config.digest: entry.config}
    for desc, name in zip(manifest.layers, entry.layers, strict=True):
        members[desc.digest] = name
    for name in members.values():
        with archive.open_member(name):  # raises when the member is missing
            pass
    return members


def _fetcher(
    archive: DockerArchive, members: dict[Digest, str]
) -> Callable[[Descriptor], contextlib.AbstractContextManager[BinaryIO]]:
    @contextmanager
    def fetch(desc: Descriptor) -> Iterator[BinaryIO]:
        name = members.get(desc.digest)
        if name is None:
            raise _missing(archive, desc)
        with archive.open_member(name) as f:
            yield f

    return fetch


def _missing(archive: DockerArchive, desc: Descriptor) -> LaminaError:
    return ImageFormatError(
        f"warmed image {archive.path} has no blob {desc.digest}",
        hint="re-run 'lamina warm --force' for this image",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmResult:
    """What the warmer did with one image."""

    ref: Reference
    digest: Digest | None
    #: "cached", "fresh" (already there, skipped) or "failed"
    outcome: str
    error: str = ""


def warm_base_images(
    client: RegistryClient,
    images: list[tuple[Reference, Platform]],
    cache: BaseImageCache,
    *,
    force: bool,
    log: logging.Logger,
) -> list[WarmResult]:
    """Pull each image for its platform into ``cache`` (kaniko's warmer).

    An image already cached and fresh is skipped unless ``force``. A failure is logged
    as a warning and recorded; the caller decides whether all failing is an error
    (kaniko: only when no image could be warmed).
    """
    results: list[WarmResult] = []
    for ref, platform in images:
        try:
            image = client.pull(ref, platform=platform)
            digest = image.digest()
            if not force and cache.is_fresh(digest):
                log.info("base image %s (%s) is already cached", ref, digest)
                results.append(WarmResult(ref=ref, digest=digest, outcome="fresh"))
                continue
            cache.store(image, ref)
            log.info("cached base image %s as %s", ref, cache.tarball_path(digest))
            results.append(WarmResult(ref=ref, digest=digest, outcome="cached"))
        except LaminaError as exc:
            log.warning("warming %s failed: %s", ref, exc.message)
            results.append(WarmResult(ref=ref, digest=None, outcome="failed", error=exc.message))
    return results
