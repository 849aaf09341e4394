"""Option records of a build: small, frozen, one per concern.

The CLI turns flags into these; the builder reads them. Registry transport
options live in :mod:`lamina.registry` (``RegistryOptions``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from lamina.context import GitContextOptions

__all__ = [
    "BuildOptions",
    "CacheOptions",
    "GitOptions",
    "OutputOptions",
    "SSHSource",
    "SecretSource",
    "default_kaniko_dir",
]


#: kaniko's ``--git`` keys and ``GIT_*`` variables for a ``git://`` build context (the
#: record the context code takes; one definition, named here for the builder's options)
GitOptions = GitContextOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSource:
    """One ``--secret``: where the value of the build secret ``id`` comes from.

    Either a host file read when a RUN step mounts it (``path``), or a value the
    CLI took from an environment variable (``value``, named by ``env``; None
    when that variable is unset, so the secret counts as missing). The value
    is never part of ``repr``.
    """

    id: str
    path: Path | None = None
    env: str | None = None
    value: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SSHSource:
    """One ``--ssh``: the SSH agent socket forwarded to ``RUN --mount=type=ssh,id=<id>``."""

    id: str
    socket: Path


def default_kaniko_dir() -> Path:
    """``/kaniko`` in the executor image (where it exists), else the temporary directory."""
    kaniko = Path("/kaniko")
    return kaniko if kaniko.is_dir() else Path(tempfile.gettempdir())


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    dockerfile: str
    context: str
    context_sub_path: str = ""
    target: str = ""
    #: ``--build-arg`` in command-line order, bare keys already resolved from the env
    build_args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    #: ``os/arch[/variant]``; empty means the host platform
    platform: str = ""
    snapshot_mode: str = "full"
    single_snapshot: bool = False
    reproducible: bool = False
    #: seconds since the epoch used to clamp timestamps (``SOURCE_DATE_EPOCH``)
    source_date_epoch: int | None = None
    isolation: str = "auto"
    force: bool = False
    #: the build's scratch root: ``/kaniko`` where it exists (the executor image), else the
    #: system's temporary directory — a library default never creates ``/kaniko`` on a host
    kaniko_dir: Path = field(default_factory=default_kaniko_dir)
    #: where ``RUN --mount=type=cache`` contents persist between builds
    #: (None: ``<kaniko_dir>/cache-mounts``); never part of a layer
    cache_mount_dir: Path | None = None
    #: ``--ignore-var-run``/``--ignore-path``: left out of extraction, snapshots and
    #: deletion in ``--isolation=none`` (the other modes build in a private rootfs)
    ignore_var_run: bool = True
    ignore_paths: tuple[str, ...] = ()
    #: the ``container``/``KUBERNETES_SERVICE_HOST`` environment variables, for
    #: telling whether we run in a container (``--isolation=none|auto``)
    container_env: tuple[tuple[str, str], ...] = ()
    skip_unused_stages: bool = True
    force_build_metadata: bool = False
    image_fs_extract_retry: int = 0
    cleanup: bool = False
    git: GitOptions = field(default_factory=GitOptions)
    #: ``--secret``: build secrets by id, for ``RUN --mount=type=secret`` (never in a layer)
    secrets: tuple[SecretSource, ...] = ()
    #: ``--ssh``: SSH agent sockets by id, for ``RUN --mount=type=ssh``
    ssh: tuple[SSHSource, ...] = ()
    #: ``--allow``: entitlements granted to the build (``security.insecure``)
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheOptions:
    enabled: bool = False
    repo: str = ""
    dir: Path = Path("/cache")
    ttl: timedelta = timedelta(hours=336)
    #: lamina caches COPY/ADD by default (kaniko: false, its COPY keys were wrong)
    copy_layers: bool = True
    run_layers: bool = True
    no_push_cache: bool = False
    #: ``--cache-report``: write a JSON record per step here (lamina)
    report: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputOptions:
    destinations: tuple[str, ...] = ()
    no_push: bool = False
    tar_path: str = ""
    oci_layout_path: str = ""
    digest_file: str = ""
    image_name_with_digest_file: str = ""
    image_name_tag_with_digest_file: str = ""
    compression: str = "gzip"
    compression_level: int = -1
    skip_push_permission_check: bool = False
