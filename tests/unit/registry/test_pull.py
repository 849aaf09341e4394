from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lamina.errors import ImageFormatError, RegistryError
from lamina.oci import Platform, Reference
from lamina.oci import mediatypes as mt
from lamina.registry import RegistryClient, RegistryOptions
from lamina.registry._mirrors import mirror_reference, pull_candidates

AMD64 = Platform.parse("linux/amd64")
HOST = "reg.test"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Just enough of the distribution API, in memory, for httpx.MockTransport."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.blob_override: dict[str, bytes] = {}
        self.manifest_headers: dict[str, str] = {}

    def add_image(
        self,
        tag: str,
        *,
        layer_tar: bytes = b"tar-bytes",
        config: bytes | None = None,
        manifest: bytes | None = None,
        media_type: str = mt.OCI_MANIFEST,
    ) -> bytes:
        layer = gzip.compress(layer_tar, mtime=0)
        self.blobs[sha(layer)] = layer
        if config is None:
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
                }
            ).encode()
        self.blobs[sha(config)] = config
        if manifest is None:
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": media_type,
                    "config": {
                        "mediaType": mt.OCI_CONFIG,
                        "digest": sha(config),
                        "size": len(config),
                    },
                    "layers": [
                        {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha(layer), "size": len(layer)}
                    ],
                }
            ).encode()
        self.manifests[tag] = (manifest, media_type)
        self.manifests[sha(manifest)] = (manifest, media_type)
        return manifest

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200)
        if "/manifests/" in path:
            ref = path.rsplit("/", 1)[1]
            if ref not in self.manifests:
                return httpx.Response(
                    404,
                    json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                )
            body, media_type = self.manifests[ref]
            headers = {"Content-Type": media_type, "Docker-Content-Digest": sha(body)}
            headers.update(self.manifest_headers)
            return httpx.Response(200, content=body, headers=headers)
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            if digest in self.blob_override:
                return httpx.Response(200, content=self.blob_override[digest])
            if digest not in self.blobs:
                return httpx.Response(404)
            return httpx.Response(200, content=self.blobs[digest])
        return httpx.Response(400)


def _client(
    fake: FakeRegistry | Callable[[httpx.Request], httpx.Response], **opts: Any
) -> RegistryClient:
    handler = fake.handler if isinstance(fake, FakeRegistry) else fake
    return RegistryClient(
        RegistryOptions(insecure_pull=True, retry_backoff=0, **opts),
        docker_config_dir=None,
        transport=httpx.MockTransport(handler),
    )


def _ref(name: str = "app:1") -> Reference:
    return Reference.parse(f"{HOST}/{name}")


def test_pull_and_read() -> None:
    fake = FakeRegistry()
    fake.add_image("1", layer_tar=b"hello tar")
    with _client(fake) as client:
        image = client.pull(_ref(), platform=AMD64)
        (layer,) = image.layers()
        with layer.uncompressed() as f:
            assert f.read() == b"hello tar"
        with layer.compressed() as f:
            assert gzip.decompress(f.read()) == b"hello tar"


def test_schema1_refused() -> None:
    fake = FakeRegistry()
    body = json.dumps({"schemaVersion": 1, "name": "app", "tag": "1", "fsLayers": []}).encode()
    fake.manifests["1"] = (body, mt.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    with _client(fake) as client, pytest.raises(ImageFormatError, match="schema1") as info:
        client.pull(_ref(), platform=AMD64)
    assert str(_ref()) in str(info.value)
    assert info.value.hint is not None


def test_malformed_manifest() -> None:
    fake = FakeRegistry()
    fake.manifests["1"] = (b"{not json", mt.OCI_MANIFEST)
    with _client(fake) as client, pytest.raises(ImageFormatError, match="not valid JSON") as info:
        client.pull(_ref(), platform=AMD64)
    assert str(_ref()) in str(info.value)


def test_manifest_missing_config() -> None:
    fake = FakeRegistry()
    fake.add_image("1", manifest=json.dumps({"schemaVersion": 2, "layers": []}).encode())
    with _client(fake) as client, pytest.raises(ImageFormatError, match="config"):
        client.pull(_ref(), platform=AMD64)


def test_unknown_media_type() -> None:
    fake = FakeRegistry()
    fake.add_image("1", media_type="application/vnd.example.thing+json")
    with _client(fake) as client, pytest.raises(ImageFormatError, match="unknown manifest media"):
        client.pull(_ref(), platform=AMD64)


def test_unknown_layer_media_type() -> None:
    fake = FakeRegistry()
    manifest = json.loads(fake.add_image("1"))
    manifest["layers"][0]["mediaType"] = "application/x-weird"
    fake.add_image("1", manifest=json.dumps(manifest).encode())
    with _client(fake) as client, pytest.raises(ImageFormatError, match="x-weird"):
        client.pull(_ref(), platform=AMD64)


def test_malformed_config() -> None:
    fake = FakeRegistry()
    fake.add_image("1", config=b'{"architecture": "amd64"}')
    with _client(fake) as client:
        image = client.pull(_ref(), platform=AMD64)
        with pytest.raises(ImageFormatError, match="rootfs") as info:
            image.config()
        assert "app:1" in str(info.value)


def test_layer_count_mismatch() -> None:
    fake = FakeRegistry()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    fake.add_image("1", config=config.encode())
    with _client(fake) as client, pytest.raises(ImageFormatError, match="diff_ids"):
        client.pull(_ref(), platform=AMD64).layers()


def test_manifest_digest_mismatch() -> None:
    fake = FakeRegistry()
    manifest = fake.add_image("1")
    fake.manifest_headers["Docker-Content-Digest"] = sha(b"something else")
    with _client(fake) as client, pytest.raises(ImageFormatError, match="announced"):
        client.pull(_ref(), platform=AMD64)
    fake.manifest_headers.clear()
    # by digest: the content must hash to the digest asked for
    wanted = sha(manifest)
    fake.manifests[wanted] = (manifest + b" ", mt.OCI_MANIFEST)
    with _client(fake) as client, pytest.raises(ImageFormatError, match="expected"):
        client.pull(_ref(f"app@{wanted}"), platform=AMD64)


def test_blob_digest_mismatch_and_truncation(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.add_image("1", layer_tar=b"payload" * 100)
    with _client(fake) as client:
        image = client.pull(_ref(), platform=AMD64)
        (layer,) = image.layers()
        good = fake.blobs[str(layer.digest())]
        fake.blob_override[str(layer.digest())] = bytes([good[0] ^ 1]) + good[1:]
        with pytest.raises(ImageFormatError, match="expected"), layer.compressed() as f:
            f.read()
        fake.blob_override[str(layer.digest())] = good[:-5]
        with pytest.raises(ImageFormatError, match="truncated"):
            client.download_layers(image, tmp_path)
        assert list(tmp_path.iterdir()) == []
        fake.blob_override[str(layer.digest())] = good + b"extra"
        with pytest.raises(ImageFormatError, match="longer"), layer.compressed() as f:
            f.read()


def test_404_names_reference() -> None:
    fake = FakeRegistry()
    with _client(fake) as client, pytest.raises(RegistryError) as info:
        client.pull(_ref("app:nope"), platform=AMD64)
    assert str(info.value) == f"pulling {_ref('app:nope')}: 404 Not Found: manifest unknown"


def test_index_selection() -> None:
    fake = FakeRegistry()
    manifest = fake.add_image("amd")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    fake.manifests["idx"] = (index, mt.OCI_INDEX)
    with _client(fake) as client:
        found = client.get_index_or_image(_ref("app:idx"))
        assert found.media_type() == mt.OCI_INDEX
        assert str(client.pull(_ref("app:idx"), platform=AMD64).digest()) == sha(manifest)
        with pytest.raises(ImageFormatError, match="linux/arm64"):
            client.pull(_ref("app:idx"), platform=Platform.parse("linux/arm64"))


def test_retries_count() -> None:
    calls = {"n": 0}
    fake = FakeRegistry()
    fake.add_image("1")

    def handler(request: httpx.Request) -> httpx.Response:
        if "/manifests/" in request.url.path:
            calls["n"] += 1
            if calls["n"] <= 2:
                return httpx.Response(503, headers={"Retry-After": "0"})
        return fake.handler(request)

    with (
        _client(handler, image_download_retry=1) as client,
        pytest.raises(RegistryError, match="503"),
    ):
        client.pull(_ref(), platform=AMD64)
    calls["n"] = 0
    with _client(handler, image_download_retry=2) as client:
        client.pull(_ref(), platform=AMD64)
    assert calls["n"] == 3


def test_mirror_candidates() -> None:
    hub = Reference.parse("busybox:1")
    opts = RegistryOptions(registry_mirrors=("mirror.test/hub",))
    cands = pull_candidates(hub, opts)
    assert [str(r) for r, _ in cands] == [
        "mirror.test/hub/library/busybox:1",
        "index.docker.io/library/busybox:1",
    ]
    assert [m for _, m in cands] == [True, False]
    other = Reference.parse("ghcr.io/org/app:1")
    assert [r for r, _ in pull_candidates(other, opts)] == [other]
    opts = RegistryOptions(
        registry_maps={"ghcr.io": ("m1.test", "https://m2.test/pre/")},
        skip_default_registry_fallback=True,
    )
    assert [str(r) for r, _ in pull_candidates(other, opts)] == [
        "m1.test/org/app:1",
        "m2.test/pre/org/app:1",
    ]
    assert str(mirror_reference(other, "docker.io")) == "docker.io/org/app:1"


def test_tag_that_looks_like_a_digest_prefix() -> None:
    fake = FakeRegistry()
    fake.add_image("sha-1234")
    with _client(fake) as client:
        assert client.pull(_ref("app:sha-1234"), platform=AMD64).layers()
