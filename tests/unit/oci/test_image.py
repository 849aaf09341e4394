from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import (
    BlobImage,
    BlobIndex,
    Descriptor,
    Digest,
    Image,
    Index,
    Platform,
    detect_manifest_media_type,
    mediatypes,
    recompress,
)

from .helpers import make_image


class Store:
    """An in-memory blob store counting fetches."""

    def __init__(self) -> None:
        self.blobs: dict[Digest, bytes] = {}
        self.fetched: list[Digest] = []

    def add(self, data: bytes) -> Digest:
        d = Digest.of_bytes(data)
        self.blobs[d] = data
        return d

    def add_image(self, img: Image) -> Descriptor:
        self.add(img.raw_config())
        for layer in img.layers():
            with layer.compressed() as f:
                self.add(f.read())
        raw = img.raw_manifest()
        return Descriptor(media_type=img.media_type(), digest=self.add(raw), size=len(raw))

    @contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        self.fetched.append(desc.digest)
        yield io.BytesIO(self.blobs[desc.digest])


def test_blob_image_is_lazy(tmp_path: Path) -> None:
    src = make_image(tmp_path, 2)
    store = Store()
    store.add_image(src)
    img = BlobImage(src.raw_manifest(), store.fetch, what="reg/x:1")
    assert img.digest() == src.digest()
    assert img.manifest().layers == src.manifest().layers
    assert store.fetched == []
    layers = img.layers()  # needs the config for diff_ids, not the layer blobs
    assert store.fetched == [src.manifest().config.digest]
    assert layers[1].diff_id() == src.config().diff_ids[1]
    assert len(store.fetched) == 1
    with layers[1].uncompressed() as f:
        assert f.read()
    assert store.fetched[-1] == src.manifest().layers[1].digest


def test_blob_image_refuses_foreign_layers(tmp_path: Path) -> None:
    src = make_image(tmp_path, 1)
    store = Store()
    store.add_image(src)
    raw = src.raw_manifest().replace(
        mediatypes.OCI_LAYER_GZIP.encode(), mediatypes.DOCKER_FOREIGN_LAYER.encode()
    )
    img = BlobImage(raw, store.fetch, what="mcr.microsoft.com/windows:1")
    with pytest.raises(
        ImageFormatError,
        match=r"foreign/non-distributable .* of mcr.microsoft.com/windows:1 is not",
    ):
        img.layers()


def test_blob_index_platform_selection(tmp_path: Path) -> None:
    store = Store()
    amd = make_image(tmp_path, 1)
    arm = make_image(tmp_path, 2)
    d_amd = store.add_image(amd)
    d_arm = store.add_image(arm)
    index = Index(
        manifests=(
            Descriptor(
                media_type=d_amd.media_type,
                digest=d_amd.digest,
                size=d_amd.size,
                platform=Platform.parse("linux/amd64"),
            ),
            Descriptor(
                media_type=d_arm.media_type,
                digest=d_arm.digest,
                size=d_arm.size,
                platform=Platform.parse("linux/arm64/v8"),
            ),
        )
    )
    idx = BlobIndex(index.to_json(), store.fetch, what="reg/multi:1")
    assert idx.image_for(Platform.parse("linux/arm64")).digest() == arm.digest()
    assert idx.image(d_amd.digest).digest() == amd.digest()
    with pytest.raises(ImageFormatError, match="not an image index"):
        idx.child_index(d_amd.digest)
    with pytest.raises(ImageFormatError, match="has no manifest"):
        idx.image(Digest.of_bytes(b"x"))


def test_detect_manifest_media_type() -> None:
    assert detect_manifest_media_type(b'{"schemaVersion":2,"manifests":[]}') == mediatypes.OCI_INDEX
    assert detect_manifest_media_type(b'{"schemaVersion":2,"config":{}}') == mediatypes.OCI_MANIFEST
    docker = f'{{"schemaVersion":2,"mediaType":"{mediatypes.DOCKER_MANIFEST}"}}'.encode()
    assert detect_manifest_media_type(docker, "text/plain") == mediatypes.DOCKER_MANIFEST
    assert (
        detect_manifest_media_type(b'{"schemaVersion":1,"signatures":[]}')
        == mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST
    )
    with pytest.raises(ImageFormatError, match="cannot tell"):
        detect_manifest_media_type(b'{"schemaVersion":2}')


def test_recompress(tmp_path: Path) -> None:
    src = make_image(tmp_path, 1, compression="zstd")
    (layer,) = src.layers()
    out = recompress(layer, tmp_path / "re.gz", compression="gzip", flavour="docker")
    assert out.media_type() == mediatypes.DOCKER_LAYER
    assert out.diff_id() == layer.diff_id()
    assert out.digest() != layer.digest()
    with out.compressed() as f:
        assert f.read(2) == b"\x1f\x8b"
    assert Digest.of_bytes(gzip.decompress((tmp_path / "re.gz").read_bytes())) == layer.diff_id()


def test_describe_image(tmp_path: Path) -> None:
    from lamina.oci import describe_image

    img = make_image(tmp_path, 2)
    doc = describe_image(img, name="reg/x:1")
    assert doc["digest"] == str(img.digest())
    assert doc["name"] == "reg/x:1"
    assert doc["config"]["rootfs"]["diff_ids"] == [str(d) for d in img.config().diff_ids]
    assert [layer["diffID"] for layer in doc["layers"]] == doc["config"]["rootfs"]["diff_ids"]
    assert doc["manifest"]["mediaType"] == mediatypes.OCI_MANIFEST
