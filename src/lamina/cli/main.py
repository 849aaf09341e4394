"""Entry points: ``lamina``, ``executor`` (kaniko's executor) and ``warmer`` (kaniko's warmer).

This module is the only reader of ``sys.argv`` and ``os.environ`` and the only
place that prints or chooses an exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import lamina
from lamina.builder.options import default_kaniko_dir
from lamina.cli._argv import split_own_path
from lamina.cli._flags import FlagSpec, ParsedFlags, parse_flags, render_flag_help
from lamina.cli._logging import configure_logging
from lamina.cli._options import (
    ExecutorConfig,
    LogOptions,
    WarmConfig,
    executor_config,
    warm_config,
)
from lamina.cli._specs import BUILD_FLAGS, WARM_FLAGS
from lamina.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    BuildStepError,
    LaminaError,
    NotSupportedError,
    RegistryError,
    UsageError,
)

if TYPE_CHECKING:
    from lamina.oci import Platform, Reference

if TYPE_CHECKING:
    from lamina.cache import LayerCache
    from lamina.registry import RegistryClient

__all__ = ["executor_main", "main", "run", "warmer_main"]

log = logging.getLogger("lamina")

#: flags whose behaviour is not implemented yet: giving one is an error, never ignored
UNSUPPORTED_BUILD_FLAGS: dict[str, str] = {
    "force-build-metadata": "metadata-only instructions never produce layers yet",
    "image-fs-extract-retry": "base layers are extracted once; a failure ends the build",
}


LAMINA_USAGE = """\
lamina: a daemonless, unprivileged container image builder (kaniko compatible)

Usage:
  lamina build [flags]     build an image from a Dockerfile (same flags as kaniko's executor)
  lamina warm [flags]      fill the base-image cache (same flags as kaniko's warmer)
  lamina copy SRC DST      copy an image between docker://, oci: and docker-archive: locations
  lamina inspect REF       print an image's digest, manifest, config and layers as JSON
  lamina version           print the version

The 'executor' and 'warmer' commands are kaniko-compatible aliases of
'lamina build' and 'lamina warm'. Run 'lamina COMMAND --help' for the flags.
"""


def _help_text(command: str, specs: Sequence[FlagSpec], what: str) -> str:
    return f"{what}\n\nUsage:\n  {command} [flags]\n\nFlags:\n{render_flag_help(specs)}\n"


def _wants_help(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help", "-help"):
            return True
    return False


def _render_error(err: LaminaError, log_options: LogOptions, stream: TextIO) -> None:
    # the Dockerfile line shown may hold a URL's user-info (ADD http://user:pw@…)
    from lamina.context._urls import redact_url

    if log_options.format == "json":
        msg = redact_url(str(err))
        doc: dict[str, object] = {"level": "error", "code": err.code, "msg": msg}
        if err.hint:
            doc["hint"] = err.hint
        stream.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        stream.write(redact_url(err.render()) + "\n")


def _pre_log_options(argv: Sequence[str]) -> LogOptions:
    """Best-effort look at the logging flags before full parsing (for early errors)."""
    verbosity, fmt = "info", "color"
    args = list(argv)
    for i, arg in enumerate(args):
        for name in ("--verbosity", "-v", "--log-format"):
            value: str | None = None
            if arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            elif arg == name and i + 1 < len(args):
                value = args[i + 1]
            if value is None:
                continue
            if name == "--log-format":
                fmt = value.lower()
            else:
                verbosity = value.lower()
    return LogOptions(verbosity=verbosity, format=fmt)


#: the exit status after SIGTERM (what a shell reports for a process it killed)
EXIT_TERMINATED = 128 + signal.SIGTERM


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as SIGINT raises ``KeyboardInterrupt``.

    A subclass, so every clean-up that runs for Ctrl-C (the sandbox stopped,
    secrets and the build directory deleted) runs for SIGTERM too, which is
    what Kubernetes and CI runners send.
    """


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`_Terminated` (once: a second
    SIGTERM during the clean-up is ignored, so the clean-up finishes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, _frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_code(err: LaminaError, *, run_status: bool) -> int:
    """The exit code for ``err``: its category's, or (``executor``, as kaniko's) the failed
    RUN's own status."""
    if run_status and isinstance(err, BuildStepError) and err.status is not None:
        return err.status
    return err.exit_code


def _guarded(
    body: Callable[[], int], argv: Sequence[str], stderr: TextIO, *, run_status: bool = False
) -> int:
    early = _pre_log_options(argv)
    try:
        with _sigterm_interrupts():
            return body()
    except LaminaError as err:
        if early.verbosity in ("debug", "trace"):
            traceback.print_exc(file=stderr)
        _render_error(err, early, stderr)
        return _exit_code(err, run_status=run_status)
    except _Terminated:
        stderr.write("error: terminated\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug in lamina: say so, show the traceback only when asked
        if early.verbosity in ("debug", "trace"):
            traceback.print_exc(file=stderr)
        stderr.write(
            f"error: internal error: {type(exc).__name__}: {exc}\n"
            "hint: this is a bug in lamina; rerun with --verbosity=debug for the traceback "
            "and report it\n"
        )
        return EXIT_FAILURE


def _note_own_path(own_path: str | None) -> None:
    if own_path is not None:
        log.debug("ignoring the first argument %s: it is this program's own path", own_path)


def _configure(log_options: LogOptions, warnings: Sequence[str]) -> None:
    configure_logging(log_options.verbosity, log_options.format, log_options.timestamp)
    for warning in warnings:
        log.warning(warning)


#: kaniko tuning flags whose job lamina always does its own way: accepted (pipelines pass
#: them), and the user is told at info level that they change nothing
INEFFECTIVE_BUILD_FLAGS: dict[str, str] = {
    "use-new-run": "lamina always takes a RUN's changes from an overlay upper directory or a "
    "stat index, which is what the flag switched kaniko to",
    "compressed-caching": "lamina streams every layer, so memory never depends on it; cached "
    "layers are the image's own compressed blobs",
}


def _check_unsupported(parsed: ParsedFlags) -> None:
    for flag, hint in UNSUPPORTED_BUILD_FLAGS.items():
        if flag in parsed.given:
            raise NotSupportedError(f"--{flag}", hint=hint)
    for flag, why in INEFFECTIVE_BUILD_FLAGS.items():
        if flag in parsed.given:
            log.info("--%s has no effect: %s", flag, why)


def _default_kaniko_dir(config: ExecutorConfig, env: Mapping[str, str]) -> ExecutorConfig:
    """``--kaniko-dir`` / ``KANIKO_DIR`` when given, ``/kaniko`` in the executor image,
    else the system's temporary directory (each build makes its own ``lamina-*`` dir there)."""
    if "kaniko-dir" in config.given or env.get("KANIKO_DIR"):
        return config
    build = dataclasses.replace(config.build, kaniko_dir=default_kaniko_dir())
    return dataclasses.replace(config, build=build)


def _open_layer_cache(config: ExecutorConfig, client: RegistryClient) -> LayerCache | None:
    """kaniko's cache flags → the layer cache the builder uses (None: ``--cache`` is off)."""
    from lamina.cache import open_layer_cache
    from lamina.oci import Reference

    cache = config.cache
    if not cache.enabled:
        return None
    try:
        destinations = [Reference.parse(d) for d in config.output.destinations]
    except LaminaError as exc:
        raise UsageError(f"--destination: {exc.message}", hint=exc.hint) from exc
    return open_layer_cache(
        enabled=True,
        cache_repo=cache.repo,
        cache_dir=cache.dir,
        cache_dir_explicit="cache-dir" in config.given,
        ttl=cache.ttl,
        no_push_cache=cache.no_push_cache,
        destinations=destinations,
        registry_client=client,
        work_dir=config.build.kaniko_dir,
        log=log,
    )


def _build(config: ExecutorConfig, env: Mapping[str, str]) -> int:
    from lamina.builder import build_and_output
    from lamina.registry import RegistryClient, default_docker_config

    config = _default_kaniko_dir(config, env)
    log.info("lamina %s: building %s", lamina.__version__, config.build.dockerfile)
    with RegistryClient(config.registry, docker_config_dir=default_docker_config(env)) as client:
        layer_cache = _open_layer_cache(config, client)
        try:
            result = build_and_output(
                config.build,
                config.cache,
                config.output,
                registry=client,
                runner=None,
                log=log,
                layer_cache=layer_cache,
                stdin=sys.stdin.buffer if config.build.context == "tar://stdin" else None,
            )
        finally:
            if layer_cache is not None:
                layer_cache.close()  # idempotent; the build closes it when it got that far
    del result  # the builder logs the digest; outputs are written by build_and_output
    return 0


def build_command(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    if _wants_help(argv):
        sys.stdout.write(
            _help_text(command, BUILD_FLAGS, "Build a container image from a Dockerfile.")
        )
        return 0
    argv, own_path = split_own_path(argv, "executor", sys.argv[0])
    parsed = parse_flags(argv, BUILD_FLAGS, command=command)
    config = executor_config(parsed, env)
    _configure(config.log, config.warnings)
    _note_own_path(own_path)
    _check_unsupported(parsed)
    return _build(config, env)


def warm_command(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    if _wants_help(argv):
        sys.stdout.write(_help_text(command, WARM_FLAGS, "Fill the base-image cache."))
        return 0
    argv, own_path = split_own_path(argv, "warmer", sys.argv[0])
    parsed = parse_flags(argv, WARM_FLAGS, command=command)
    config = warm_config(parsed, env)
    _configure(config.log, config.warnings)
    _note_own_path(own_path)
    return _warm(config, env)


def _warm_targets(config: WarmConfig) -> list[tuple[Reference, Platform]]:
    """``--image`` values, then the FROM images of ``--dockerfile`` (stages and scratch
    skipped, ``--build-arg`` expanded), each with the platform to cache, without repeats."""
    from lamina.builder import make_plan
    from lamina.oci import Platform, Reference

    default = Platform.parse(config.platform) if config.platform else Platform.host()
    named: list[tuple[str, Platform]] = [(image, default) for image in config.images]
    if config.dockerfile:
        path = Path(config.dockerfile)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"--dockerfile={path}: cannot read it: {exc.strerror or exc}",
                hint="give the path of an existing Dockerfile",
            ) from exc
        plan = make_plan(
            text,
            filename=str(path),
            build_args=dict(config.build_args),
            build_platform=str(default),
            target_platform=str(default),
            skip_unused_stages=False,
        )
        for stage in plan.stages:
            if stage.base_stage is None and not stage.is_scratch:
                platform = Platform.parse(stage.platform) if stage.platform else default
                named.append((stage.base, platform))
    out: list[tuple[Reference, Platform]] = []
    for text_ref, platform in named:
        try:
            ref = Reference.parse(text_ref)
        except LaminaError as exc:
            raise UsageError(
                f"cannot warm {text_ref!r}: {exc.message}",
                hint="give image references such as debian:bookworm or registry:5000/app:1",
            ) from None
        if (ref, platform) not in out:
            out.append((ref, platform))
    return out


def _warm(config: WarmConfig, env: Mapping[str, str]) -> int:
    from datetime import timedelta

    from lamina.cache import BaseImageCache, warm_base_images
    from lamina.registry import RegistryClient, default_docker_config

    targets = _warm_targets(config)
    cache = BaseImageCache(config.cache_dir, timedelta(seconds=config.cache_ttl_seconds), log)
    with RegistryClient(config.registry, docker_config_dir=default_docker_config(env)) as client:
        results = warm_base_images(client, targets, cache, force=config.force, log=log)
    if results and all(r.outcome == "failed" for r in results):
        raise RegistryError(
            "failed to warm any of the given images: "
            + "; ".join(f"{r.ref}: {r.error}" for r in results),
            hint="check the image names, the registry options and the credentials",
        )
    return 0


def version_command(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    sys.stdout.write(f"lamina {lamina.__version__}\n")
    return 0


Command = Callable[[Sequence[str], Mapping[str, str], str], int]


def _copy(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    from lamina.cli._images import copy_command

    return copy_command(argv, env, command)


def _inspect(argv: Sequence[str], env: Mapping[str, str], command: str) -> int:
    from lamina.cli._images import inspect_command

    return inspect_command(argv, env, command)


_SUBCOMMANDS: dict[str, Command] = {
    "build": build_command,
    "copy": _copy,
    "inspect": _inspect,
    "warm": warm_command,
    "version": version_command,
}


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, *, prog: str = "lamina") -> int:
    """Run a command line (without the program name); returns the exit code."""
    environ: Mapping[str, str] = dict(os.environ) if env is None else env
    args = list(argv)

    def body() -> int:
        if prog == "executor":
            if args[:1] == ["version"]:
                return version_command(args[1:], environ, "executor version")
            return build_command(args, environ, "executor")
        if prog == "warmer":
            return warm_command(args, environ, "warmer")
        if not args or args[0] in ("-h", "--help", "help"):
            sys.stdout.write(LAMINA_USAGE)
            return 0 if args else 2
        if args[0] in ("--version", "-V"):
            return version_command(args[1:], environ, "lamina version")
        name = args[0]
        handler = _SUBCOMMANDS.get(name)
        if handler is None:
            from lamina.errors import UsageError

            raise UsageError(
                f'unknown command "{name}" for "lamina"',
                hint="commands: " + ", ".join(sorted(_SUBCOMMANDS)),
            )
        return handler(args[1:], environ, f"lamina {name}")

    return _guarded(body, args, sys.stderr, run_status=prog == "executor")


def _exit(code: int) -> NoReturn:
    """Leave the process as soon as the command is done.

    By now every output is written and closed, the cache's writes are finished and
    the build directory is gone; what is left is the interpreter's teardown (freeing
    every module and object, joining idle pool threads), tens of milliseconds that a
    cached build would otherwise spend after its work. So the streams and log
    handlers are flushed here and the process ends with ``os._exit``. Exiting through
    ``sys.exit`` instead is available for tools that need ``atexit`` hooks (coverage,
    profilers): set ``LAMINA_SLOW_EXIT=1``.
    """
    if os.environ.get("LAMINA_SLOW_EXIT") == "1":
        sys.stdout.flush()
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what CPython returns when flushing at exit fails
    logging.shutdown()
    os._exit(code)


def main() -> NoReturn:
    _exit(run(sys.argv[1:]))


def executor_main() -> NoReturn:
    _exit(run(sys.argv[1:], prog="executor"))


def warmer_main() -> NoReturn:
    _exit(run(sys.argv[1:], prog="warmer"))
