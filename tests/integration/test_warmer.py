"""``lamina warm`` / ``warmer`` end to end against a real registry, and BaseImageCache."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from lamina.cache import BaseImageCache
from lamina.errors import ImageFormatError
from lamina.oci import Digest, Platform, Reference
from lamina.oci.docker_archive import DockerArchive
from lamina.registry import RegistryClient, RegistryOptions
from tests.conftest import PushImage
from tests.support.registry import RegistryServer, skopeo

pytestmark = pytest.mark.registry

TTL = timedelta(hours=336)


def lamina(*args: str, prog: str = "lamina") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lamina", *args]
    if prog == "warmer":
        cmd = [sys.executable, "-c", "from lamina.cli import warmer_main; warmer_main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def _remote_digest(server: RegistryServer, repo_tag: str) -> Digest:
    with RegistryClient(RegistryOptions(), docker_config_dir=None) as client:
        image = client.pull(
            Reference.parse(f"{server.host}/{repo_tag}"), platform=Platform.parse("linux/amd64")
        )
        return image.digest()


def _files(image_layers: list[bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for blob in image_layers:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for m in tar:
                f = tar.extractfile(m)
                if f is not None:
                    out[m.name] = f.read()
    return out


def test_warm_image_then_lookup(
    registry_plain: RegistryServer, push_image: PushImage, tmp_path: Path
) -> None:
    push_image(registry_plain, "warm/app:1", layer_files=[{"a.txt": b"A\n"}, {"b.txt": b"B\n"}])
    digest = _remote_digest(registry_plain, "warm/app:1")
    cache_dir = tmp_path / "cache"
    proc = lamina(
        "warm",
        f"--image={registry_plain.host}/warm/app:1",
        f"--cache-dir={cache_dir}",
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
    )
    assert proc.returncode == 0, proc.stderr
    tarball = cache_dir / str(digest)
    assert tarball.is_file()
    assert (cache_dir / f"{digest}.json").is_file()
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]
    assert DockerArchive(tarball).entries[0].repo_tags == (f"{registry_plain.host}/warm/app:1",)
    # a docker-save tarball other tools read
    plain_name = tmp_path / "warmed.tar"  # skopeo reads ':' in a path as a tag separator
    plain_name.symlink_to(tarball)
    info = json.loads(skopeo("inspect", f"docker-archive:{plain_name}"))
    assert len(info["Layers"]) == 2

    cache = BaseImageCache(cache_dir, TTL)
    image = cache.lookup(digest)
    assert image is not None
    assert image.digest() == digest
    with RegistryClient(RegistryOptions(), docker_config_dir=None) as client:
        remote = client.pull(
            Reference.parse(f"{registry_plain.host}/warm/app:1"),
            platform=Platform.parse("linux/amd64"),
        )
        assert [lyr.digest() for lyr in image.layers()] == [lyr.digest() for lyr in remote.layers()]
        assert image.raw_config() == remote.raw_config()
    blobs = []
    for layer in image.layers():
        with layer.uncompressed() as f:
            blobs.append(f.read())
    assert _files(blobs) == {"a.txt": b"A\n", "b.txt": b"B\n"}

    # already cached and fresh: skipped (the tarball is not rewritten) ...
    old = time.time() - 600
    os.utime(tarball, (old, old))
    again = lamina(
        "warm",
        f"--image={registry_plain.host}/warm/app:1",
        f"--cache-dir={cache_dir}",
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
        "-v",
        "info",
    )
    assert again.returncode == 0, again.stderr
    assert "already cached" in again.stderr
    assert tarball.stat().st_mtime == pytest.approx(old)
    # ... unless --force (kaniko's warmer binary name too)
    forced = lamina(
        "-i",
        f"{registry_plain.host}/warm/app:1",
        "-c",
        str(cache_dir),
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
        "--force",
        prog="warmer",
    )
    assert forced.returncode == 0, forced.stderr
    assert tarball.stat().st_mtime > old + 300

    # TTL: a stale entry is not used and is re-warmed
    assert BaseImageCache(cache_dir, timedelta(seconds=1)).lookup(digest) is not None
    os.utime(tarball, (old, old))
    assert BaseImageCache(cache_dir, timedelta(seconds=60)).lookup(digest) is None
    stale = lamina(
        "warm",
        f"--image={registry_plain.host}/warm/app:1",
        f"--cache-dir={cache_dir}",
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
        "--cache-ttl=1m",
    )
    assert stale.returncode == 0, stale.stderr
    assert tarball.stat().st_mtime > old + 300


def test_warm_dockerfile_froms_with_build_args(
    registry_plain: RegistryServer, push_image: PushImage, tmp_path: Path
) -> None:
    push_image(registry_plain, "warm/df:2", layer_files=[{"df.txt": b"df\n"}])
    digest = _remote_digest(registry_plain, "warm/df:2")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE\n"
        "FROM ${BASE} AS first\n"
        "RUN true\n"
        "FROM first\n"
        "FROM scratch\n"
        "COPY --from=first /df.txt /\n"
    )
    cache_dir = tmp_path / "cache"
    proc = lamina(
        "warm",
        f"--dockerfile={dockerfile}",
        f"--build-arg=BASE={registry_plain.host}/warm/df:2",
        f"--cache-dir={cache_dir}",
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cache_dir.iterdir()) == [str(digest), f"{digest}.json"]


def test_warm_failures(
    registry_plain: RegistryServer, push_image: PushImage, tmp_path: Path
) -> None:
    push_image(registry_plain, "warm/ok:1")
    missing = f"{registry_plain.host}/warm/missing:1"
    flags = [f"--cache-dir={tmp_path / 'c'}", f"--insecure-registry={registry_plain.host}"]
    all_bad = lamina("warm", f"--image={missing}", *flags)
    assert all_bad.returncode != 0
    assert "failed to warm any of the given images" in all_bad.stderr
    assert "Traceback" not in all_bad.stderr
    some_bad = lamina(
        "warm", f"--image={missing}", f"--image={registry_plain.host}/warm/ok:1", *flags
    )
    assert some_bad.returncode == 0, some_bad.stderr
    assert f"warming {missing} failed" in some_bad.stderr
    nothing = lamina("warm", f"--cache-dir={tmp_path / 'c'}")
    assert nothing.returncode != 0
    assert "at least one image" in nothing.stderr


def test_corrupted_warm_entries(
    registry_plain: RegistryServer,
    push_image: PushImage,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    push_image(registry_plain, "warm/bad:1", layer_files=[{"x.txt": b"x" * 4096}])
    digest = _remote_digest(registry_plain, "warm/bad:1")
    cache_dir = tmp_path / "cache"
    proc = lamina(
        "warm",
        f"--image={registry_plain.host}/warm/bad:1",
        f"--cache-dir={cache_dir}",
        f"--insecure-registry={registry_plain.host}",
        "--customPlatform=linux/amd64",
    )
    assert proc.returncode == 0, proc.stderr
    manifest = cache_dir / f"{digest}.json"
    good = manifest.read_bytes()
    manifest.write_bytes(good + b" ")
    with caplog.at_level(logging.WARNING):
        assert BaseImageCache(cache_dir, TTL).lookup(digest) is None
    assert "unusable" in caplog.text
    manifest.write_bytes(good)
    # a flipped byte inside a layer blob: the image is returned, reading the layer fails
    tarball = cache_dir / str(digest)
    image = BaseImageCache(cache_dir, TTL).lookup(digest)
    assert image is not None
    layer = image.layers()[0]
    with layer.compressed() as f:
        blob = f.read()
    data = bytearray(tarball.read_bytes())
    at = data.find(blob)
    assert at > 0
    data[at + len(blob) // 2] ^= 0xFF
    tarball.write_bytes(bytes(data))
    image = BaseImageCache(cache_dir, TTL).lookup(digest)
    assert image is not None
    with pytest.raises(ImageFormatError, match="digest"), image.layers()[0].compressed() as f:
        f.read()
    tarball.write_bytes(b"not a tarball")
    assert BaseImageCache(cache_dir, TTL).lookup(digest) is None
    (cache_dir / str(digest)).unlink()
    assert BaseImageCache(cache_dir, TTL).lookup(digest) is None
