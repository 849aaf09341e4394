"""The OCI image model: digests, media types, references, records, layers, images.

No network here. Sources and sinks for local formats live in
:mod:`lamina.oci.oci_layout` and :mod:`lamina.oci.docker_archive`; media type
constants in :mod:`lamina.oci.mediatypes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports
from lamina.oci import mediatypes

if TYPE_CHECKING:
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

# imported on first use: a package that needs one leaf module (fs needs ``_tarread``)
# does not load the layer codecs (isal, zstandard) and the image model with it
__getattr__ = lazy_exports(
    __name__,
    {
        "Addendum": "lamina.oci._mutate",
        "BlobFetcher": "lamina.oci._image",
        "BlobImage": "lamina.oci._image",
        "BlobIndex": "lamina.oci._image",
        "BlobLayer": "lamina.oci._layers",
        "CHUNK_SIZE": "lamina.oci._layers",
        "ContainerConfig": "lamina.oci._records",
        "DOCKER_HUB": "lamina.oci._reference",
        "DOCKER_HUB_ALIASES": "lamina.oci._reference",
        "Descriptor": "lamina.oci._records",
        "Digest": "lamina.oci._digest",
        "DigestingReader": "lamina.oci._digest",
        "DigestingWriter": "lamina.oci._digest",
        "FileLayer": "lamina.oci._layers",
        "Hasher": "lamina.oci._digest",
        "History": "lamina.oci._records",
        "Image": "lamina.oci._protocols",
        "ImageConfig": "lamina.oci._records",
        "ImageIndex": "lamina.oci._protocols",
        "Index": "lamina.oci._records",
        "Layer": "lamina.oci._protocols",
        "LayerStats": "lamina.oci._layers",
        "MAX_JSON_BLOB": "lamina.oci._image",
        "Manifest": "lamina.oci._records",
        "Platform": "lamina.oci._platform",
        "Reference": "lamina.oci._reference",
        "StaticImage": "lamina.oci._image",
        "append_layers": "lamina.oci._mutate",
        "atomic_file": "lamina.oci._fsutil",
        "canonical": "lamina.oci._mutate",
        "compress_layer": "lamina.oci._layers",
        "decompress": "lamina.oci._layers",
        "describe_image": "lamina.oci._image",
        "detect_compression": "lamina.oci._layers",
        "detect_manifest_media_type": "lamina.oci._records",
        "digest_file_text": "lamina.oci._digestfiles",
        "empty_image": "lamina.oci._image",
        "format_time": "lamina.oci._json",
        "image_name_tag_with_digest_text": "lamina.oci._digestfiles",
        "image_name_with_digest_text": "lamina.oci._digestfiles",
        "parse_time": "lamina.oci._json",
        "read_json_blob": "lamina.oci._image",
        "recompress": "lamina.oci._layers",
        "with_config": "lamina.oci._mutate",
        "with_created": "lamina.oci._mutate",
        "with_media_types": "lamina.oci._mutate",
    },
)
