"""Shared pytest fixtures.

Sections are self-contained; each owner keeps to its own section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

# ============================================================================ registries
# Real Docker distribution registries on loopback (see tests/support/registry.py).
# Session-scoped; tests using them are marked ``@pytest.mark.registry``.
from lamina.registry import RegistryClient, RegistryOptions
from tests.support.registry import (
    LayoutImage,
    RegistryKind,
    RegistryServer,
    push_oci_image,
    start_registry,
)


def _registry_fixture(
    kind: RegistryKind, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    running = start_registry(kind, tmp_path_factory.mktemp(f"registry-{kind}"))
    try:
        yield running.server
    finally:
        running.stop()


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry without auth."""
    yield from _registry_fixture("plain", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Plain-HTTP registry with htpasswd basic auth (``server.username``/``password``)."""
    yield from _registry_fixture("htpasswd", tmp_path_factory)


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """HTTPS registry whose certificate is signed by ``server.ca_cert``."""
    yield from _registry_fixture("tls", tmp_path_factory)


PushImage = Callable[..., LayoutImage]


@pytest.fixture
def client(registry_plain: RegistryServer) -> Iterator[RegistryClient]:
    """A registry client that talks plain HTTP to ``registry_plain`` (no credentials)."""
    c = RegistryClient(
        RegistryOptions(insecure_registries=frozenset({registry_plain.host})),
        docker_config_dir=None,
    )
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def push_image(tmp_path: Path) -> PushImage:
    """``push_image(server, "repo:tag", layer_files=[{"name": b"data"}], ...)`` with skopeo."""
    counter = iter(range(1_000_000))

    def push(
        server: RegistryServer,
        repo_tag: str,
        *,
        layer_files: Sequence[Mapping[str, bytes]] = ({"hello.txt": b"hello\n"},),
        architecture: str = "amd64",
        labels: Mapping[str, str] | None = None,
    ) -> LayoutImage:
        return push_oci_image(
            server,
            repo_tag,
            tmp_path / f"push-{next(counter)}",
            layer_files=layer_files,
            architecture=architecture,
            labels=labels,
        )

    return push


# ======================================================================== end registries


# =========================================================================== base images
# Base images built locally from Debian packages (see tests/support/images.py), pushed
# with skopeo to the plain registry. Built lazily: only sessions that use them pay.
from tests.support.images import (  # noqa: E402
    BuiltLayout,
    build_busybox_layout,
    build_debian_layout,
    push_layout,
)


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> BuiltLayout:
    """An OCI layout (tag ``busybox``, and ``busybox-index``) of the busybox base image."""
    return build_busybox_layout(tmp_path_factory.mktemp("busybox"))


@pytest.fixture(scope="session")
def busybox_image(busybox_layout: BuiltLayout, registry_plain: RegistryServer) -> str:
    """``HOST/library/busybox:latest`` on the plain registry (OCI manifest)."""
    ref = push_layout(busybox_layout, registry_plain, "library/busybox:latest")
    push_layout(busybox_layout, registry_plain, "library/busybox:docker-v2s2", docker_v2s2=True)
    push_layout(busybox_layout, registry_plain, "library/busybox:index", index=True)
    return ref


@pytest.fixture(scope="session")
def debian_layout(tmp_path_factory: pytest.TempPathFactory) -> BuiltLayout:
    """An OCI layout (tag ``bookworm-slim``) of a debootstrap minbase; the rootfs is cached."""
    return build_debian_layout(tmp_path_factory.mktemp("debian"))


@pytest.fixture(scope="session")
def debian_image(debian_layout: BuiltLayout, registry_plain: RegistryServer) -> str:
    """``HOST/library/debian:bookworm-slim`` on the plain registry."""
    return push_layout(debian_layout, registry_plain, "library/debian:bookworm-slim")


# ======================================================================= end base images


# ===================================================================== executor images
# The three executor images (deploy/executor/build-image.sh), built lazily per variant,
# cached between sessions, loaded into a private podman storage (see
# tests/support/executor_images.py).
from tests.support.executor_images import ExecutorImages, executor_images_session  # noqa: E402


@pytest.fixture(scope="session")
def executor_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExecutorImages]:
    """``executor_images.build_variant("executor"|"debug"|"warmer")`` gives a loaded tag."""
    with executor_images_session(tmp_path_factory.mktemp("executor-images")) as images:
        yield images


# ================================================================= end executor images


# ======================================================================== cloud emulators
# moto (S3, ECR, STS), gcp-storage-emulator, Azurite and the fake token services, with the
# cloud-named registries (see tests/support/cloud.py); started only by the tests using them.
from tests.support.cloud import (  # noqa: E402, F401
    acr_registry,
    azure,
    azurite,
    ecr_proxy,
    ecr_registry,
    gcr,
    gcs,
    google,
    moto,
)

# ==================================================================== end cloud emulators
