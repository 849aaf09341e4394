"""The transport and push options the CLI hands to the registry client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = ["RegistryOptions"]


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryOptions:
    """Everything that changes how lamina talks to registries (kaniko's flags).

    Registry keys are host names as written in references (``host[:port]``);
    ``index.docker.io`` and ``docker.io`` are the same registry.
    """

    #: ``--insecure``: push over plain HTTP
    insecure: bool = False
    #: ``--insecure-pull``: pull over plain HTTP
    insecure_pull: bool = False
    #: ``--insecure-registry``: plain HTTP for these registries, push and pull
    insecure_registries: frozenset[str] = frozenset()
    #: ``--skip-tls-verify``: no TLS verification anywhere (push and pull)
    skip_tls_verify: bool = False
    #: ``--skip-tls-verify-pull``: no TLS verification for pulls
    skip_tls_verify_pull: bool = False
    #: ``--skip-tls-verify-registry``
    skip_tls_verify_registries: frozenset[str] = frozenset()
    #: ``--registry-certificate reg=/ca.pem``: extra CA per registry
    registry_certificates: Mapping[str, Path] = field(default_factory=_empty)  # type: ignore[arg-type]
    #: ``--registry-client-cert reg=/cert,/key``: mTLS per registry
    registry_client_certs: Mapping[str, tuple[Path, Path]] = field(default_factory=_empty)  # type: ignore[arg-type]
    #: ``--registry-map orig=mirror[/prefix]``: pull mirrors tried in order per registry
    registry_maps: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)  # type: ignore[arg-type]
    #: ``--registry-mirror``: pull mirrors for Docker Hub
    registry_mirrors: tuple[str, ...] = ()
    #: ``--skip-default-registry-fallback``: fail when no mirror has the image
    skip_default_registry_fallback: bool = False
    #: ``--image-download-retry``: retries of a pull operation
    image_download_retry: int = 0
    #: ``--push-retry``: retries of a push operation
    push_retry: int = 0
    #: ``--push-ignore-immutable-tag-errors``
    push_ignore_immutable_tag_errors: bool = False
    #: appended to ``lamina/<version>`` in the User-Agent (kaniko: UPSTREAM_CLIENT_TYPE)
    user_agent_suffix: str = ""
    #: first retry delay in seconds; doubles on each retry (Retry-After wins when larger)
    retry_backoff: float = 1.0
    #: longest single retry delay in seconds
    retry_max_delay: float = 60.0
    #: blobs at least this large are uploaded in chunks (PATCH ... then PUT)
    chunked_upload_threshold: int = 64 * 1024 * 1024
    #: size of one PATCH in a chunked upload
    upload_chunk_size: int = 16 * 1024 * 1024
    #: layers downloaded / uploaded at the same time
    max_parallel_transfers: int = 4
    #: network timeout (connect / read) in seconds
    timeout: float = 60.0
