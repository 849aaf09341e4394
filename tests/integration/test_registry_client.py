"""RegistryClient against real registries (plain, htpasswd, TLS)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import AuthError, ImageFormatError, RegistryError
from lamina.oci import Digest, Platform, Reference
from lamina.registry import RegistryClient, RegistryOptions
from tests.conftest import PushImage
from tests.support.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryServer,
    make_tls_material,
    put_manifest,
    skopeo,
    start_registry,
)

pytestmark = pytest.mark.registry

AMD64 = Platform.parse("linux/amd64")


def _client(
    server: RegistryServer, tmp_path: Path, *, creds: bool = True, **opts: Any
) -> RegistryClient:
    cfg = None
    if creds:
        cfg = tmp_path / "docker-config"
        server.write_docker_config(cfg)
    if server.ca_cert is not None and "registry_certificates" not in opts:
        opts["registry_certificates"] = {server.host: server.ca_cert}
    opts.setdefault("retry_backoff", 0.01)
    return RegistryClient(RegistryOptions(**opts), docker_config_dir=cfg)


def _ref(server: RegistryServer, name: str) -> Reference:
    return Reference.parse(f"{server.host}/{name}")


@pytest.fixture(params=["plain", "htpasswd", "tls"])
def server(request: pytest.FixtureRequest) -> RegistryServer:
    fixture: RegistryServer = request.getfixturevalue(f"registry_{request.param}")
    return fixture


def test_ping_all_three(server: RegistryServer, tmp_path: Path) -> None:
    assert server.url_status("/v2/") == 200
    with _client(server, tmp_path) as client:
        assert client.head_manifest(_ref(server, "nothing/here:1")) is None


def test_htpasswd_requires_credentials(registry_htpasswd: RegistryServer, tmp_path: Path) -> None:
    assert registry_htpasswd.url_status("/v2/", auth=False) == 401
    ref = _ref(registry_htpasswd, "app:1")
    with (
        _client(registry_htpasswd, tmp_path, creds=False) as client,
        pytest.raises(AuthError) as info,
    ):
        client.pull(ref, platform=AMD64)
    text = info.value.render()
    assert f"pulling {ref}: 401 Unauthorized" in text
    assert "config.json" in text


def test_wrong_password_never_leaks(
    registry_htpasswd: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "totally-wrong-secret-42"
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config.json").write_text(
        json.dumps({"auths": {registry_htpasswd.host: {"username": "lamina", "password": wrong}}})
    )
    ref = _ref(registry_htpasswd, "app:1")
    with (
        RegistryClient(RegistryOptions(), docker_config_dir=cfg) as client,
        pytest.raises(AuthError) as info,
    ):
        client.pull(ref, platform=AMD64)
    assert "401" in str(info.value)
    assert str(ref) in str(info.value)
    assert wrong not in info.value.render()
    assert wrong not in caplog.text


def test_tls_unknown_ca_is_clear(
    registry_tls: RegistryServer, tmp_path: Path, push_image: PushImage
) -> None:
    push_image(registry_tls, "tlsimg:1")
    ref = _ref(registry_tls, "tlsimg:1")
    other_ca, _, _ = make_tls_material(tmp_path / "other", common_name="other CA")
    cases: list[dict[str, Any]] = [
        {"registry_certificates": {}},
        {"registry_certificates": {registry_tls.host: other_ca}},
    ]
    for opts in cases:
        with (
            _client(registry_tls, tmp_path, **opts) as client,
            pytest.raises(RegistryError) as info,
        ):
            client.pull(ref, platform=AMD64)
        assert "TLS certificate" in str(info.value)
        assert str(ref) in str(info.value)
        assert info.value.hint is not None
        assert "--registry-certificate" in info.value.hint
    # the pull-only skip flag works (it was a no-op in kaniko)
    with _client(registry_tls, tmp_path, registry_certificates={}, skip_tls_verify_pull=True) as c:
        assert c.pull(ref, platform=AMD64).layers()
    with _client(
        registry_tls,
        tmp_path,
        registry_certificates={},
        skip_tls_verify_registries=frozenset({registry_tls.host}),
    ) as c:
        assert c.pull(ref, platform=AMD64).layers()


def test_pull_image_lazily(server: RegistryServer, tmp_path: Path, push_image: PushImage) -> None:
    pushed = push_image(
        server, "pull/app:1", layer_files=[{"a.txt": b"alpha" * 1000}, {"b.txt": b"beta"}]
    )
    with _client(server, tmp_path) as client:
        image = client.pull(_ref(server, "pull/app:1"), platform=AMD64)
        assert str(image.digest()) == pushed.manifest_digest
        assert image.raw_manifest() == pushed.manifest
        assert image.raw_config() == pushed.config
        assert [str(d) for d in image.config().diff_ids] == list(pushed.diff_ids)
        layers = image.layers()
        assert [str(layer.digest()) for layer in layers] == list(pushed.layer_digests)
        with layers[0].compressed() as blob:
            assert blob.read() == pushed.layers[0]
        with layers[1].uncompressed() as tar:
            data = tar.read()
        assert b"beta" in data
        files = client.download_layers(image, tmp_path / "blobs")
        assert {str(d) for d in files} == set(pushed.layer_digests)
        for layer in layers:
            assert files[layer.digest()].read_bytes() == pushed.layers[layers.index(layer)]
            with layer.uncompressed() as tar:  # now read from the local file
                assert tar.read()


def test_pull_by_digest_and_head(
    registry_plain: RegistryServer, tmp_path: Path, push_image: PushImage
) -> None:
    pushed = push_image(registry_plain, "digest/app:1")
    with _client(registry_plain, tmp_path) as client:
        desc = client.head_manifest(_ref(registry_plain, "digest/app:1"))
        assert desc is not None
        assert str(desc.digest) == pushed.manifest_digest
        by_digest = _ref(registry_plain, f"digest/app@{pushed.manifest_digest}")
        assert str(client.pull(by_digest, platform=AMD64).digest()) == pushed.manifest_digest


def test_pull_index_picks_platform(
    registry_plain: RegistryServer, tmp_path: Path, push_image: PushImage
) -> None:
    amd = push_image(registry_plain, "multi/app:amd64", layer_files=[{"arch": b"amd64"}])
    arm = push_image(
        registry_plain, "multi/app:arm64", layer_files=[{"arch": b"arm64"}], architecture="arm64"
    )
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": img.manifest_digest,
                "size": len(img.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
            for img, arch in ((amd, "amd64"), (arm, "arm64"))
        ],
    }
    assert (
        put_manifest(registry_plain, "multi/app", "idx", json.dumps(index).encode(), OCI_INDEX)
        == 201
    )
    ref = _ref(registry_plain, "multi/app:idx")
    with _client(registry_plain, tmp_path) as client:
        got = client.pull(ref, platform=Platform.parse("linux/arm64"))
        assert str(got.digest()) == arm.manifest_digest
        assert got.config().architecture == "arm64"
        assert str(client.pull(ref, platform=AMD64).digest()) == amd.manifest_digest
        with pytest.raises(ImageFormatError, match=r"no image for platform linux/s390x") as info:
            client.pull(ref, platform=Platform.parse("linux/s390x"))
        assert str(ref) in str(info.value)


def test_missing_tag_is_404(registry_plain: RegistryServer, tmp_path: Path) -> None:
    ref = _ref(registry_plain, "nope/app:missing")
    with _client(registry_plain, tmp_path) as client, pytest.raises(RegistryError) as info:
        client.pull(ref, platform=AMD64)
    assert f"pulling {ref}: 404 Not Found" in str(info.value)


def test_push_accepted_by_skopeo(
    server: RegistryServer, tmp_path: Path, push_image: PushImage
) -> None:
    pushed = push_image(server, "push/src:1", layer_files=[{"f": b"x" * 5000}, {"g": b"y"}])
    dest = _ref(server, "push/dst:1")
    with _client(server, tmp_path) as client:
        image = client.pull(_ref(server, "push/src:1"), platform=AMD64)
        digest = client.push(image, [dest])
    assert str(digest) == pushed.manifest_digest
    info = json.loads(skopeo("inspect", *server.skopeo_args(), f"docker://{dest}"))
    assert info["Digest"] == pushed.manifest_digest
    assert info["Layers"] == list(pushed.layer_digests)
    out = tmp_path / "copy"
    skopeo("copy", "--quiet", *server.skopeo_src_args(), f"docker://{dest}", f"oci:{out}:x")
    assert (out / "blobs" / "sha256" / pushed.layer_digests[0].split(":")[1]).exists()


def test_push_permission_preflight(registry_htpasswd: RegistryServer, tmp_path: Path) -> None:
    ref = _ref(registry_htpasswd, "perm/app:1")
    with _client(registry_htpasswd, tmp_path) as client:
        client.check_push_permission([ref])
    with (
        _client(registry_htpasswd, tmp_path, creds=False) as client,
        pytest.raises(AuthError) as info,
    ):
        client.check_push_permission([ref])
    assert str(ref) in str(info.value)
    assert "401" in str(info.value)


def test_multi_destination_shares_uploads(
    registry_plain: RegistryServer, tmp_path: Path, push_image: PushImage
) -> None:
    pushed = push_image(registry_plain, "md/src:1", layer_files=[{"m": b"multi" * 999}])
    dests = [
        _ref(registry_plain, "md/one:a"),
        _ref(registry_plain, "md/one:b"),
        _ref(registry_plain, "md/two:c"),
    ]
    with _client(registry_plain, tmp_path) as client:
        image = client.pull(_ref(registry_plain, "md/src:1"), platform=AMD64)
        digest = client.push(image, dests)
    for dest in dests:
        info = json.loads(skopeo("inspect", *registry_plain.skopeo_args(), f"docker://{dest}"))
        assert info["Digest"] == str(digest) == pushed.manifest_digest
    assert Digest.parse(pushed.manifest_digest) == digest


def test_client_certificate(tmp_path: Path) -> None:
    running = start_registry("mtls", tmp_path / "mtls")
    try:
        server = running.server
        assert server.client_cert is not None
        assert server.url_status("/v2/") == 200
        ref = _ref(server, "none:1")
        with _client(server, tmp_path, creds=False) as client, pytest.raises(RegistryError):
            client.head_manifest(ref)
        with _client(
            server, tmp_path, creds=False, registry_client_certs={server.host: server.client_cert}
        ) as client:
            assert client.head_manifest(ref) is None
    finally:
        running.stop()


def test_user_agent_reaches_registry(registry_plain: RegistryServer, tmp_path: Path) -> None:
    with _client(registry_plain, tmp_path, user_agent_suffix="kaniko-ci") as client:
        client.head_manifest(_ref(registry_plain, "ua/app:1"))
    log = registry_plain.log_file.read_text(encoding="utf-8", errors="replace")
    assert re.search(r'useragent="lamina/[^"]* kaniko-ci"', log)
