"""A layer body cut mid-stream is resumed (issue 12, item 13): with
``--image-download-retry`` a dropped blob transfer continues with a ``Range`` request from
the first byte not received (or restarts when the server ignores ranges), a bounded number
of times, and the digest is verified over everything. Through the fault-injecting proxy in
front of the real registry, for both the download path and the streaming path."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.errors import ImageFormatError, RegistryError
from lamina.oci import Platform, Reference
from lamina.registry import RegistryClient, RegistryOptions
from tests.conftest import PushImage
from tests.support.faulty_proxy import Fault, FaultyProxy
from tests.support.registry import LayoutImage, RegistryServer

pytestmark = pytest.mark.registry

AMD64 = Platform.parse("linux/amd64")
BIG = os.urandom(3 * 1024 * 1024)  # random: the gzip layer stays ~3 MiB


@pytest.fixture
def proxy(registry_plain: RegistryServer) -> Iterator[FaultyProxy]:
    with FaultyProxy(registry_plain.base_url) as p:
        yield p


@pytest.fixture
def source(registry_plain: RegistryServer, push_image: PushImage) -> LayoutImage:
    return push_image(registry_plain, "resume/src:1", layer_files=[{"big.bin": BIG}])


def _client(**opts: Any) -> RegistryClient:
    opts.setdefault("retry_backoff", 0.01)
    return RegistryClient(RegistryOptions(**opts), docker_config_dir=None)


def _layer_path(source: LayoutImage) -> str:
    return f"/blobs/{source.layer_digests[0]}$"


def _gets(proxy: FaultyProxy, source: LayoutImage) -> list[str | None]:
    """The Range header of each GET of the layer blob, in order."""
    return [
        rng
        for (method, path), rng in zip(proxy.requests, proxy.ranges, strict=True)
        if method == "GET" and path.endswith(source.layer_digests[0])
    ]


def _read_streamed(client: RegistryClient, proxy: FaultyProxy) -> bytes:
    image = client.pull(Reference.parse(f"{proxy.host}/resume/src:1"), platform=AMD64)
    image.config()
    with image.layers()[0].uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member)
            if data is not None:
                return data.read()
    raise AssertionError("no file in the layer")


def test_download_resumes_with_a_range_request(
    proxy: FaultyProxy, source: LayoutImage, tmp_path: Path
) -> None:
    cut = 1_000_000
    with _client(image_download_retry=1) as client:
        image = client.pull(Reference.parse(f"{proxy.host}/resume/src:1"), platform=AMD64)
        image.config()
        proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="cut", cut_at=cut))
        files = client.download_layers(image, tmp_path / "blobs", parallel=1)
    path = files[image.layers()[0].digest()]
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == source.layer_digests[0]
    ranges = _gets(proxy, source)
    assert ranges[0] is None
    assert ranges[1] is not None
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= cut  # resumed from what had arrived, not restarted


def test_streamed_layer_resumes_mid_body(proxy: FaultyProxy, source: LayoutImage) -> None:
    proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="cut", cut_at=700_000))
    with _client(image_download_retry=2) as client:
        assert _read_streamed(client, proxy) == BIG
    assert len(_gets(proxy, source)) == 2
    proxy.clear()
    proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="cut", cut_at=700_000))
    with _client() as client, pytest.raises(RegistryError, match="connection dropped"):
        _read_streamed(client, proxy)  # no retry asked for: the cut is an error


def test_a_server_without_ranges_restarts_the_blob(proxy: FaultyProxy, source: LayoutImage) -> None:
    proxy.ignore_ranges = True  # the registry answers 200 with the whole blob
    proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="cut", cut_at=900_000))
    with _client(image_download_retry=1) as client:
        assert _read_streamed(client, proxy) == BIG
    ranges = _gets(proxy, source)
    assert len(ranges) == 2
    assert ranges[1] is not None


def test_resumed_bytes_are_verified(proxy: FaultyProxy, source: LayoutImage) -> None:
    proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="cut", cut_at=500_000))
    proxy.add_fault(Fault(path=_layer_path(source), method="GET", action="corrupt"))
    with _client(image_download_retry=3) as client, pytest.raises(ImageFormatError):
        _read_streamed(client, proxy)


def test_resumptions_are_bounded(proxy: FaultyProxy, source: LayoutImage, tmp_path: Path) -> None:
    proxy.add_fault(
        Fault(path=_layer_path(source), method="GET", action="cut", cut_at=200_000, times=-1)
    )
    with _client(image_download_retry=2) as client, pytest.raises(RegistryError):
        _read_streamed(client, proxy)
    assert len(_gets(proxy, source)) == 3  # the first GET and two resumptions
