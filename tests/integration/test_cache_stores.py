"""Layer cache back ends against a real registry and real OCI layouts (skopeo checks)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lamina.cache import (
    BackgroundCache,
    CorruptedCacheError,
    DirLayerCache,
    KeyInputs,
    LazyLayer,
    OCILayoutLayerCache,
    RegistryLayerCache,
    cache_key,
    fetch_all,
    open_layer_cache,
)
from lamina.oci import Reference
from lamina.registry import RegistryClient, RegistryOptions
from tests.conftest import PushImage
from tests.support.registry import RegistryServer, free_port, skopeo
from tests.unit.oci.helpers import drain, make_layer

pytestmark = pytest.mark.registry

LOG = logging.getLogger("test.cachestores")
TTL = timedelta(hours=336)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now


def _inputs(instruction: str = "RUN make") -> KeyInputs:
    return KeyInputs(
        parent="sha256:" + "e" * 64,
        instruction=instruction,
        platform="linux/amd64",
        args={"V": "1"},
    )


def _client(server: RegistryServer, tmp_path: Path, *, creds: bool = True) -> RegistryClient:
    cfg = None
    if creds:
        cfg = tmp_path / "docker-config"
        server.write_docker_config(cfg)
    return RegistryClient(RegistryOptions(retry_backoff=0.01), docker_config_dir=cfg)


def _layer(tmp_path: Path, data: bytes = b"cached bytes\n" * 100) -> Any:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    return make_layer(src, {"out/built.txt": data})


def _cache(
    server: RegistryServer, client: RegistryClient, tmp_path: Path, repo: str, clock: Clock
) -> RegistryLayerCache:
    ref = Reference.parse(f"{server.host}/{repo}", default_tag=None)
    return RegistryLayerCache(ref, client, TTL, LOG, tmp_path / "work", clock=clock)


def _blob_data_file(server: RegistryServer, hex_: str) -> Path:
    return server.data_dir / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def test_registry_round_trip_kaniko_layout(registry_plain: RegistryServer, tmp_path: Path) -> None:
    layer = _layer(tmp_path)
    inputs, empty = _inputs(), _inputs("RUN true")
    key, empty_key = cache_key(inputs), cache_key(empty)
    clock = Clock()
    with _client(registry_plain, tmp_path) as client:
        cache = _cache(registry_plain, client, tmp_path, "app/cache", clock)
        assert cache.lookup(key).reason == "no entry"
        cache.store(key, layer, inputs, slot="0/1")
        cache.store(empty_key, None, empty, slot="0/2")
        found = cache.lookup(key)
        assert found.hit is not None
        hit = found.hit.layer
        assert hit is not None
        assert (hit.digest(), hit.diff_id(), hit.media_type()) == (
            layer.digest(),
            layer.diff_id(),
            layer.media_type(),
        )
        with hit.compressed() as f:
            assert drain(f) == layer.size()
        assert found.hit.inputs == inputs
        assert found.hit.created == clock.now
        none = cache.lookup(empty_key).hit
        assert none is not None
        assert none.layer is None
        cache.close()
        assert not list((tmp_path / "work").iterdir())
        # a fresh cache (another build) reads the slot's inputs from the registry
        assert _cache(registry_plain, client, tmp_path, "app/cache", clock).previous("0/1") == (
            inputs
        )
    info = json.loads(
        skopeo("inspect", "--tls-verify=false", f"docker://{registry_plain.host}/app/cache:{key}")
    )
    assert info["Layers"] == [str(layer.digest())]
    assert info["Labels"]["dev.lamina.cache.key"] == key
    config = json.loads(
        skopeo(
            "inspect",
            "--config",
            "--tls-verify=false",
            f"docker://{registry_plain.host}/app/cache:{key}",
        )
    )
    assert config["created"] == clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_registry_ttl_expiry(registry_plain: RegistryServer, tmp_path: Path) -> None:
    inputs = _inputs("RUN ttl")
    clock = Clock()
    with _client(registry_plain, tmp_path) as client:
        cache = _cache(registry_plain, client, tmp_path, "ttl/cache", clock)
        cache.store(cache_key(inputs), _layer(tmp_path), inputs, slot="s")
        clock.now += TTL + timedelta(seconds=1)
        miss = cache.lookup(cache_key(inputs))
    assert miss.hit is None
    assert miss.reason.startswith("expired (written ")
    assert miss.reason.endswith(", ttl 336h)")


def test_registry_corrupted_blob_is_found_when_the_lazy_hit_is_read(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    layer = _layer(tmp_path, b"corrupt me\n" * 500)
    inputs = _inputs("RUN corrupt")
    key = cache_key(inputs)
    with _client(registry_plain, tmp_path) as client:
        cache = _cache(registry_plain, client, tmp_path, "corrupt/cache", Clock())
        cache.store(key, layer, inputs, slot="s")
        data_file = _blob_data_file(registry_plain, layer.digest().hex)
        data = bytearray(data_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        data_file.write_bytes(bytes(data))
        found = cache.lookup(key)  # the lookup reads manifest and config only
        assert found.hit is not None
        lazy = found.hit.layer
        assert isinstance(lazy, LazyLayer)
        assert lazy.digest() == layer.digest()
        for _ in range(2):  # the failure is remembered, not downloaded again
            with pytest.raises(CorruptedCacheError) as info:
                fetch_all([lazy])
            assert info.value.keys == (key,)
            assert "digest" in info.value.message
        cache.close()


def test_registry_lazy_hit_is_downloaded_once(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    layer = _layer(tmp_path, b"lazy\n" * 500)
    inputs = _inputs("RUN lazy")
    key = cache_key(inputs)
    with _client(registry_plain, tmp_path) as client:
        cache = _cache(registry_plain, client, tmp_path, "lazy/cache", Clock())
        cache.store(key, layer, inputs, slot="s")
        found = cache.lookup(key)
        assert found.hit is not None
        lazy = found.hit.layer
        assert isinstance(lazy, LazyLayer)
        assert not lazy.fetched
        assert lazy.source_repository == "lazy/cache"
        with lazy.compressed() as f:
            assert f.read() == layer.path.read_bytes()
        assert lazy.fetched
        data_file = _blob_data_file(registry_plain, layer.digest().hex)
        original = data_file.read_bytes()
        try:
            data_file.write_bytes(b"x" * len(original))  # later reads use the local file
            with lazy.uncompressed() as f, layer.uncompressed() as want:
                assert f.read() == want.read()
        finally:
            data_file.write_bytes(original)
        cache.close()


def test_registry_wrong_shape_is_a_warned_miss(
    registry_plain: RegistryServer,
    tmp_path: Path,
    push_image: PushImage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = cache_key(_inputs("RUN shape"))
    push_image(registry_plain, f"shape/cache:{key}", layer_files=[{"a": b"1"}, {"b": b"2"}])
    with _client(registry_plain, tmp_path) as client:
        cache = _cache(registry_plain, client, tmp_path, "shape/cache", Clock())
        with caplog.at_level(logging.WARNING, logger="test.cachestores"):
            miss = cache.lookup(key)
    assert miss.hit is None
    assert miss.reason == "wrong shape: 2 layers, a cache entry has at most one"
    assert "wrong shape" in caplog.text


def test_unreachable_repo_is_a_warned_miss_and_writes_only_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = f"127.0.0.1:{free_port()}"
    inputs = _inputs("RUN nowhere")
    with RegistryClient(RegistryOptions(retry_backoff=0.01), docker_config_dir=None) as client:
        ref = Reference.parse(f"{host}/app/cache", default_tag=None)
        cache = BackgroundCache(RegistryLayerCache(ref, client, TTL, LOG, tmp_path / "w"), LOG)
        with caplog.at_level(logging.WARNING, logger="test.cachestores"):
            miss = cache.lookup(cache_key(inputs))
            cache.store(cache_key(inputs), _layer(tmp_path), inputs, slot="s")
            cache.close()
    assert miss.hit is None
    assert miss.reason.startswith("unreachable: ")
    assert cache.failed == 1
    assert caplog.text.count("no layer cache lookups in this build") == 1
    later = cache.lookup(cache_key(_inputs("RUN later")))
    assert later.hit is None
    assert later.reason.endswith("(not asked again)")
    assert "storing key" in caplog.text
    assert "1 of 1 cache write(s) failed" in caplog.text


def test_read_only_repo_wrong_credentials(
    registry_htpasswd: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = _inputs("RUN denied")
    cfg = tmp_path / "wrong"
    cfg.mkdir()
    (cfg / "config.json").write_text(
        json.dumps({"auths": {registry_htpasswd.host: {"auth": "bGFtaW5hOm5vcGU="}}})
    )
    with RegistryClient(RegistryOptions(retry_backoff=0.01), docker_config_dir=cfg) as client:
        ref = Reference.parse(f"{registry_htpasswd.host}/app/cache", default_tag=None)
        cache = BackgroundCache(RegistryLayerCache(ref, client, TTL, LOG, tmp_path / "w"), LOG)
        with caplog.at_level(logging.WARNING, logger="test.cachestores"):
            miss = cache.lookup(cache_key(inputs))
            cache.store(cache_key(inputs), _layer(tmp_path), inputs, slot="s")
            cache.close()
    assert miss.hit is None
    assert miss.reason.startswith("access denied: ")
    assert cache.failed == 1


def test_htpasswd_with_credentials_round_trip(
    registry_htpasswd: RegistryServer, tmp_path: Path
) -> None:
    inputs = _inputs("RUN auth")
    layer = _layer(tmp_path)
    with _client(registry_htpasswd, tmp_path) as client:
        cache = _cache(registry_htpasswd, client, tmp_path, "auth/cache", Clock())
        cache.store(cache_key(inputs), layer, inputs, slot="s")
        hit = cache.lookup(cache_key(inputs)).hit
        assert hit is not None
        assert hit.layer is not None
        assert hit.layer.digest() == layer.digest()
        cache.close()


# ---------------------------------------------------------------- OCI layout
def test_oci_layout_round_trip_and_corruption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layer = _layer(tmp_path)
    inputs = _inputs("RUN oci")
    key = cache_key(inputs)
    path = tmp_path / "layout"
    clock = Clock()
    cache = OCILayoutLayerCache(path, TTL, LOG, clock=clock)
    assert cache.lookup(key).reason == "no entry"
    cache.store(key, layer, inputs, slot="s")
    cache.store(cache_key(_inputs("RUN none")), None, _inputs("RUN none"), slot="t")
    found = cache.lookup(key)
    assert found.hit is not None
    assert found.hit.layer is not None
    assert found.hit.layer.digest() == layer.digest()
    assert found.hit.inputs == inputs
    assert cache.previous("s") == inputs
    none = cache.lookup(cache_key(_inputs("RUN none"))).hit
    assert none is not None
    assert none.layer is None
    info = json.loads(skopeo("inspect", f"oci:{path}:{key}"))
    assert info["Layers"] == [str(layer.digest())]

    blob = path / "blobs/sha256" / layer.digest().hex
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="test.cachestores"):
        miss = cache.lookup(key)
    assert miss.hit is None
    assert miss.reason.startswith("corrupted: ")
    assert "treated as a miss" in caplog.text
    # storing again repairs the blob
    cache.store(key, layer, inputs, slot="s")
    assert cache.lookup(key).hit is not None
    clock.now += TTL + timedelta(seconds=1)
    assert cache.lookup(key).reason.startswith("expired")


# ---------------------------------------------------------------- composite
def test_composite_writes_remote_hits_through_to_the_dir(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    layer = _layer(tmp_path)
    inputs = _inputs("RUN composite")
    key = cache_key(inputs)
    dest = Reference.parse(f"{registry_plain.host}/team/app:v1")
    with _client(registry_plain, tmp_path) as client:

        def opened(cache_dir: Path | None, no_push: bool = False) -> Any:
            return open_layer_cache(
                enabled=True,
                cache_repo="",
                cache_dir=cache_dir,
                cache_dir_explicit=cache_dir is not None,
                ttl=TTL,
                no_push_cache=no_push,
                destinations=[dest],
                registry_client=client,
                work_dir=tmp_path / "work",
                log=LOG,
            )

        remote_only = opened(None)
        assert remote_only.description == f"registry {registry_plain.host}/team/app/cache"
        remote_only.store(key, layer, inputs, slot="s")
        both = opened(tmp_path / "cachedir")
        hit = both.lookup(key).hit
        assert hit is not None
        assert hit.source == remote_only.description
        local = DirLayerCache(tmp_path / "cachedir", TTL, LOG)
        # written through once the build reads the layer (never for an unread hit)
        assert local.lookup(key).hit is None
        assert isinstance(hit.layer, LazyLayer)
        fetch_all([hit.layer])
        again = local.lookup(key).hit
        assert again is not None
        assert again.layer is not None
        assert again.layer.digest() == layer.digest()
        # --no-push-cache: lookups only on the registry, the dir still gets written
        other = _inputs("RUN no-push")
        ro = opened(tmp_path / "cachedir", no_push=True)
        ro.store(cache_key(other), None, other, slot="n")
        assert local.lookup(cache_key(other)).hit is not None
        assert remote_only.lookup(cache_key(other)).reason == "no entry"
        for c in (remote_only, both, ro):
            c.close()


def test_background_writes_share_the_client_with_lookups(
    registry_plain: RegistryServer, tmp_path: Path
) -> None:
    inputs = [_inputs(f"RUN step {i}") for i in range(6)]
    layers = []
    for i in range(6):
        d = tmp_path / f"l{i}"
        d.mkdir()
        layers.append(make_layer(d, {f"f{i}": bytes([i]) * 20_000}))
    with _client(registry_plain, tmp_path) as client:
        inner = _cache(registry_plain, client, tmp_path, "bg/cache", Clock())
        bg = BackgroundCache(inner, LOG, max_pending=2)
        for i, (inp, layer) in enumerate(zip(inputs, layers, strict=True)):
            bg.store(cache_key(inp), layer, inp, slot=f"s{i}")
            assert bg.lookup(cache_key(_inputs("RUN never"))).reason == "no entry"
        bg.close()
        assert (bg.stored, bg.failed) == (6, 0)
        again = _cache(registry_plain, client, tmp_path, "bg/cache", Clock())
        for inp, layer in zip(inputs, layers, strict=True):
            hit = again.lookup(cache_key(inp)).hit
            assert hit is not None
            assert hit.layer is not None
            assert hit.layer.digest() == layer.digest()
        again.close()
