from __future__ import annotations

import contextlib
import hashlib
import io
import json
from typing import Any

import httpx
import pytest

from lamina.errors import AuthError, RegistryError
from lamina.oci import Addendum, BlobLayer, History, Image, Reference, append_layers, empty_image
from lamina.oci import mediatypes as mt
from lamina.registry import RegistryClient, RegistryOptions

HOST = "reg.test"


class UploadServer:
    """Records uploads; checks Content-Range continuity and digests like a registry."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.manifests: dict[str, bytes] = {}
        self.log: list[str] = []
        self.status_override: dict[str, int] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.log.append(f"{method} {path}")
        if path == "/v2/":
            return httpx.Response(200)
        for key, status in self.status_override.items():
            if key in f"{method} {path}":
                return httpx.Response(status, json={"errors": [{"message": "nope"}]})
        if "/blobs/uploads/" in path:
            if method == "POST":
                sid = f"s{len(self.sessions)}"
                self.sessions[sid] = bytearray()
                return httpx.Response(202, headers={"Location": f"/v2/x/blobs/uploads/{sid}"})
            sid = path.rsplit("/", 1)[1]
            buf = self.sessions[sid]
            body = request.read()
            if method == "PATCH":
                start, end = map(int, request.headers["content-range"].split("-"))
                assert start == len(buf), (start, len(buf))
                assert end - start + 1 == len(body)
                buf += body
                return httpx.Response(202, headers={"Location": f"/v2/x/blobs/uploads/{sid}"})
            if method == "PUT":
                buf += body
                digest = request.url.params["digest"]
                if "sha256:" + hashlib.sha256(buf).hexdigest() != digest:
                    return httpx.Response(400, json={"errors": [{"message": "digest invalid"}]})
                self.blobs[digest] = bytes(buf)
                return httpx.Response(201)
        if "/blobs/" in path and method == "HEAD":
            return httpx.Response(200 if path.rsplit("/", 1)[1] in self.blobs else 404)
        if "/manifests/" in path and method == "PUT":
            manifest = json.loads(request.read())
            for desc in [manifest["config"], *manifest["layers"]]:
                if desc["digest"] not in self.blobs:
                    return httpx.Response(400, json={"errors": [{"message": "blob unknown"}]})
            self.manifests[path.rsplit("/", 1)[1]] = request.content
            return httpx.Response(201)
        return httpx.Response(405)


def _image(size: int) -> Image:
    data = bytes(range(256)) * (size // 256)
    layer = BlobLayer(
        lambda: contextlib.nullcontext(io.BytesIO(data)),
        media_type=mt.OCI_LAYER,
    )
    return append_layers(empty_image(), Addendum(layer=layer, history=History(created_by="t")))


def _client(server: UploadServer, **opts: Any) -> RegistryClient:
    return RegistryClient(
        RegistryOptions(insecure=True, retry_backoff=0, **opts),
        docker_config_dir=None,
        transport=httpx.MockTransport(server.handler),
    )


@pytest.mark.parametrize("threshold", [1, 1 << 30])
def test_upload_then_manifest_last(threshold: int) -> None:
    server = UploadServer()
    image = _image(10_000)
    with _client(server, chunked_upload_threshold=threshold, upload_chunk_size=3000) as client:
        digest = client.push(image, [Reference.parse(f"{HOST}/x:1")])
    assert digest == image.digest()
    assert server.manifests["1"] == image.raw_manifest()
    assert server.log[-1] == "PUT /v2/x/manifests/1"
    patches = [entry for entry in server.log if entry.startswith("PATCH")]
    assert len(patches) == (0 if threshold > 1 else 4 + 1)  # 10 KB layer in 4 + config in 1


def test_failed_blob_means_no_manifest() -> None:
    server = UploadServer()
    server.status_override["POST"] = 403
    with _client(server) as client, pytest.raises(AuthError, match="403"):
        client.push(_image(1000), [Reference.parse(f"{HOST}/x:1")])
    assert not server.manifests
    assert not any("manifests" in entry for entry in server.log)


def test_push_retry_then_give_up() -> None:
    server = UploadServer()
    server.status_override["PUT /v2/x/manifests"] = 503
    with _client(server, push_retry=2) as client, pytest.raises(RegistryError, match="503"):
        client.push(_image(1000), [Reference.parse(f"{HOST}/x:1")])
    assert sum("manifests" in entry for entry in server.log) == 3
