"""Media types of OCI and Docker image objects, and helpers to classify them."""

from __future__ import annotations

from typing import Final, Literal

from lamina.errors import ImageFormatError

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_PLUGIN_CONFIG",
    "DOCKER_SCHEMA1_MANIFEST",
    "DOCKER_SCHEMA1_SIGNED_MANIFEST",
    "DOCKER_UNCOMPRESSED_LAYER",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "OCI_NONDIST_LAYER",
    "OCI_NONDIST_LAYER_GZIP",
    "OCI_NONDIST_LAYER_ZSTD",
    "Compression",
    "check_layer_media_type",
    "is_config",
    "is_docker",
    "is_foreign",
    "is_index",
    "is_layer",
    "is_manifest",
    "is_oci",
    "is_schema1",
    "layer_compression",
    "layer_media_type",
]

Compression = Literal["gzip", "zstd", "none"]

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST_LAYER: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_LAYER_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_PLUGIN_CONFIG: Final = "application/vnd.docker.plugin.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_UNCOMPRESSED_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: what a puller sends in ``Accept`` when fetching a manifest by tag or digest
MANIFEST_ACCEPT: Final[tuple[str, ...]] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
)

_INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_SCHEMA1 = frozenset({DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED_MANIFEST})
_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_FOREIGN = frozenset(
    {DOCKER_FOREIGN_LAYER, OCI_NONDIST_LAYER, OCI_NONDIST_LAYER_GZIP, OCI_NONDIST_LAYER_ZSTD}
)
_LAYER_COMPRESSION: dict[str, Compression] = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_NONDIST_LAYER: "none",
    OCI_NONDIST_LAYER_GZIP: "gzip",
    OCI_NONDIST_LAYER_ZSTD: "zstd",
    DOCKER_LAYER: "gzip",
    DOCKER_UNCOMPRESSED_LAYER: "none",
    DOCKER_FOREIGN_LAYER: "gzip",
}


def _base(mt: str) -> str:
    # media types may carry parameters ("; charset=utf-8") from HTTP headers
    return mt.split(";", 1)[0].strip().lower()


def is_index(mt: str) -> bool:
    """An OCI image index or a Docker manifest list."""
    return _base(mt) in _INDEXES


def is_manifest(mt: str) -> bool:
    """An OCI image manifest or a Docker schema2 manifest (not schema1)."""
    return _base(mt) in _MANIFESTS


def is_schema1(mt: str) -> bool:
    """A deprecated Docker schema1 manifest (unsupported)."""
    return _base(mt) in _SCHEMA1


def is_config(mt: str) -> bool:
    return _base(mt) in _CONFIGS


def is_layer(mt: str) -> bool:
    return _base(mt) in _LAYER_COMPRESSION


def is_foreign(mt: str) -> bool:
    """A foreign (Docker) or non-distributable (OCI) layer, which lamina refuses."""
    return _base(mt) in _FOREIGN


def is_docker(mt: str) -> bool:
    return _base(mt).startswith("application/vnd.docker.")


def is_oci(mt: str) -> bool:
    return _base(mt).startswith("application/vnd.oci.")


def layer_compression(mt: str) -> Compression:
    """The compression a layer media type declares; unknown types raise ImageFormatError."""
    c = _LAYER_COMPRESSION.get(_base(mt))
    if c is None:
        raise ImageFormatError(
            f"unknown layer media type {mt!r}",
            hint="lamina understands OCI layers (tar, tar+gzip, tar+zstd) and Docker "
            "schema2 layers (rootfs.diff.tar.gzip)",
        )
    return c


def check_layer_media_type(mt: str, where: str = "") -> Compression:
    """Validate a layer media type for use; foreign layers are refused clearly."""
    suffix = f" in {where}" if where else ""
    if is_foreign(mt):
        raise ImageFormatError(
            f"foreign/non-distributable layer {mt!r}{suffix} is not supported",
            hint="such layers (e.g. Windows base layers) must be fetched from URLs outside "
            "the registry; use a Linux base image with ordinary layers",
        )
    try:
        return layer_compression(mt)
    except ImageFormatError as exc:
        raise ImageFormatError(f"{exc.message}{suffix}", hint=exc.hint) from None


def layer_media_type(flavour: Literal["oci", "docker"], compression: Compression) -> str:
    """The layer media type for a manifest flavour and a compression."""
    if flavour == "oci":
        return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
    if compression == "zstd":
        raise ImageFormatError(
            "zstd-compressed layers cannot be expressed in a Docker schema2 manifest",
            hint="use OCI media types for zstd layers, or --compression=gzip",
        )
    return DOCKER_LAYER if compression == "gzip" else DOCKER_UNCOMPRESSED_LAYER
