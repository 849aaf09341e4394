"""The OCI image model: digests, media types, references, records, layers, images.

No network here. Sources and sinks for local formats live in
:mod:`lamina.oci.oci_layout` and :mod:`lamina.oci.docker_archive`; media type
constants in :mod:`lamina.oci.mediatypes`.
"""

from __future__ import annotations

from lamina.oci import mediatypes
from lamina.oci._digest import Digest, DigestingReader, DigestingWriter, Hasher
from lamina.oci._digestfiles import (
    digest_file_text,
    image_name_tag_with_digest_text,
    image_name_with_digest_text,
)
from lamina.oci._fsutil import atomic_file
from lamina.oci._image import (
    MAX_JSON_BLOB,
    BlobFetcher,
    BlobImage,
    BlobIndex,
    StaticImage,
    describe_image,
    empty_image,
    read_json_blob,
)
from lamina.oci._json import format_time, parse_time
from lamina.oci._layers import (
    CHUNK_SIZE,
    BlobLayer,
    FileLayer,
    LayerStats,
    compress_layer,
    decompress,
    detect_compression,
    recompress,
)
from lamina.oci._mutate import (
    Addendum,
    append_layers,
    canonical,
    with_config,
    with_created,
    with_media_types,
)
from lamina.oci._platform import Platform
from lamina.oci._protocols import Image, ImageIndex, Layer
from lamina.oci._records import (
    ContainerConfig,
    Descriptor,
    History,
    ImageConfig,
    Index,
    Manifest,
    detect_manifest_media_type,
)
from lamina.oci._reference import DOCKER_HUB, DOCKER_HUB_ALIASES, Reference

__all__ = [
    "CHUNK_SIZE",
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "MAX_JSON_BLOB",
    "Addendum",
    "BlobFetcher",
    "BlobImage",
    "BlobIndex",
    "BlobLayer",
    "ContainerConfig",
    "Descriptor",
    "Digest",
    "DigestingReader",
    "DigestingWriter",
    "FileLayer",
    "Hasher",
    "History",
    "Image",
    "ImageConfig",
    "ImageIndex",
    "Index",
    "Layer",
    "LayerStats",
    "Manifest",
    "Platform",
    "Reference",
    "StaticImage",
    "append_layers",
    "atomic_file",
    "canonical",
    "compress_layer",
    "decompress",
    "describe_image",
    "detect_compression",
    "detect_manifest_media_type",
    "digest_file_text",
    "empty_image",
    "format_time",
    "image_name_tag_with_digest_text",
    "image_name_with_digest_text",
    "mediatypes",
    "parse_time",
    "read_json_blob",
    "recompress",
    "with_config",
    "with_created",
    "with_media_types",
]
