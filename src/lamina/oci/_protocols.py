"""The three small interfaces of the image model.

Every accessor may raise a :class:`lamina.errors.LaminaError`, so that
implementations can be lazy (a remote layer downloads nothing until opened).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol, runtime_checkable

from lamina.oci._digest import Digest
from lamina.oci._records import ImageConfig, Index, Manifest

__all__ = ["Image", "ImageIndex", "Layer"]


@runtime_checkable
class Layer(Protocol):
    """A layer: metadata plus a way to open its bytes on demand."""

    def digest(self) -> Digest:
        """Digest of the compressed blob (as in the manifest)."""
        ...

    def diff_id(self) -> Digest:
        """Digest of the uncompressed tar (as in ``rootfs.diff_ids``)."""
        ...

    def size(self) -> int:
        """Size in bytes of the compressed blob."""
        ...

    def media_type(self) -> str: ...

    def compressed(self) -> AbstractContextManager[BinaryIO]:
        """Open the blob as stored (verified against ``digest()`` while read)."""
        ...

    def uncompressed(self) -> AbstractContextManager[BinaryIO]:
        """Open the uncompressed tar stream."""
        ...


@runtime_checkable
class Image(Protocol):
    """A single-platform image: a manifest, a config and layers."""

    def manifest(self) -> Manifest: ...

    def raw_manifest(self) -> bytes: ...

    def digest(self) -> Digest:
        """Digest of :meth:`raw_manifest`."""
        ...

    def media_type(self) -> str: ...

    def config(self) -> ImageConfig: ...

    def raw_config(self) -> bytes: ...

    def layers(self) -> Sequence[Layer]: ...

    def layer_by_digest(self, digest: Digest) -> Layer: ...


@runtime_checkable
class ImageIndex(Protocol):
    """A multi-platform index (OCI image index or Docker manifest list)."""

    def index(self) -> Index: ...

    def raw_manifest(self) -> bytes: ...

    def digest(self) -> Digest: ...

    def media_type(self) -> str: ...

    def image(self, digest: Digest) -> Image: ...

    def child_index(self, digest: Digest) -> ImageIndex: ...
