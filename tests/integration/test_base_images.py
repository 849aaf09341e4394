"""The base-image fixtures produce images that independent tools accept."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.images import BuiltLayout
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


def _inspect(server: RegistryServer, ref: str, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        ["skopeo", "inspect", *server.skopeo_args(), *extra, f"docker://{ref}"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def test_busybox_image(
    busybox_image: str, busybox_layout: BuiltLayout, registry_plain: RegistryServer
) -> None:
    info = _inspect(registry_plain, busybox_image)
    assert info["Digest"] == busybox_layout.manifest_digest
    assert info["Os"] == "linux"
    assert info["Architecture"] == "amd64"
    assert len(info["Layers"]) == 1  # type: ignore[arg-type]
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            *registry_plain.skopeo_args(),
            f"docker://{busybox_image.replace(':latest', ':docker-v2s2')}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            *registry_plain.skopeo_args(),
            f"docker://{busybox_image.replace(':latest', ':index')}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_busybox_layout_is_reproducible(
    busybox_layout: BuiltLayout, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.support.images import build_busybox_layout

    again = build_busybox_layout(tmp_path_factory.mktemp("busybox-again"))
    assert again.manifest_digest == busybox_layout.manifest_digest


def test_busybox_layout_accepted_by_umoci(busybox_layout: BuiltLayout) -> None:
    proc = subprocess.run(
        ["umoci", "stat", "--image", f"{busybox_layout.layout}:{busybox_layout.tag}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_debian_image(debian_image: str, registry_plain: RegistryServer) -> None:
    info = _inspect(registry_plain, debian_image)
    assert info["Os"] == "linux"
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in info["Env"]  # type: ignore[operator]
