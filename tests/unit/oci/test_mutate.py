from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import (
    Addendum,
    BlobImage,
    Digest,
    History,
    ImageConfig,
    append_layers,
    canonical,
    empty_image,
    mediatypes,
    with_config,
    with_created,
    with_media_types,
)

from .helpers import make_image, make_layer


def test_empty_image() -> None:
    img = empty_image()
    assert img.media_type() == mediatypes.OCI_MANIFEST
    assert img.layers() == []
    assert img.manifest().config.digest == Digest.of_bytes(img.raw_config())
    assert img.digest() == Digest.of_bytes(img.raw_manifest())
    assert img.config().diff_ids == ()


def test_append_layers_and_base_untouched(tmp_path: Path) -> None:
    base = make_image(tmp_path, 1)
    base_digest = base.digest()
    base_raw = base.raw_manifest()
    layer = make_layer(tmp_path, {"new": b"x"})
    img = append_layers(
        base,
        Addendum(layer=layer, history=History(created_by="RUN x")),
        Addendum(layer=None, history=History(created_by="ENV A=1")),
    )
    assert base.digest() == base_digest
    assert base.raw_manifest() == base_raw
    cfg = img.config()
    assert cfg.diff_ids == (*base.config().diff_ids, layer.diff_id())
    assert [h.created_by for h in cfg.history][-2:] == ["RUN x", "ENV A=1"]
    assert cfg.history[-1].empty_layer
    assert not cfg.history[-2].empty_layer
    m = img.manifest()
    assert [d.digest for d in m.layers] == [
        *(d.digest for d in base.manifest().layers),
        layer.digest(),
    ]
    assert m.config.digest == Digest.of_bytes(img.raw_config())
    assert json.loads(img.raw_manifest()) == m.to_dict()
    assert img.layer_by_digest(layer.digest()) is layer
    assert img.digest() != base_digest
    with pytest.raises(ImageFormatError, match="no layer with digest"):
        img.layer_by_digest(Digest.of_bytes(b"nope"))


def test_with_config_and_created(tmp_path: Path) -> None:
    base = make_image(tmp_path, 1)
    cfg = base.config()
    new_cfg = replace(cfg, config=replace(cfg.config, env=("A=1",), cmd=("sh",)))
    img = with_config(base, new_cfg)
    assert img.config().config.env == ("A=1",)
    assert ImageConfig.from_json(img.raw_config()).config.cmd == ("sh",)
    assert img.manifest().layers == base.manifest().layers
    img2 = with_created(img, datetime(2025, 2, 3, 4, 5, 6, 500000, tzinfo=UTC))
    assert img2.config().created == "2025-02-03T04:05:06.5Z"
    assert img.config().created != img2.config().created


def test_canonical_normalises_times_not_layers(tmp_path: Path) -> None:
    base = make_image(tmp_path, 2)
    raw = json.loads(base.raw_config())
    raw["container"] = "abc"
    raw["docker_version"] = "1"
    raw["config"] = {"Hostname": "host", "Env": ["A=1"]}
    raw["created"] = "2021-01-01T00:00:00Z"
    dirty = with_config(base, ImageConfig.from_json(raw))
    out1 = canonical(dirty, epoch=0)
    cfg = json.loads(out1.raw_config())
    assert cfg["created"] == "1970-01-01T00:00:00Z"
    assert all(h["created"] == "1970-01-01T00:00:00Z" for h in cfg["history"])
    assert "container" not in cfg
    assert "docker_version" not in cfg
    assert cfg["config"] == {"Env": ["A=1"]}
    assert out1.manifest().layers == base.manifest().layers
    # same content built at another time gives the same digest
    other = with_created(dirty, datetime(2030, 1, 1, tzinfo=UTC))
    assert canonical(other, epoch=0).digest() == out1.digest()
    assert canonical(dirty, epoch=86400).config().created == "1970-01-02T00:00:00Z"


def test_with_media_types_roundtrip(tmp_path: Path) -> None:
    oci = make_image(tmp_path, 2)
    docker = with_media_types(oci, "docker")
    m = docker.manifest()
    assert m.media_type == mediatypes.DOCKER_MANIFEST
    assert m.config.media_type == mediatypes.DOCKER_CONFIG
    assert {d.media_type for d in m.layers} == {mediatypes.DOCKER_LAYER}
    assert [d.digest for d in m.layers] == [d.digest for d in oci.manifest().layers]
    assert {lyr.media_type() for lyr in docker.layers()} == {mediatypes.DOCKER_LAYER}
    back = with_media_types(docker, "oci")
    assert back.raw_manifest() == oci.raw_manifest()


def test_docker_refuses_zstd(tmp_path: Path) -> None:
    img = make_image(tmp_path, 1, compression="zstd")
    with pytest.raises(ImageFormatError, match="zstd-compressed"):
        with_media_types(img, "docker").manifest()


def test_append_converts_new_layer_to_base_flavour(tmp_path: Path) -> None:
    docker_base = with_media_types(make_image(tmp_path, 1), "docker")
    layer = make_layer(tmp_path, {"a": b"b"})  # OCI gzip media type
    img = append_layers(docker_base, Addendum(layer=layer, history=History()))
    assert img.manifest().layers[-1].media_type == mediatypes.DOCKER_LAYER
    assert img.media_type() == mediatypes.DOCKER_MANIFEST


def test_blob_image_validates(tmp_path: Path) -> None:
    src = make_image(tmp_path, 2)
    blobs = {src.manifest().config.digest: src.raw_config()}

    from contextlib import nullcontext
    from io import BytesIO

    def fetch(desc):  # type: ignore[no-untyped-def]
        return nullcontext(BytesIO(blobs[desc.digest]))

    img = BlobImage(src.raw_manifest(), fetch, what="reg/x:y")
    assert img.config() == src.config()
    assert [lyr.digest() for lyr in img.layers()] == [lyr.digest() for lyr in src.layers()]
    blobs[src.manifest().config.digest] = b"{}"
    bad = BlobImage(src.raw_manifest(), fetch, what="reg/x:y")
    with pytest.raises(ImageFormatError, match="config of reg/x:y is truncated"):
        bad.config()
