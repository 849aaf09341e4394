"""The flag tables of ``lamina build`` / ``executor`` and ``lamina warm`` / ``warmer``.

Names, short forms, kinds and defaults follow kaniko v1.24's executor and
warmer so that existing command lines keep working. Help texts are lamina's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from lamina.cli._flags import FlagKind, FlagSpec
from lamina.errors import UsageError

__all__ = [
    "BUILD_FLAGS",
    "COMPRESSIONS",
    "ENTITLEMENTS",
    "IMAGE_FLAGS",
    "ISOLATIONS",
    "LOG_FLAGS",
    "LOG_FORMATS",
    "SNAPSHOT_MODES",
    "VERBOSITY_LEVELS",
    "WARM_FLAGS",
]

B = FlagKind.BOOL
S = FlagKind.STRING
N = FlagKind.INT
D = FlagKind.DURATION
M = FlagKind.MULTI
KV = FlagKind.KEY_VALUE
MKV = FlagKind.MULTI_KEY_VALUE

VERBOSITY_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "color", "json")
SNAPSHOT_MODES = ("full", "redo", "time")
COMPRESSIONS = ("gzip", "zstd")
ISOLATIONS = ("auto", "namespace", "chroot", "none")
#: ``--allow`` entitlements (BuildKit's names)
ENTITLEMENTS = ("security.insecure",)

DEFAULT_CACHE_TTL = timedelta(hours=336)


def one_of(flag: str, choices: tuple[str, ...]) -> Callable[[str], object]:
    def check(value: str) -> object:
        if value.lower() not in choices:
            raise UsageError(
                f'invalid argument "{value}" for --{flag}',
                hint=f"--{flag} must be one of: {', '.join(choices)}",
            )
        return value

    return check


def entitlements(value: str) -> object:
    """``--allow``: one or more comma-separated entitlements, each one we know."""
    for item in value.split(","):
        if item.strip() not in ENTITLEMENTS:
            raise UsageError(
                f'invalid argument "{value}" for --allow: unknown entitlement {item.strip()!r}',
                hint=f"--allow takes: {', '.join(ENTITLEMENTS)}",
            )
    return value


def _f(name: str, kind: FlagKind, help: str, default: object = None, **kw: object) -> FlagSpec:
    return FlagSpec(name=name, kind=kind, help=help, default=default, **kw)  # type: ignore[arg-type]


LOG_FLAGS: tuple[FlagSpec, ...] = (
    _f(
        "verbosity",
        S,
        "Log level: trace, debug, info, warn, error, fatal, panic",
        "info",
        short="v",
        check=one_of("verbosity", VERBOSITY_LEVELS),
    ),
    _f(
        "log-format",
        S,
        "Log format: text, color or json",
        "color",
        check=one_of("log-format", LOG_FORMATS),
    ),
    _f("log-timestamp", B, "Print a timestamp on every log line", False),
)

_REGISTRY_PULL: tuple[FlagSpec, ...] = (
    _f("insecure-pull", B, "Pull from registries over plain HTTP", False),
    _f("skip-tls-verify-pull", B, "Pull without verifying registries' TLS certificates", False),
    _f(
        "insecure-registry",
        M,
        "Use plain HTTP for this registry, push and pull (repeatable)",
    ),
    _f(
        "skip-tls-verify-registry",
        M,
        "Do not verify the TLS certificate of this registry, push and pull (repeatable)",
    ),
    _f(
        "registry-certificate",
        KV,
        "Trust this CA for a registry: REGISTRY=/path/to/ca.pem (repeatable)",
    ),
    _f(
        "registry-client-cert",
        KV,
        "Client certificate for mutual TLS: REGISTRY=/path/cert.pem,/path/key.pem (repeatable)",
    ),
    _f(
        "registry-map",
        MKV,
        "Pull REGISTRY from mirrors instead: ORIG=MIRROR[;ORIG2=MIRROR2] "
        "(repeatable, tried in order)",
    ),
    _f(
        "registry-mirror",
        M,
        "Mirror (pull-through cache) used instead of Docker Hub (repeatable, tried in order)",
    ),
    _f(
        "skip-default-registry-fallback",
        B,
        "Fail instead of falling back to the original registry when no mirror has the image",
        False,
    ),
)

#: the transport flags of commands that push as well as pull
_REGISTRY_PUSH_PULL: tuple[FlagSpec, ...] = (
    _f("insecure", B, "Push over plain HTTP", False),
    _f("skip-tls-verify", B, "Do not verify registries' TLS certificates (push and pull)", False),
    *_REGISTRY_PULL,
    _f("push-retry", N, "Retries of a failed push, with exponential backoff", 0),
    _f(
        "push-ignore-immutable-tag-errors",
        B,
        "Treat a registry's 'tag is immutable' refusal as success",
        False,
    ),
)

BUILD_FLAGS: tuple[FlagSpec, ...] = (
    _f("dockerfile", S, "Path or http(s) URL of the Dockerfile", "Dockerfile", short="f"),
    _f(
        "context",
        S,
        "Build context: a directory (or dir://DIR), tar://PATH.tar.gz, tar://stdin, "
        "https://…/ctx.tar.gz or git://host/org/repo.git[#ref][#commit]",
        "/workspace/",
        short="c",
    ),
    _f("context-sub-path", S, "Subdirectory of a dir:// or remote context to build from", ""),
    _f("bucket", S, "Legacy: GCS bucket holding the context tarball", "", short="b", hidden=True),
    _f("destination", M, "Image reference to push to (repeatable)", short="d"),
    _f(
        "snapshot-mode",
        S,
        "File attributes compared when snapshotting: full, redo or time",
        "full",
        check=one_of("snapshot-mode", SNAPSHOT_MODES),
    ),
    _f("custom-platform", S, "Target platform os/arch[/variant] (default: this host)", ""),
    _f("build-arg", M, "Build argument KEY=VALUE; a bare KEY takes the environment's (repeatable)"),
    _f(
        "secret",
        M,
        "Build secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR][,type=file|env] "
        "(repeatable)",
    ),
    _f(
        "allow",
        M,
        "Entitlement a RUN may ask for: security.insecure (for RUN --security=insecure) "
        "(repeatable)",
        check=entitlements,
    ),
    _f(
        "ssh",
        M,
        "SSH agent for RUN --mount=type=ssh: default|ID[=SOCKET] "
        "(default: $SSH_AUTH_SOCK) (repeatable)",
    ),
    *_REGISTRY_PUSH_PULL,
    _f("image-fs-extract-retry", N, "Retries of a failed base-image extraction", 0),
    _f("image-download-retry", N, "Retries of a failed image download, with backoff", 0),
    _f("kaniko-dir", S, "Working directory of the build (env KANIKO_DIR)", "/kaniko"),
    _f("tar-path", S, "Also write the image as a docker-load tarball here", ""),
    _f("single-snapshot", B, "Take one snapshot at the end of the build (one layer)", False),
    _f("reproducible", B, "Strip timestamps so that the same input gives the same digest", False),
    _f("target", S, "Stage to build (name or index)", ""),
    _f("no-push", B, "Do not push the image (env KANIKO_NO_PUSH)", False),
    _f("no-push-cache", B, "Do not push cache layers", False),
    _f("cache", B, "Use the layer cache", False),
    _f("cache-repo", S, "Repository for cached layers (oci:DIR for a local layout)", ""),
    _f("cache-dir", S, "Local directory of cached base images (see 'lamina warm')", "/cache"),
    _f("cache-ttl", D, "Lifetime of cached layers and base images", DEFAULT_CACHE_TTL),
    _f(
        "cache-mount-dir",
        S,
        "Where RUN --mount=type=cache contents persist between builds "
        "(default: <kaniko-dir>/cache-mounts) (lamina)",
        "",
    ),
    _f("cache-copy-layers", B, "Cache COPY and ADD layers (lamina: on by default)", True),
    _f("cache-run-layers", B, "Cache RUN layers", True),
    _f(
        "cache-report",
        S,
        "Write a JSON report of every step's cache key, hit or miss and reason here (lamina)",
        "",
    ),
    _f(
        "compressed-caching",
        B,
        "Compress cached layers (lamina always streams, so memory is unaffected)",
        True,
    ),
    _f(
        "compression",
        S,
        "Layer compression: gzip or zstd",
        "gzip",
        check=one_of("compression", COMPRESSIONS),
    ),
    _f("compression-level", N, "Compression level (-1: the algorithm's default)", -1),
    _f("digest-file", S, "Write the image digest to this file", ""),
    _f(
        "image-name-with-digest-file",
        S,
        "Write REPO@DIGEST of every destination to this file",
        "",
    ),
    _f(
        "image-name-tag-with-digest-file",
        S,
        "Write REPO:TAG@DIGEST of every destination to this file",
        "",
    ),
    _f("oci-layout-path", S, "Also write the image as an OCI image layout here", ""),
    _f("cleanup", B, "Delete the build's filesystem at the end", False),
    _f(
        "ignore-var-run",
        B,
        "Leave /var/run out of snapshots (matters only with --isolation=none)",
        True,
    ),
    _f(
        "whitelist-var-run",
        B,
        "Deprecated: use --ignore-var-run",
        True,
        deprecated_alias_of="ignore-var-run",
        hidden=True,
    ),
    _f(
        "ignore-path",
        M,
        "Path left out of snapshots, extraction and deletion (repeatable; --isolation=none only)",
    ),
    _f("label", M, "Image label KEY=VALUE (repeatable)"),
    _f("skip-unused-stages", B, "Build only the stages the target needs", True),
    _f("use-new-run", B, "kaniko's experimental stat-based RUN detection", False),
    _f(
        "git",
        KV,
        "Git context option, one KEY=VALUE per flag: branch, single-branch, "
        "recurse-submodules, insecure-skip-tls",
    ),
    _f("force-build-metadata", B, "Emit layers for metadata-only instructions too", False),
    _f(
        "skip-push-permission-check",
        B,
        "Skip the check that destinations are writable before building",
        False,
    ),
    _f("force", B, "Allow --isolation=none outside a container", False),
    _f(
        "isolation",
        S,
        "How RUN steps are isolated: auto, namespace, chroot or none (lamina)",
        "auto",
        check=one_of("isolation", ISOLATIONS),
    ),
    *LOG_FLAGS,
    # deprecated camelCase aliases (kaniko warns and maps them)
    _f(
        "snapshotMode",
        S,
        "Deprecated: use --snapshot-mode",
        "",
        deprecated_alias_of="snapshot-mode",
        check=one_of("snapshotMode", SNAPSHOT_MODES),
    ),
    _f(
        "customPlatform",
        S,
        "Deprecated: use --custom-platform",
        "",
        deprecated_alias_of="custom-platform",
    ),
    _f("tarPath", S, "Deprecated: use --tar-path", "", deprecated_alias_of="tar-path"),
)

WARM_FLAGS: tuple[FlagSpec, ...] = (
    _f("image", M, "Image to cache (repeatable)", short="i"),
    _f("cache-dir", S, "Directory of the base-image cache", "/cache", short="c"),
    _f("force", B, "Overwrite images already in the cache", False, short="f"),
    _f("cache-ttl", D, "Lifetime of cached images", DEFAULT_CACHE_TTL),
    _f("dockerfile", S, "Warm the FROM images of this Dockerfile", "", short="d"),
    _f("build-arg", M, "Build argument KEY=VALUE for ARG-parameterised FROM lines (repeatable)"),
    _f("customPlatform", S, "Platform os/arch[/variant] to cache (default: this host)", ""),
    *_REGISTRY_PULL,
    *LOG_FLAGS,
)

#: ``lamina copy`` / ``lamina inspect``: the registry transport flags and logging
IMAGE_FLAGS: tuple[FlagSpec, ...] = (
    *_REGISTRY_PUSH_PULL,
    _f("image-download-retry", N, "Retries of a failed image download, with backoff", 0),
    _f(
        "custom-platform",
        S,
        "Platform os/arch[/variant] to pick from an index (default: this host)",
        "",
    ),
    *LOG_FLAGS,
)
