from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import (
    ContainerConfig,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    mediatypes,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "config": {
        "Hostname": "abc",
        "Env": ["PATH=/usr/bin", "A=b=c"],
        "Cmd": ["sh"],
        "Image": "sha256:deadbeef",
        "ExposedPorts": {"80/tcp": {}},
        "Labels": {"x": "y"},
        "OnBuild": None,
        "MysteryField": {"keep": [1, 2]},
    },
    "container": "0123",
    "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"]},
    "created": "2023-05-01T12:34:56.123456789Z",
    "docker_version": "20.10.23",
    "history": [
        {"created": "2023-05-01T12:34:56Z", "created_by": "ADD file:x in /", "x-h": 1},
        {"created": "2023-05-01T12:34:57Z", "created_by": "CMD sh", "empty_layer": True},
    ],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [D1]},
    "x-future": 42,
}


def test_config_roundtrip_keeps_unknown_fields() -> None:
    cfg = ImageConfig.from_json(json.dumps(BASE_CONFIG).encode())
    assert cfg.config.env == ("PATH=/usr/bin", "A=b=c")
    assert cfg.config.env_dict() == {"PATH": "/usr/bin", "A": "b=c"}
    assert cfg.config.cmd == ("sh",)
    assert cfg.config.exposed_ports == ("80/tcp",)
    assert cfg.diff_ids == (Digest.parse(D1),)
    assert cfg.history[1].empty_layer
    assert cfg.created_at is not None
    assert cfg.created_at.microsecond == 123456
    again = json.loads(cfg.to_json())
    assert again["x-future"] == 42
    assert again["container_config"] == BASE_CONFIG["container_config"]
    assert again["config"]["MysteryField"] == {"keep": [1, 2]}
    assert again["config"]["Image"] == "sha256:deadbeef"
    assert again["created"] == BASE_CONFIG["created"]
    assert again["history"] == BASE_CONFIG["history"]
    assert "OnBuild" not in again["config"]


def test_config_changes_overlay_raw() -> None:
    from dataclasses import replace

    cfg = ImageConfig.from_json(BASE_CONFIG)
    cc = replace(cfg.config, env=(*cfg.config.env, "NEW=1"), cmd=None, user="app")
    cfg2 = replace(cfg, config=cc, diff_ids=(*cfg.diff_ids, Digest.parse(D2)))
    out = json.loads(cfg2.to_json())
    assert out["config"]["Env"][-1] == "NEW=1"
    assert "Cmd" not in out["config"]
    assert out["config"]["User"] == "app"
    assert out["config"]["MysteryField"] == {"keep": [1, 2]}
    assert out["rootfs"]["diff_ids"] == [D1, D2]
    assert out["docker_version"] == "20.10.23"


def test_fresh_config_spec_order_and_compact() -> None:
    cfg = ImageConfig(
        architecture="arm64",
        os="linux",
        variant="v8",
        created="2024-01-01T00:00:00Z",
        config=ContainerConfig(entrypoint=(), cmd=("a",), working_dir="/w"),
        diff_ids=(Digest.parse(D1),),
        history=(History(created_by="x"),),
    )
    raw = cfg.to_json()
    assert b" " not in raw
    keys = list(json.loads(raw))
    assert keys == ["created", "architecture", "os", "variant", "config", "rootfs", "history"]
    assert json.loads(raw)["config"] == {"Entrypoint": [], "Cmd": ["a"], "WorkingDir": "/w"}
    assert ImageConfig.from_json(raw) == cfg
    assert cfg.platform == Platform(os="linux", architecture="arm64", variant="v8")


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "missing 'rootfs'"),
        (b'{"rootfs":{"type":"x"}}', "'rootfs.type' must be 'layers'"),
        (b'{"rootfs":{"type":"layers","diff_ids":["nope"]}}', "invalid digest 'nope'"),
        (b'{"rootfs":{"type":"layers"},"history":{}}', "'history' must be a list"),
        (b'{"rootfs":{"type":"layers"},"config":{"Env":"A=1"}}', "'Env' must be a list"),
        (b'{"rootfs":{"type":"layers"},"created":"yesterday"}', "invalid timestamp"),
        (b'{"rootfs":{"type":"layers"},"architecture":5}', "'architecture' must be a string"),
    ],
)
def test_config_invalid(doc: bytes, fragment: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        ImageConfig.from_json(doc, "config of ref X")
    assert fragment in info.value.message
    assert "config of ref X" in info.value.message


def _manifest_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "config": {"mediaType": mediatypes.DOCKER_CONFIG, "size": 10, "digest": D1},
        "layers": [{"mediaType": mediatypes.DOCKER_LAYER, "size": 20, "digest": D2}],
    }
    doc.update(over)
    return doc


def test_manifest_roundtrip() -> None:
    m = Manifest.from_json(json.dumps(_manifest_doc()).encode())
    assert m.media_type == mediatypes.DOCKER_MANIFEST
    assert m.config.size == 10
    assert m.layers[0].digest == Digest.parse(D2)
    assert Manifest.from_json(m.to_json()) == m
    assert list(json.loads(m.to_json())) == ["schemaVersion", "mediaType", "config", "layers"]
    assert list(json.loads(m.to_json())["config"]) == ["mediaType", "digest", "size"]


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"schemaVersion": 1}, "schema1 format, which is not supported"),
        ({"schemaVersion": 3}, "'schemaVersion' must be 2"),
        ({"mediaType": "application/x-foo"}, "unknown media type 'application/x-foo'"),
        ({"mediaType": mediatypes.OCI_INDEX}, "it is an index"),
        ({"config": None}, "missing 'config'"),
        ({"layers": {}}, "'layers' must be a list"),
        ({"layers": [{"mediaType": "x", "size": -1, "digest": D1}]}, "non-negative integer"),
        ({"layers": [{"mediaType": "x", "size": 1}]}, "'digest' must be a digest"),
        ({"layers": [{"size": 1, "digest": D1}]}, "missing 'mediaType'"),
    ],
)
def test_manifest_invalid(over: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        Manifest.from_json(_manifest_doc(**over), "manifest of reg/x:y")
    assert fragment in info.value.message
    assert "reg/x:y" in info.value.message


def test_index_roundtrip_and_select() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [
            {
                "mediaType": mediatypes.OCI_MANIFEST,
                "size": 1,
                "digest": D1,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": mediatypes.OCI_MANIFEST,
                "size": 2,
                "digest": D2,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
        "annotations": {"a": "b"},
    }
    idx = Index.from_json(doc)
    assert Index.from_json(idx.to_json()) == idx
    assert idx.select(Platform.parse("linux/arm64")).digest == Digest.parse(D2)
    with pytest.raises(ImageFormatError, match=r"no image for platform linux/s390x.*available"):
        idx.select(Platform.parse("linux/s390x"))
    with pytest.raises(ImageFormatError, match="not an image index"):
        Index.from_json({**doc, "mediaType": mediatypes.OCI_MANIFEST})


def test_descriptor_optional_fields() -> None:
    d = Descriptor(
        media_type=mediatypes.OCI_LAYER,
        digest=Digest.parse(D1),
        size=3,
        urls=("https://x",),
        annotations={"k": "v"},
        artifact_type="application/x",
    )
    assert Descriptor.from_json(d.to_json()) == d
    bare = Descriptor(media_type=mediatypes.OCI_LAYER, digest=Digest.parse(D1), size=3)
    assert json.loads(bare.to_json()) == {
        "mediaType": mediatypes.OCI_LAYER,
        "digest": D1,
        "size": 3,
    }


def test_mediatype_helpers() -> None:
    assert mediatypes.is_index(mediatypes.DOCKER_MANIFEST_LIST)
    assert mediatypes.is_manifest(mediatypes.OCI_MANIFEST + "; charset=utf-8")
    assert not mediatypes.is_manifest(mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER) == "gzip"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_ZSTD) == "zstd"
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER) == "none"
    assert mediatypes.is_foreign(mediatypes.DOCKER_FOREIGN_LAYER)
    assert mediatypes.is_foreign(mediatypes.OCI_NONDIST_LAYER_GZIP)
    with pytest.raises(ImageFormatError, match="foreign/non-distributable"):
        mediatypes.check_layer_media_type(mediatypes.DOCKER_FOREIGN_LAYER, "layer 0 of x")
    with pytest.raises(ImageFormatError, match="unknown layer media type"):
        mediatypes.layer_compression("text/plain")
    with pytest.raises(ImageFormatError, match="Docker schema2"):
        mediatypes.layer_media_type("docker", "zstd")
    assert mediatypes.OCI_INDEX in mediatypes.MANIFEST_ACCEPT
