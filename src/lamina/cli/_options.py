"""Flags + environment → option records, with kaniko's validation rules."""

from __future__ import annotations

import csv
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.builder.options import (
    BuildOptions,
    CacheOptions,
    GitOptions,
    OutputOptions,
    SecretSource,
    SSHSource,
)
from lamina.cli._flags import ParsedFlags, extend_key_values, parse_bool
from lamina.errors import ContextError, NotSupportedError, UsageError
from lamina.registry import RegistryOptions

__all__ = [
    "ExecutorConfig",
    "LogOptions",
    "WarmConfig",
    "executor_config",
    "parse_secrets",
    "parse_ssh",
    "registry_options",
    "resolve_build_args",
    "warm_config",
]

DEFAULT_KANIKO_DIR = "/kaniko"
_PLATFORM = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?$")
_URL = re.compile(r"^https?://")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogOptions:
    verbosity: str = "info"
    format: str = "color"
    timestamp: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorConfig:
    build: BuildOptions
    cache: CacheOptions
    output: OutputOptions
    registry: RegistryOptions
    log: LogOptions
    #: canonical names of the flags given explicitly
    given: frozenset[str]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmConfig:
    images: tuple[str, ...]
    cache_dir: Path
    force: bool
    cache_ttl_seconds: float
    dockerfile: str
    build_args: tuple[tuple[str, str], ...]
    platform: str
    registry: RegistryOptions
    log: LogOptions
    given: frozenset[str]
    warnings: tuple[str, ...] = ()


def resolve_build_args(raw: list[str], env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` pairs; a bare ``KEY`` takes its value from the environment (kaniko)."""
    out: list[tuple[str, str]] = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(
                f'invalid argument "{item}" for --build-arg: empty name',
                hint="write --build-arg NAME=VALUE, or a bare NAME to take it from the environment",
            )
        out.append((key, value if sep else env.get(key, "")))
    return tuple(out)


def _labels(raw: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(
                f'invalid argument "{item}" for --label: expected KEY=VALUE',
                hint="write --label KEY=VALUE, once per label",
            )
        out.append((key, value))
    return tuple(out)


_SECRET_HINT = "write --secret id=NAME,src=FILE or --secret id=NAME,env=VARIABLE"


def _secret(item: str, env: Mapping[str, str]) -> SecretSource:
    """One ``--secret`` (docker buildx / osscontainertools kaniko syntax)."""

    def bad(why: str, hint: str = _SECRET_HINT) -> UsageError:
        return UsageError(f'invalid argument "{item}" for --secret: {why}', hint=hint)

    try:
        fields = next(csv.reader([item]), [])
    except csv.Error as exc:
        raise bad(f"invalid CSV: {exc}") from None
    kind = ""
    sid = ""
    src: str | None = None
    var: str | None = None
    for fld in fields:
        key, sep, value = fld.partition("=")
        key = key.strip().lower()
        if not sep:
            raise bad(f"field {fld!r} must be a key=value pair")
        if key == "type":
            if value not in ("file", "env"):
                raise bad(f"unsupported secret type {value!r}", "type is file or env")
            kind = value
        elif key == "id":
            sid = value
        elif key in ("src", "source"):
            src = value
        elif key == "env":
            var = value
        else:
            raise bad(f"unexpected key {key!r}", "keys: id, src (or source), env, type")
    if not sid:
        raise bad("the secret id is missing")
    if src is not None and var is not None:
        raise bad("give either src= or env=, not both")
    if kind == "env" or (not kind and var is not None):
        name = var or src or sid
        raw = env.get(name)
        return SecretSource(
            id=sid,
            env=name,
            value=None if raw is None else raw.encode("utf-8", "surrogateescape"),
        )
    if var is not None:
        raise bad("env= needs type=env (or no type)")
    if not kind and src is None and sid in env:
        # buildx: without src/env/type, an environment variable named like the id wins
        return SecretSource(id=sid, env=sid, value=env[sid].encode("utf-8", "surrogateescape"))
    path = Path(src or sid)
    if not path.is_file():
        raise bad(
            f"the secret file {path} does not exist or is not a file",
            "src= names a file on this machine (relative to the current directory)",
        )
    return SecretSource(id=sid, path=path.absolute())


def parse_secrets(raw: list[str], env: Mapping[str, str]) -> tuple[SecretSource, ...]:
    """The ``--secret`` flags; a later flag with the same id replaces an earlier one."""
    out: dict[str, SecretSource] = {}
    for item in raw:
        src = _secret(item, env)
        out.pop(src.id, None)
        out[src.id] = src
    return tuple(out.values())


def _ssh(item: str, env: Mapping[str, str]) -> SSHSource:
    sid, sep, paths = item.partition("=")
    if not sid:
        raise UsageError(
            f'invalid argument "{item}" for --ssh: the id is missing',
            hint="write --ssh default (uses $SSH_AUTH_SOCK) or --ssh ID=/path/to/agent.sock",
        )
    if not sep:
        sock = env.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise UsageError(
                f'invalid argument "{item}" for --ssh: SSH_AUTH_SOCK is not set',
                hint=f"start ssh-agent, or give the socket: --ssh {sid}=/path/to/agent.sock",
            )
        parts = [sock]
    else:
        parts = [p for p in paths.split(",") if p]
    if len(parts) != 1:
        raise NotSupportedError(
            f"--ssh {item}: several agent sockets or keys for one id",
            hint="give one ssh-agent socket per id",
        )
    path = Path(parts[0])
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(
            f'invalid argument "{item}" for --ssh: {path}: {exc.strerror or exc}',
            hint="give the path of a running ssh-agent's socket",
        ) from None
    if not stat.S_ISSOCK(mode):
        raise NotSupportedError(
            f"--ssh {sid}={path}: SSH key files (only ssh-agent sockets are supported)",
            hint=f"load the key into an agent (eval $(ssh-agent); ssh-add {path}) "
            f"and pass --ssh {sid}=$SSH_AUTH_SOCK",
        )
    return SSHSource(id=sid, socket=path.absolute())


def parse_ssh(raw: list[str], env: Mapping[str, str]) -> tuple[SSHSource, ...]:
    """The ``--ssh`` flags; a later flag with the same id replaces an earlier one."""
    out: dict[str, SSHSource] = {}
    for item in raw:
        src = _ssh(item, env)
        out.pop(src.id, None)
        out[src.id] = src
    return tuple(out.values())


def _git(raw: Mapping[str, str], env: Mapping[str, str]) -> GitOptions:
    known = {"branch", "single-branch", "recurse-submodules", "insecure-skip-tls"}
    for key in raw:
        if key not in known:
            raise UsageError(
                f'invalid argument "{key}={raw[key]}" for --git: unknown key "{key}"',
                hint="keys: " + ", ".join(sorted(known)),
            )

    def flag(key: str) -> bool:
        return parse_bool(raw[key], flag="git") if key in raw else False

    return GitOptions(
        branch=raw.get("branch", ""),
        single_branch=flag("single-branch"),
        recurse_submodules=flag("recurse-submodules"),
        insecure_skip_tls=flag("insecure-skip-tls"),
        # kaniko: any other GIT_PULL_METHOD means https
        pull_method="http" if env.get("GIT_PULL_METHOD") == "http" else "https",
        username=env.get("GIT_USERNAME", ""),
        password=env.get("GIT_PASSWORD", ""),
        token=env.get("GIT_TOKEN", ""),
    )


def registry_options(v: Mapping[str, Any], env: Mapping[str, str]) -> RegistryOptions:
    """The registry client's options from the transport flags and kaniko's env variables."""
    mirrors = list(v["registry_mirror"])
    if env.get("KANIKO_REGISTRY_MIRROR"):
        mirrors.extend(m for m in env["KANIKO_REGISTRY_MIRROR"].split(",") if m)
    maps: dict[str, list[str]] = {k: list(x) for k, x in v["registry_map"].items()}
    if env.get("KANIKO_REGISTRY_MAP"):
        extend_key_values(
            maps,
            env["KANIKO_REGISTRY_MAP"],
            lambda part: UsageError(
                f'invalid KANIKO_REGISTRY_MAP entry "{part}": expected ORIG=MIRROR',
                hint="separate entries with ';', e.g. index.docker.io=mirror.local",
            ),
        )
    client_certs: dict[str, tuple[Path, Path]] = {}
    for reg, cert in v["registry_client_cert"].items():
        cert_path, sep, key_path = cert.partition(",")
        if not sep or not cert_path or not key_path or "," in key_path:
            raise UsageError(
                f'invalid argument "{reg}={cert}" for --registry-client-cert',
                hint="expected REGISTRY=/path/to/cert.pem,/path/to/key.pem",
            )
        client_certs[reg] = (Path(cert_path), Path(key_path))
    return RegistryOptions(
        insecure=v.get("insecure", False),
        insecure_pull=v["insecure_pull"],
        insecure_registries=frozenset(v["insecure_registry"]),
        skip_tls_verify=v.get("skip_tls_verify", False),
        skip_tls_verify_pull=v["skip_tls_verify_pull"],
        skip_tls_verify_registries=frozenset(v["skip_tls_verify_registry"]),
        registry_certificates={k: Path(p) for k, p in v["registry_certificate"].items()},
        registry_client_certs=client_certs,
        registry_maps={k: tuple(x) for k, x in maps.items()},
        registry_mirrors=tuple(mirrors),
        skip_default_registry_fallback=v["skip_default_registry_fallback"],
        image_download_retry=v.get("image_download_retry", 0),
        push_retry=v.get("push_retry", 0),
        push_ignore_immutable_tag_errors=v.get("push_ignore_immutable_tag_errors", False),
        user_agent_suffix=env.get("UPSTREAM_CLIENT_TYPE", ""),
    )


def _log(v: Mapping[str, Any]) -> LogOptions:
    return LogOptions(
        verbosity=v["verbosity"].lower(),
        format=v["log_format"].lower(),
        timestamp=v["log_timestamp"],
    )


def _check_platform(value: str) -> None:
    if value and not _PLATFORM.match(value):
        raise UsageError(
            f'invalid platform "{value}"',
            hint="write os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm64/v8",
        )


def _resolve_dockerfile(dockerfile: str, context: str, *, remote: bool) -> str:
    """kaniko's rule: the path as given, else relative to the context (a remote
    context's Dockerfile is looked up by the builder once the context is unpacked)."""
    if _URL.match(dockerfile):
        return dockerfile
    if remote:
        given = Path(dockerfile)
        return str(given.resolve()) if given.is_file() else dockerfile
    candidates = [Path(dockerfile)]
    if not os.path.isabs(dockerfile):
        candidates.append(Path(context) / dockerfile)
    for cand in candidates:
        if os.path.lexists(cand) and not cand.is_dir():
            # not resolved here: the builder follows symlinks inside the context only
            return os.path.abspath(cand)
    raise UsageError(
        "error resolving dockerfile path: please provide a valid path to a Dockerfile "
        "within the build context with --dockerfile",
        hint=f"looked for {' and '.join(str(c) for c in candidates)}",
    )


def _resolve_context(
    context: str, bucket: str, sub_path: str, warnings: list[str]
) -> tuple[str, str]:
    """The context and sub-path for the builder (kaniko's ``resolveSourceContext``): a
    local directory resolved now, a remote context checked (the builder fetches it)."""
    if not context and not bucket:
        raise UsageError(
            "error resolving source context: please specify a path to the build context "
            "with the --context flag or a bucket with the --bucket flag",
            hint="e.g. --context=/workspace",
        )
    if bucket:  # kaniko's hidden flag: a GCS bucket's context.tar.gz (another scheme as given)
        context = bucket if "://" in bucket else f"gs://{bucket}"
    if "://" not in context:
        if sub_path:  # kaniko returns before it applies the sub-path to a plain directory
            warnings.append(
                f"--context-sub-path {sub_path} is ignored: it applies to dir:// and remote "
                "contexts only (as in kaniko); point --context at the subdirectory"
            )
        return _local_dir(context), ""
    from lamina.context import check_sub_path, context_subdir, parse_context

    spec = parse_context(context)
    if spec.remote:
        if spec.kind == "tar" and not Path(spec.location).is_file():
            raise ContextError(
                f"error resolving source context: the archive {spec.location} does not exist",
                hint="write --context tar:///absolute/path/ctx.tar.gz",
            )
        return context, check_sub_path(sub_path) if sub_path else ""
    return str(
        context_subdir(Path(_local_dir(_dir_url_path(spec.location, warnings))), sub_path)
    ), ""


def _dir_url_path(location: str, warnings: list[str]) -> str:
    """The directory of ``dir://LOCATION``. kaniko resolves a relative one against the
    working directory, but its own examples write ``dir://workspace`` for ``/workspace``
    (where the working directory is ``/workspace`` itself): when the relative directory
    does not exist and the absolute one does, the absolute one is meant."""
    path = Path(location)
    absolute = Path("/", location)
    if not path.is_absolute() and not path.is_dir() and absolute.is_dir():
        warnings.append(
            f"--context dir://{location}: there is no directory {location} in "
            f"{Path.cwd()}; using {absolute} (write dir://{absolute} to say so)"
        )
        return str(absolute)
    return location


def _local_dir(context: str) -> str:
    path = Path(context)
    if not path.is_dir():
        raise UsageError(
            f"error resolving source context: {context} is not a directory",
            hint="--context must name the directory holding the build context",
        )
    return str(path.resolve())


def executor_config(parsed: ParsedFlags, env: Mapping[str, str]) -> ExecutorConfig:
    """Validate the executor's flags as kaniko does and build the option records."""
    v = parsed.values
    given = parsed.given
    log = _log(v)

    platform = v["custom_platform"]
    _check_platform(platform)

    no_push = v["no_push"]
    if "no-push" not in given and env.get("KANIKO_NO_PUSH"):
        no_push = parse_bool(env["KANIKO_NO_PUSH"], flag="no-push (KANIKO_NO_PUSH)")

    kaniko_dir = v["kaniko_dir"]
    if "kaniko-dir" not in given and env.get("KANIKO_DIR"):
        kaniko_dir = env["KANIKO_DIR"]

    destinations = tuple(v["destination"])
    if not no_push and not destinations:
        raise UsageError(
            "you must provide --destination, or use --no-push",
            hint="e.g. --destination=registry.example.com/app:1.0, or --no-push with --tar-path",
        )
    if v["cache"] and not v["cache_repo"] and no_push:
        raise UsageError(
            "cache flags invalid: if using cache with --no-push, specify cache repo with "
            "--cache-repo",
            hint="e.g. --cache-repo=registry.example.com/app/cache "
            "or --cache-repo=oci:/cache/layout",
        )
    warnings = list(parsed.warnings)
    context, sub_path = _resolve_context(v["context"], v["bucket"], v["context_sub_path"], warnings)
    dockerfile = _resolve_dockerfile(v["dockerfile"], context, remote="://" in context)
    if v["git"] and not context.lower().startswith("git://"):
        warnings.append("--git is ignored: it applies to git:// contexts only (as in kaniko)")
    if not destinations and v["image_name_with_digest_file"]:
        raise UsageError(
            "you must provide --destination if setting ImageNameDigestFile",
            hint="--image-name-with-digest-file lists the pushed destinations",
        )
    if not destinations and v["image_name_tag_with_digest_file"]:
        raise UsageError(
            "you must provide --destination if setting ImageNameTagDigestFile",
            hint="--image-name-tag-with-digest-file lists the pushed destinations",
        )
    epoch: int | None = None
    if env.get("SOURCE_DATE_EPOCH"):
        try:
            epoch = int(env["SOURCE_DATE_EPOCH"])
        except ValueError:
            raise UsageError(
                f'invalid SOURCE_DATE_EPOCH "{env["SOURCE_DATE_EPOCH"]}"',
                hint="SOURCE_DATE_EPOCH must be a whole number of seconds since 1970",
            ) from None

    build = BuildOptions(
        dockerfile=dockerfile,
        context=context,
        context_sub_path=sub_path,
        target=v["target"],
        build_args=resolve_build_args(v["build_arg"], env),
        labels=_labels(v["label"]),
        platform=platform,
        snapshot_mode=v["snapshot_mode"].lower(),
        single_snapshot=v["single_snapshot"],
        reproducible=v["reproducible"],
        source_date_epoch=epoch,
        isolation=v["isolation"].lower(),
        force=v["force"],
        kaniko_dir=Path(kaniko_dir),
        ignore_var_run=v["ignore_var_run"],
        ignore_paths=tuple(v["ignore_path"]),
        container_env=tuple(
            (k, env[k]) for k in ("container", "KUBERNETES_SERVICE_HOST") if env.get(k)
        ),
        skip_unused_stages=v["skip_unused_stages"],
        force_build_metadata=v["force_build_metadata"],
        image_fs_extract_retry=v["image_fs_extract_retry"],
        cleanup=v["cleanup"],
        git=_git(v["git"], env),
        cache_mount_dir=Path(v["cache_mount_dir"]) if v["cache_mount_dir"] else None,
        secrets=parse_secrets(v["secret"], env),
        ssh=parse_ssh(v["ssh"], env),
        allow=tuple(sorted({item.strip() for raw in v["allow"] for item in raw.split(",")})),
    )
    cache = CacheOptions(
        enabled=v["cache"],
        repo=v["cache_repo"],
        dir=Path(v["cache_dir"]),
        ttl=v["cache_ttl"],
        copy_layers=v["cache_copy_layers"],
        run_layers=v["cache_run_layers"],
        no_push_cache=v["no_push_cache"],
        report=Path(v["cache_report"]) if v["cache_report"] else None,
    )
    output = OutputOptions(
        destinations=destinations,
        no_push=no_push,
        tar_path=v["tar_path"],
        oci_layout_path=v["oci_layout_path"],
        digest_file=v["digest_file"],
        image_name_with_digest_file=v["image_name_with_digest_file"],
        image_name_tag_with_digest_file=v["image_name_tag_with_digest_file"],
        compression=v["compression"].lower(),
        compression_level=v["compression_level"],
        skip_push_permission_check=v["skip_push_permission_check"],
    )
    return ExecutorConfig(
        build=build,
        cache=cache,
        output=output,
        registry=registry_options(v, env),
        log=log,
        given=frozenset(given),
        warnings=tuple(warnings),
    )


def warm_config(parsed: ParsedFlags, env: Mapping[str, str]) -> WarmConfig:
    v = parsed.values
    platform = v["customPlatform"]
    _check_platform(platform)
    if not v["image"] and not v["dockerfile"]:
        raise UsageError(
            "you must select at least one image to cache or a dockerfile to parse",
            hint="use --image=REF (repeatable) or --dockerfile=PATH",
        )
    return WarmConfig(
        images=tuple(v["image"]),
        cache_dir=Path(v["cache_dir"]),
        force=v["force"],
        cache_ttl_seconds=v["cache_ttl"].total_seconds(),
        dockerfile=v["dockerfile"],
        build_args=resolve_build_args(v["build_arg"], env),
        platform=platform,
        registry=registry_options(v, env),
        log=_log(v),
        given=frozenset(parsed.given),
        warnings=tuple(parsed.warnings),
    )
