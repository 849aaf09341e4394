"""The registry client facade."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from lamina.errors import ImageFormatError, LaminaError, RegistryError
from lamina.oci import Descriptor, Digest, Image, Platform, Reference
from lamina.oci import mediatypes as mt

from ._auth import DockerConfigLocation, Keychain
from ._mirrors import pull_candidates
from ._options import RegistryOptions
from ._pull import RemoteImage, RemoteIndex, RemoteRepository, download_layers
from ._push import Pusher
from ._transport import RegistryTransport

__all__ = ["RegistryClient"]

_log = logging.getLogger("lamina.registry")


class RegistryClient:
    """Pull, inspect and push images (distribution spec v2) with kaniko's options.

    ``docker_config_dir`` holds ``config.json`` or ``.dockerconfigjson`` (None:
    anonymous only), or is a :class:`DockerConfigLocation` with a fallback file; the
    CLI resolves it with :func:`lamina.registry.default_docker_config`.
    ``transport`` replaces the network (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        options: RegistryOptions | None = None,
        *,
        docker_config_dir: DockerConfigLocation | Path | None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.options = options or RegistryOptions()
        self._transport = RegistryTransport(
            self.options, Keychain(docker_config_dir), transport=transport
        )
        self._pusher = Pusher(self._transport, self.options)

    # ------------------------------------------------------------------ pull
    def _repository(self, ref: Reference, original: Reference) -> RemoteRepository:
        what = f"pulling {original}"
        if ref != original:
            what += f" (from mirror {ref.registry})"
        endpoint = self._transport.endpoint(ref.registry, "pull")
        return RemoteRepository(endpoint, ref, self.options, what=what)

    def get_index_or_image(self, ref: Reference) -> RemoteImage | RemoteIndex:
        """The manifest at ``ref``, trying mirrors first (``--registry-map/-mirror``)."""
        candidates = pull_candidates(ref, self.options)
        failures: list[str] = []
        for candidate, is_mirror in candidates:
            repo = self._repository(candidate, ref)
            try:
                raw, media_type, digest = repo.fetch_manifest(candidate.identifier)
            except LaminaError as exc:
                if not is_mirror:
                    raise
                _log.warning("%s; trying the next source", exc.message)
                failures.append(f"{candidate.registry}: {exc.message}")
                continue
            target = ref.with_digest(digest) if ref.digest is None else ref
            if mt.is_index(media_type):
                return RemoteIndex(repo, target, raw, media_type, digest)
            return RemoteImage(repo, target, raw, media_type, digest)
        raise RegistryError(
            f"pulling {ref}: no mirror has the image and "
            "--skip-default-registry-fallback forbids the original registry: "
            + "; ".join(failures),
            hint="check the --registry-map / --registry-mirror values",
        )

    def find_index_or_image(self, ref: Reference) -> RemoteImage | RemoteIndex | None:
        """The manifest at ``ref`` (no mirrors), or None when it is absent: a single GET."""
        repo = self._repository(ref, ref)
        found = repo.fetch_manifest_if_present(ref.identifier)
        if found is None:
            return None
        raw, media_type, digest = found
        target = ref.with_digest(digest) if ref.digest is None else ref
        if mt.is_index(media_type):
            return RemoteIndex(repo, target, raw, media_type, digest)
        return RemoteImage(repo, target, raw, media_type, digest)

    def pull(self, ref: Reference, *, platform: Platform) -> RemoteImage:
        """The image at ``ref`` for ``platform`` (an index is resolved to one child)."""
        found = self.get_index_or_image(ref)
        depth = 0
        while isinstance(found, RemoteIndex):
            index = found.index()
            try:
                desc = index.select(platform)
            except ImageFormatError as exc:
                raise ImageFormatError(f"pulling {ref}: {exc.message}", hint=exc.hint) from None
            if mt.is_index(desc.media_type):
                depth += 1
                if depth > 4:
                    raise ImageFormatError(f"pulling {ref}: indexes nested too deeply")
                found = found.child_index(desc.digest)
            else:
                found = found.image(desc.digest)
        found.manifest()  # parse early: malformed manifests fail here, naming the reference
        return found

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        """The descriptor of the manifest at ``ref`` (no mirrors), or None when absent."""
        repo = self._repository(ref, ref)
        return repo.head_manifest(ref.identifier)

    @staticmethod
    def download_layers(image: Image, dest_dir: Path, *, parallel: int = 4) -> dict[Digest, Path]:
        """Fetch all remote layers of ``image`` in parallel into ``dest_dir`` (verified)."""
        return dict(download_layers(image.layers(), dest_dir, parallel=parallel))

    # ------------------------------------------------------------------ push
    def check_push_permission(self, refs: Sequence[Reference]) -> None:
        """Fail fast when a destination does not accept pushes (skip with the CLI flag)."""
        self._pusher.check_push_permission(refs)

    def push(self, image: Image, refs: Sequence[Reference]) -> Digest:
        """Push ``image`` to every reference; returns the manifest digest."""
        return self._pusher.push(image, refs)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
