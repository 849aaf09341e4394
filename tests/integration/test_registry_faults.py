"""Retries, redirects, broken transfers, chunked uploads, mounts and mirrors,
through a fault-injecting proxy in front of the real plain registry."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import AuthError, ImageFormatError, RegistryError
from lamina.oci import Platform, Reference
from lamina.registry import RegistryClient, RegistryOptions
from tests.conftest import PushImage
from tests.support.faulty_proxy import Fault, FaultyProxy
from tests.support.registry import LayoutImage, RegistryServer, skopeo

pytestmark = pytest.mark.registry

AMD64 = Platform.parse("linux/amd64")
BLOB_GET = r"^/v2/.*/blobs/sha256:"
MANIFEST = r"^/v2/.*/manifests/"


@pytest.fixture
def proxy(registry_plain: RegistryServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(registry_plain.base_url) as p:
        yield p


@pytest.fixture
def source(registry_plain: RegistryServer, push_image: PushImage) -> LayoutImage:
    return push_image(
        registry_plain,
        "faults/src:1",
        layer_files=[{"big.bin": os.urandom(20000)}, {"small.txt": b"small"}],
    )


def _client(**opts: Any) -> RegistryClient:
    opts.setdefault("retry_backoff", 0.01)
    return RegistryClient(RegistryOptions(**opts), docker_config_dir=None)


def _ref(host: str, name: str) -> Reference:
    return Reference.parse(f"{host}/{name}")


def test_retry_on_503_and_429_honours_retry_after(proxy: FaultyProxy, source: LayoutImage) -> None:
    ref = _ref(proxy.host, "faults/src:1")
    proxy.add_fault(Fault(path=MANIFEST, method="GET", action="status", status=503, times=1))
    proxy.add_fault(
        Fault(
            path=MANIFEST,
            method="GET",
            action="status",
            status=429,
            headers={"Retry-After": "1"},
            times=1,
        )
    )
    with _client(image_download_retry=2) as client:
        start = time.monotonic()
        image = client.pull(ref, platform=AMD64)
        assert time.monotonic() - start >= 0.9  # waited for Retry-After
        assert str(image.digest()) == source.manifest_digest
    manifest_gets = [r for r in proxy.requests if r[0] == "GET" and "/manifests/" in r[1]]
    assert len(manifest_gets) == 3


def test_no_retry_by_default(proxy: FaultyProxy, source: LayoutImage) -> None:
    ref = _ref(proxy.host, "faults/src:1")
    proxy.add_fault(Fault(path=MANIFEST, method="GET", action="status", status=500, times=1))
    with _client() as client, pytest.raises(RegistryError) as info:
        client.pull(ref, platform=AMD64)
    assert f"pulling {ref}: 500" in str(info.value)


def test_redirected_blobs(proxy: FaultyProxy, source: LayoutImage, tmp_path: Path) -> None:
    proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="redirect", times=-1))
    with _client() as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        files = client.download_layers(image, tmp_path / "blobs")
    assert len(files) == 2
    assert any(p.startswith("/_redirected/") for _, p in proxy.requests)


def test_corrupt_blob_is_never_used(
    proxy: FaultyProxy, source: LayoutImage, tmp_path: Path
) -> None:
    with _client() as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        image.config()
        proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="corrupt", times=-1))
        with pytest.raises(ImageFormatError, match=r"has digest sha256:\w+, expected") as info:
            client.download_layers(image, tmp_path / "blobs")
        assert "faults/src:1" in str(info.value)
        assert list((tmp_path / "blobs").iterdir()) == []  # nothing half-written kept
        with pytest.raises(ImageFormatError), image.layers()[1].uncompressed() as tar:
            tar.read()


def test_dropped_connection_mid_blob(
    proxy: FaultyProxy, source: LayoutImage, tmp_path: Path
) -> None:
    ref = _ref(proxy.host, "faults/src:1")
    with _client() as client:
        image = client.pull(ref, platform=AMD64)
        image.config()
        proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="cut", times=1))
        with pytest.raises(RegistryError) as info:
            client.download_layers(image, tmp_path / "a", parallel=1)
        assert str(ref) in str(info.value)
        assert not list((tmp_path / "a").glob("*.partial"))
    proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="cut", times=1))
    proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="reset", times=1))
    with _client(image_download_retry=2) as client:
        image = client.pull(ref, platform=AMD64)
        files = client.download_layers(image, tmp_path / "b", parallel=1)
    assert {str(d) for d in files} == set(source.layer_digests)


def test_push_retries_on_5xx_and_drops(
    proxy: FaultyProxy, registry_plain: RegistryServer, source: LayoutImage
) -> None:
    dest = _ref(proxy.host, "faults/retried:1")
    with _client(push_retry=3) as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        image.config()
        proxy.add_fault(
            Fault(path=r"/blobs/uploads/", method="POST", action="status", status=502, times=1)
        )
        proxy.add_fault(
            Fault(
                path=r"/manifests/",
                method="PUT",
                action="status",
                status=429,
                headers={"Retry-After": "0"},
                times=1,
            )
        )
        proxy.add_fault(Fault(path=r"/blobs/sha256:", method="HEAD", action="reset", times=1))
        digest = client.push(image, [dest])
    assert str(digest) == source.manifest_digest
    info = json.loads(
        skopeo(
            "inspect",
            *registry_plain.skopeo_args(),
            f"docker://{registry_plain.host}/faults/retried:1",
        )
    )
    assert info["Digest"] == source.manifest_digest


def test_failed_push_leaves_no_tag(proxy: FaultyProxy, source: LayoutImage) -> None:
    dest = _ref(proxy.host, "faults/forbidden:1")
    with _client(push_retry=1) as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        image.config()
        proxy.add_fault(
            Fault(path=r"/forbidden/blobs/uploads/", action="status", status=403, times=-1)
        )
        with pytest.raises(AuthError) as info:
            client.push(image, [dest])
        assert f"pushing {dest}: 403 Forbidden" in str(info.value)
        assert not any(m == "PUT" and "/manifests/" in p for m, p in proxy.requests)
        assert client.head_manifest(dest) is None


def test_immutable_tag(proxy: FaultyProxy, source: LayoutImage) -> None:
    dest = _ref(proxy.host, "faults/immutable:1")
    body = (
        b'{"errors":[{"code":"TAG_INVALID","message":"tag cannot be overwritten '
        b'because the repository is immutable"}]}'
    )
    fault = Fault(
        path=r"/manifests/", method="PUT", action="status", status=400, body=body, times=-1
    )
    with _client() as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        proxy.add_fault(fault)
        with pytest.raises(RegistryError, match="immutable") as info:
            client.push(image, [dest])
        assert info.value.hint is not None
        assert "--push-ignore-immutable-tag-errors" in info.value.hint
    with _client(push_ignore_immutable_tag_errors=True) as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        client.push(image, [dest])


def test_chunked_upload_and_mount(
    proxy: FaultyProxy, registry_plain: RegistryServer, source: LayoutImage
) -> None:
    with _client(chunked_upload_threshold=1000, upload_chunk_size=4096) as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        blobs = {layer.digest(): layer for layer in image.layers()}
        big = max(blobs.values(), key=lambda layer: layer.size())
        assert big.size() > 4096 * 2
        proxy.clear()
        client.push(image, [_ref(proxy.host, "faults/mounted:1")])
        mounts = [p for m, p in proxy.requests if m == "POST" and "mount=" in p]
        assert len(mounts) == 2  # both layers mounted from faults/src
        assert not any(m == "PATCH" for m, _ in proxy.requests)

    # push the same image to another registry name of the same server: no mount possible
    registry_host = registry_plain.host
    with _client(chunked_upload_threshold=1000, upload_chunk_size=4096) as client:
        image = client.pull(_ref(registry_host, "faults/src:1"), platform=AMD64)
        proxy.clear()
        client.push(image, [_ref(proxy.host, "faults/chunked:1")])
        patches = [p for m, p in proxy.requests if m == "PATCH"]
        assert len(patches) >= big.size() // 4096
        info = json.loads(
            skopeo(
                "inspect",
                *registry_plain.skopeo_args(),
                f"docker://{registry_host}/faults/chunked:1",
            )
        )
        assert info["Digest"] == source.manifest_digest


def test_mirrors(proxy: FaultyProxy, registry_plain: RegistryServer, push_image: PushImage) -> None:
    pushed = push_image(registry_plain, "mirror-prefix/team/app:1")
    original = Reference.parse("registry.invalid/team/app:1")
    opts = {"registry_maps": {"registry.invalid": (f"{registry_plain.host}/mirror-prefix",)}}
    with _client(**opts) as client:
        assert str(client.pull(original, platform=AMD64).digest()) == pushed.manifest_digest

    # a mirror that fails falls back to the next one
    proxy.add_fault(Fault(path=MANIFEST, action="status", status=404, times=-1))
    opts2: dict[str, Any] = {
        "registry_maps": {
            "registry.invalid": (proxy.host, f"{registry_plain.host}/mirror-prefix"),
        }
    }
    with _client(**opts2) as client:
        assert str(client.pull(original, platform=AMD64).digest()) == pushed.manifest_digest

    # no fallback to the original when asked
    opts_skip: dict[str, Any] = {
        "registry_maps": {"registry.invalid": (proxy.host,)},
        "skip_default_registry_fallback": True,
    }
    with _client(**opts_skip) as client, pytest.raises(RegistryError) as info:
        client.pull(original, platform=AMD64)
    assert "--skip-default-registry-fallback" in str(info.value)

    # --registry-mirror applies to Docker Hub only
    hub = Reference.parse("team/app:1")
    with _client(registry_mirrors=(f"{registry_plain.host}/mirror-prefix",)) as client:
        with pytest.raises(RegistryError):
            client.pull(Reference.parse("registry.invalid/team/app:1"), platform=AMD64)
        assert str(client.pull(hub, platform=AMD64).digest()) == pushed.manifest_digest


def test_present_blobs_are_skipped(proxy: FaultyProxy, source: LayoutImage) -> None:
    with _client() as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        proxy.clear()
        client.push(image, [_ref(proxy.host, "faults/src:again")])
    methods = [m for m, _ in proxy.requests]
    assert "POST" not in methods
    assert "PATCH" not in methods
    assert methods.count("HEAD") == 3  # two layers and the config
    assert methods[-1] == "PUT"  # only the manifest


def test_corrupt_source_is_never_pushed(
    proxy: FaultyProxy, registry_plain: RegistryServer, source: LayoutImage
) -> None:
    dest = _ref(registry_plain.host, "faults/from-corrupt:1")
    with _client(push_retry=1) as client:
        image = client.pull(_ref(proxy.host, "faults/src:1"), platform=AMD64)
        image.config()
        proxy.add_fault(Fault(path=BLOB_GET, method="GET", action="corrupt", times=-1))
        with pytest.raises(ImageFormatError, match="expected"):
            client.push(image, [dest])
        assert client.head_manifest(dest) is None
