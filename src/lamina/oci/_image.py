"""Generic lazy images and indexes built from raw manifests and a blob fetcher."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from lamina.errors import ImageFormatError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest, DigestingReader
from lamina.oci._json import dumps
from lamina.oci._layers import CHUNK_SIZE, BlobLayer
from lamina.oci._platform import Platform
from lamina.oci._protocols import Image, ImageIndex, Layer
from lamina.oci._records import Descriptor, ImageConfig, Index, Manifest

__all__ = [
    "MAX_JSON_BLOB",
    "BlobFetcher",
    "BlobImage",
    "BlobIndex",
    "StaticImage",
    "describe_image",
    "empty_image",
    "read_json_blob",
]

#: the largest manifest or config lamina reads into memory
MAX_JSON_BLOB = 32 << 20

BlobFetcher = Callable[[Descriptor], AbstractContextManager[BinaryIO]]


def read_json_blob(fetch: BlobFetcher, desc: Descriptor, what: str) -> bytes:
    """Read a small blob (manifest, config) fully, verifying digest and size."""
    if desc.size > MAX_JSON_BLOB:
        raise ImageFormatError(
            f"{what} ({desc.digest}) declares {desc.size} bytes, more than the "
            f"{MAX_JSON_BLOB} bytes lamina accepts for a JSON document",
            hint="the descriptor is wrong or the image is malicious",
        )
    with fetch(desc) as f:
        r = DigestingReader(f, expected=desc.digest, expected_size=desc.size, what=what)
        parts = []
        while chunk := r.read(CHUNK_SIZE):
            parts.append(chunk)
    return b"".join(parts)


class BlobImage:
    """An :class:`Image` from a raw manifest and a function opening blobs.

    Nothing is read until asked: the config is fetched (and verified) on first
    use; layers open their blobs only when read. ``what`` names the image in
    errors (e.g. the reference).
    """

    def __init__(self, raw_manifest: bytes, fetch: BlobFetcher, *, what: str = "image") -> None:
        self._raw = raw_manifest
        self._fetch = fetch
        self.what = what
        self._manifest: Manifest | None = None
        self._raw_config: bytes | None = None
        self._config: ImageConfig | None = None
        self._layers: list[Layer] | None = None

    def __repr__(self) -> str:
        return f"<BlobImage {self.what}>"

    def raw_manifest(self) -> bytes:
        return self._raw

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest.from_json(self._raw, f"manifest of {self.what}")
        return self._manifest

    def digest(self) -> Digest:
        return Digest.of_bytes(self._raw)

    def media_type(self) -> str:
        return self.manifest().media_type

    def raw_config(self) -> bytes:
        if self._raw_config is None:
            desc = self.manifest().config
            self._raw_config = read_json_blob(self._fetch, desc, f"config of {self.what}")
        return self._raw_config

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.from_json(self.raw_config(), f"config of {self.what}")
        return self._config

    def layers(self) -> Sequence[Layer]:
        if self._layers is None:
            manifest = self.manifest()
            diff_ids = self.config().diff_ids
            if len(diff_ids) != len(manifest.layers):
                raise ImageFormatError(
                    f"{self.what}: the manifest lists {len(manifest.layers)} layers but the "
                    f"config has {len(diff_ids)} rootfs.diff_ids",
                    hint="the image is corrupt; rebuild or re-push it",
                )
            layers: list[Layer] = []
            for i, (desc, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
                where = f"layer {i} ({desc.digest}) of {self.what}"
                mt.check_layer_media_type(desc.media_type, where)
                layers.append(
                    BlobLayer(
                        _bind(self._fetch, desc),
                        media_type=desc.media_type,
                        digest=desc.digest,
                        size=desc.size,
                        diff_id=diff_id,
                        what=where,
                    )
                )
            self._layers = layers
        return self._layers

    def layer_by_digest(self, digest: Digest) -> Layer:
        return _find_layer(self, digest, self.what)


def _bind(fetch: BlobFetcher, desc: Descriptor) -> Callable[[], AbstractContextManager[BinaryIO]]:
    return lambda: fetch(desc)


def _find_layer(image: Image, digest: Digest, what: str) -> Layer:
    for layer in image.layers():
        if layer.digest() == digest or layer.diff_id() == digest:
            return layer
    raise ImageFormatError(
        f"{what} has no layer with digest {digest}",
        hint="the digest belongs to another image",
    )


class BlobIndex:
    """An :class:`ImageIndex` from a raw index and a function opening blobs."""

    def __init__(self, raw_manifest: bytes, fetch: BlobFetcher, *, what: str = "index") -> None:
        self._raw = raw_manifest
        self._fetch = fetch
        self.what = what
        self._index: Index | None = None

    def raw_manifest(self) -> bytes:
        return self._raw

    def index(self) -> Index:
        if self._index is None:
            self._index = Index.from_json(self._raw, f"index of {self.what}")
        return self._index

    def digest(self) -> Digest:
        return Digest.of_bytes(self._raw)

    def media_type(self) -> str:
        return self.index().media_type

    def _child(self, digest: Digest) -> Descriptor:
        for desc in self.index().manifests:
            if desc.digest == digest:
                return desc
        raise ImageFormatError(
            f"{self.what} has no manifest {digest}",
            hint="list the index with 'lamina inspect' to see its manifests",
        )

    def image(self, digest: Digest) -> Image:
        desc = self._child(digest)
        what = f"{self.what}@{digest}"
        if not mt.is_manifest(desc.media_type):
            raise ImageFormatError(f"{what} is {desc.media_type!r}, not an image manifest")
        raw = read_json_blob(self._fetch, desc, f"manifest {what}")
        return BlobImage(raw, self._fetch, what=what)

    def child_index(self, digest: Digest) -> ImageIndex:
        desc = self._child(digest)
        what = f"{self.what}@{digest}"
        if not mt.is_index(desc.media_type):
            raise ImageFormatError(f"{what} is {desc.media_type!r}, not an image index")
        raw = read_json_blob(self._fetch, desc, f"index {what}")
        return BlobIndex(raw, self._fetch, what=what)

    def image_for(self, platform: Platform) -> Image:
        """The child image matching ``platform`` (Docker's matching rules)."""
        return self.image(self.index().select(platform).digest)


class StaticImage:
    """An image fully described in memory (config JSON and layer objects)."""

    def __init__(
        self,
        *,
        raw_config: bytes,
        layers: Sequence[Layer] = (),
        media_type: str = mt.OCI_MANIFEST,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self._raw_config = raw_config
        self._layers = list(layers)
        self._media_type = media_type
        self._annotations = annotations or {}
        self._raw_manifest: bytes | None = None
        self._config: ImageConfig | None = None

    def raw_config(self) -> bytes:
        return self._raw_config

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.from_json(self._raw_config)
        return self._config

    def layers(self) -> Sequence[Layer]:
        return self._layers

    def media_type(self) -> str:
        return self._media_type

    def manifest(self) -> Manifest:
        docker = mt.is_docker(self._media_type)
        return Manifest(
            media_type=self._media_type,
            config=Descriptor(
                media_type=mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG,
                digest=Digest.of_bytes(self._raw_config),
                size=len(self._raw_config),
            ),
            layers=tuple(
                Descriptor(media_type=lyr.media_type(), digest=lyr.digest(), size=lyr.size())
                for lyr in self._layers
            ),
            annotations=self._annotations,
        )

    def raw_manifest(self) -> bytes:
        if self._raw_manifest is None:
            self._raw_manifest = self.manifest().to_json()
        return self._raw_manifest

    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw_manifest())

    def layer_by_digest(self, digest: Digest) -> Layer:
        return _find_layer(self, digest, "image")


def empty_image(platform: Platform | None = None) -> Image:
    """The empty (``scratch``) image in OCI form, optionally for a platform."""
    cfg: dict[str, object] = {
        "architecture": platform.architecture if platform else "",
        "os": platform.os if platform else "",
    }
    if platform is not None and platform.variant:
        cfg["variant"] = platform.variant
    cfg["rootfs"] = {"type": "layers", "diff_ids": []}
    return StaticImage(raw_config=dumps(cfg))


def describe_image(image: Image, *, name: str | None = None) -> dict[str, Any]:
    """A JSON-ready summary for ``lamina inspect``: digest, manifest, config, layers.

    Reads the manifest and config only (no layer blob is opened).
    """
    manifest = image.manifest()
    raw_config = image.raw_config()
    try:
        config_doc = json.loads(raw_config)
    except ValueError as exc:
        raise ImageFormatError(f"config of {name or 'image'} is not valid JSON: {exc}") from exc
    diff_ids = image.config().diff_ids
    layers = []
    for i, desc in enumerate(manifest.layers):
        entry: dict[str, Any] = {
            "mediaType": desc.media_type,
            "digest": str(desc.digest),
            "size": desc.size,
        }
        if i < len(diff_ids):
            entry["diffID"] = str(diff_ids[i])
        layers.append(entry)
    out: dict[str, Any] = {}
    if name is not None:
        out["name"] = name
    out["digest"] = str(image.digest())
    out["mediaType"] = image.media_type()
    out["manifest"] = json.loads(image.raw_manifest())
    out["config"] = config_doc
    out["layers"] = layers
    return out
