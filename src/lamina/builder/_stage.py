"""Building one stage: its state, and one small handler per instruction.

Each handler takes the (expanded) instruction and returns a :class:`StepEffect`
saying what it did: the new runtime config and/or scope, a layer, the history
text. The loop in :meth:`StageBuilder.build` applies the effects in order.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from lamina.builder._cache import (
    CacheSession,
    StepContext,
    StepRecord,
    StepStatus,
    chain_after_layer,
    decide,
)
from lamina.builder._copy import (
    ChmodSpec,
    CopyRequest,
    copy_into,
    parse_chmod,
    resolve_chown,
    resolve_dest,
    resolve_sources,
)
from lamina.builder._fetch import (
    Fetched,
    check_add_sources,
    fetch_url,
    is_git_source,
    redact_url,
)
from lamina.builder._history import (
    BUILDKIT_COMMENT,
    go_list,
    go_quoted_list,
    healthcheck_created_by,
    run_created_by,
)
from lamina.builder._ids import Ownership
from lamina.builder._layers import make_layer
from lamina.builder._plan import BuildPlan, StagePlan
from lamina.builder._runcmd import SANDBOX_PIPES_DIR, check_secret_mounts, heredoc_command
from lamina.builder.options import SecretSource, SSHSource
from lamina.cache import BaseImageCache, cache_key, fetch_all
from lamina.context import ContextSource, LocalContext, has_glob
from lamina.dockerfile import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    Command,
    CopyInstruction,
    EntrypointInstruction,
    EnvInstruction,
    ExecCommand,
    ExposeInstruction,
    FromInstruction,
    HealthcheckInstruction,
    Instruction,
    LabelInstruction,
    MaintainerInstruction,
    Mount,
    OnbuildInstruction,
    PMap,
    RunInstruction,
    ShellCommand,
    ShellInstruction,
    StageScope,
    StopsignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
    expand_instruction,
    instruction_from_node,
    parse,
    parse_dockerignore,
)
from lamina.errors import (
    BuildStepError,
    DockerfileError,
    FilesystemError,
    LaminaError,
    NotSupportedError,
    SourceLocation,
    UsageError,
)
from lamina.fs import BuildDir, IgnoreList, copy_entry, safe_join
from lamina.oci import (
    Addendum,
    ContainerConfig,
    Digest,
    FileLayer,
    History,
    Image,
    Layer,
    Platform,
    Reference,
    append_layers,
    empty_image,
    format_time,
    mediatypes,
    with_config,
)

if TYPE_CHECKING:
    # what only a step that runs needs is imported where it runs: a build whose steps
    # are all cached never loads the sandbox, git or the RUN mount machinery
    from lamina.builder._git import GitCheckout
    from lamina.builder._inplace import InPlace
    from lamina.builder._mounts import CacheLease, CacheStore, InPlaceMounts, UpperCache
    from lamina.builder._snapshots import RunSnapshots
    from lamina.fs import Change, StatIndex
    from lamina.sandbox import MountSpec, Runner, RunResult, RunSpec

__all__ = ["BuildEnv", "ImageSource", "StageBuilder", "StageResult", "StepEffect"]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")
_SIGNALS = frozenset(
    (
        "HUP",
        "INT",
        "QUIT",
        "ILL",
        "TRAP",
        "ABRT",
        "BUS",
        "FPE",
        "KILL",
        "USR1",
        "SEGV",
        "USR2",
        "PIPE",
        "ALRM",
        "TERM",
        "STKFLT",
        "CHLD",
        "CONT",
        "STOP",
        "TSTP",
        "TTIN",
        "TTOU",
        "URG",
        "XCPU",
        "XFSZ",
        "VTALRM",
        "PROF",
        "WINCH",
        "IO",
        "POLL",
        "PWR",
        "SYS",
        "RTMIN",
        "RTMAX",
    )
)


class ImageSource(Protocol):
    """What the builder needs from a registry client (``lamina.registry.RegistryClient``)."""

    def pull(self, ref: Reference, *, platform: Platform) -> Image: ...

    def push(self, image: Image, refs: Sequence[Reference]) -> Digest: ...

    def check_push_permission(self, refs: Sequence[Reference]) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StepEffect:
    """What one instruction did.

    ``created_by`` None means no history entry (ONBUILD); ``layer`` None a
    metadata-only step (``empty_layer: true``); ``config``/``scope``/``author``
    None mean unchanged.
    """

    created_by: str | None
    layer: Layer | None = None
    config: ContainerConfig | None = None
    scope: StageScope | None = None
    author: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResult:
    """A built stage: its image, its rootfs (when materialised) and final scope."""

    index: int
    name: str | None
    image: Image
    rootfs: Path | None
    scope: StageScope = field(repr=False)
    layers_added: int = 0


@dataclass(slots=True, kw_only=True)
class BuildEnv:
    """Build-wide state shared by the stages of one build."""

    plan: BuildPlan
    context: LocalContext
    registry: ImageSource | None
    runner: Runner | None
    isolation: str
    force: bool
    log: logging.Logger
    build_dir: BuildDir
    platform: Platform
    custom_platform: bool
    created: datetime
    clamp_epoch: int | None
    compression: mediatypes.Compression
    compression_level: int | None
    snapshot_mode: str
    labels: tuple[tuple[str, str], ...]
    #: ``--single-snapshot``: the target stage gets one layer, taken at its end
    single_snapshot: bool = False
    results: dict[int, StageResult] = field(default_factory=dict)
    pulled: dict[tuple[str, str], Image] = field(default_factory=dict)
    image_trees: dict[str, Path] = field(default_factory=dict)
    counter: int = 0
    #: RUN --mount=type=cache storage (None: ``cache-mounts`` beside the build dir)
    cache_mount_dir: Path | None = None
    #: ``--secret`` and ``--ssh`` sources for RUN --mount=type=secret|ssh
    secrets: tuple[SecretSource, ...] = ()
    ssh: tuple[SSHSource, ...] = ()
    #: ``ADD <git>``: files get the commit time (BuildKit does when SOURCE_DATE_EPOCH is set)
    git_commit_mtime: bool = False
    #: ``--isolation=none``: every stage builds in this one root (None: private dirs)
    inplace: InPlace | None = None
    #: ``--allow`` entitlements (``security.insecure`` lets RUN --security=insecure run)
    allow: tuple[str, ...] = ()
    #: the layer cache of this build (None: ``--cache`` is off)
    cache: CacheSession | None = None
    #: materialises a built stage's rootfs on first use (stages whose steps all hit)
    stage_rootfs: dict[int, Callable[[], Path]] = field(default_factory=dict)
    #: warmed base images (``lamina warm``; used with ``--cache``)
    base_images: BaseImageCache | None = None
    #: layers of warmed base images by digest: extraction reads them instead of the registry
    warmed_layers: dict[Digest, Layer] = field(default_factory=dict)
    #: the destinations' push-permission check, running meanwhile (None: not asked)
    preflight: Future[None] | None = None

    def await_preflight(self) -> None:
        """Wait for the push-permission check; raises its error (before real work starts)."""
        if self.preflight is not None:
            self.preflight.result()

    def next_id(self) -> int:
        self.counter += 1
        return self.counter

    def get_runner(self) -> Runner:
        if self.runner is None:
            from lamina.sandbox import select_runner  # the first step that runs

            self.runner = select_runner(
                self.isolation,
                force=self.force,
                log=self.log.info,
                debug=self.log.debug,
                scratch=self.build_dir.work,
            )
        return self.runner

    def pull(self, name: str, platform: Platform, location: SourceLocation | None) -> Image:
        key = (name, str(platform))
        if key in self.pulled:
            return self.pulled[key]
        if self.registry is None:
            raise UsageError(
                f"cannot pull {name}: no registry client was given to the builder",
                hint="this is a bug in the caller of lamina.builder.build_image",
                location=location,
            )
        try:
            ref = Reference.parse(name)
        except LaminaError as exc:
            raise DockerfileError(exc.message, hint=exc.hint, location=location) from exc
        self.log.info("pulling %s (%s)", ref, platform)
        image = self.registry.pull(ref, platform=platform)
        self._use_warmed(image)
        self.pulled[key] = image
        return image

    def _use_warmed(self, image: Image) -> None:
        """Read the layers of a base image from the warmed cache when it has it.

        The image keeps its registry layers (so a push can still mount them across
        repositories); only extraction reads the warmed, digest-verified blobs.
        """
        if self.base_images is None:
            return
        warmed = self.base_images.lookup(image.digest())
        if warmed is None:
            return
        self.log.info("using the warmed base image %s", image.digest())
        for layer in warmed.layers():
            self.warmed_layers[layer.digest()] = layer

    def stage_result(self, index: int) -> StageResult | None:
        """A built stage's result, its rootfs materialised if it was never extracted."""
        result = self.results.get(index)
        hook = self.stage_rootfs.pop(index, None)
        if result is not None and result.rootfs is None and hook is not None:
            result = replace(result, rootfs=hook())
            self.results[index] = result
        return result

    def extract(self, image: Image, root: Path, *, ignore: IgnoreList | None = None) -> None:
        """Apply every layer of ``image`` to ``root``, in order (base layers never rewritten).

        Warmed copies of the layers are read where the cache has them; paths on
        ``ignore`` are neither written nor deleted (in-place builds).
        """
        layers = [self.warmed_layers.get(layer.digest(), layer) for layer in image.layers()]
        fetch_all(layers)  # lazy cache hits: download and verify first, in parallel
        self.ownership().extract(layers, root, warn=self.log.warning, ignore=ignore)

    def scan(self, root: Path) -> StatIndex:
        """A stat index of ``root``, leaving out the in-place ignore list."""
        from lamina.fs import StatIndex

        return StatIndex.scan(root, self.inplace.ignore if self.inplace is not None else None)

    def ownership(self) -> Ownership:
        """Where owners come from: host ids as root, the user namespace's map rootless."""
        runner = self.runner
        if runner is None and os.geteuid() != 0:
            runner = self.get_runner()
        ownership = Ownership.of(runner)
        if ownership.rootless and ownership.remove not in self.build_dir.removers:
            self.build_dir.removers.append(ownership.remove)
        return ownership


#: a RUN's own mounts in every mode (BuildKit's too): what a step writes there (a chroot
#: step's ``> /dev/null`` without CAP_MKNOD makes a file) never reaches its layer
RUN_MOUNT_POINTS = ("/dev", "/proc", "/sys")


def _run_ignore(inplace: InPlace | None) -> IgnoreList:
    """What a RUN's rootfs snapshot leaves out: the in-place ignore list and /dev, /proc, /sys."""
    base = inplace.ignore if inplace is not None else IgnoreList()
    return base.with_paths(*RUN_MOUNT_POINTS)


def _config_env_pairs(env: Sequence[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in env:
        k, _, v = item.partition("=")
        out.append((k, v))
    return out


def _argv(command: Command, shell: tuple[str, ...] | None) -> tuple[str, ...]:
    if isinstance(command, ExecCommand):
        return tuple(command.argv)
    return (*(shell or DEFAULT_SHELL), command.text)


def _normalise_port(word: str, location: SourceLocation) -> list[str]:
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise DockerfileError(
            f"invalid proto {proto!r} in EXPOSE {word}",
            hint="use tcp, udp or sctp",
            location=location,
        )
    lo, dash, hi = port.partition("-")
    if not lo.isdigit() or (dash and not hi.isdigit()):
        raise DockerfileError(
            f"invalid port {word!r} in EXPOSE",
            hint="write EXPOSE <port>[/<proto>], e.g. EXPOSE 80/tcp",
            location=location,
        )
    if not dash:
        return [f"{int(lo)}/{proto}"]
    return [f"{p}/{proto}" for p in range(int(lo), int(hi) + 1)]


def _check_signal(sig: str, location: SourceLocation) -> None:
    name = sig.upper().removeprefix("SIG")
    if sig.isdigit() and int(sig) > 0:
        return
    base = name.split("+")[0].split("-")[0]
    if base in _SIGNALS:
        return
    raise DockerfileError(
        f"invalid signal {sig!r} in STOPSIGNAL",
        hint="give a signal name (SIGTERM, KILL) or a positive number",
        location=location,
    )


class _Output:
    """Streams RUN output to the log, one line at a time, with a step prefix."""

    def __init__(self, log: logging.Logger, prefix: str) -> None:
        self.log = log
        self.prefix = prefix
        self.buf = b""

    def __call__(self, chunk: bytes) -> None:
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.log.info("%s %s", self.prefix, line.decode(errors="replace"))
        if len(self.buf) > 65536:
            self.log.info("%s %s", self.prefix, self.buf.decode(errors="replace"))
            self.buf = b""

    def flush(self) -> None:
        if self.buf:
            self.log.info("%s %s", self.prefix, self.buf.decode(errors="replace"))
            self.buf = b""


class StageBuilder:
    """Builds one planned stage in its own rootfs directory."""

    def __init__(self, env: BuildEnv, sp: StagePlan, *, is_target: bool) -> None:
        self.env = env
        self.sp = sp
        self.is_target = is_target
        self.log = env.log
        self.escape = env.plan.dockerfile.escape
        self.rootfs = (
            env.inplace.root
            if env.inplace is not None
            else env.build_dir.path / f"stage-{sp.index}"
        )
        self.fs_ready = False
        self.addenda: list[Addendum] = []
        self.cmd_seen = False
        self.base_image: Image = empty_image()
        self.parent: StageResult | None = None
        self.runtime = ContainerConfig()
        self.author: str | None = None
        self.scope: StageScope | None = None
        self.step_no = 0
        self.single_snapshot = env.single_snapshot and is_target
        self.snapshot_base: StatIndex | None = None
        #: RUN snapshots without an overlay: the stage root's inotify watch, kept between steps
        self.run_snapshots: RunSnapshots | None = None
        #: the running cache key (see lamina.builder._cache)
        self.cache_parent = ""
        #: cached layers appended but not yet applied to the rootfs (in order)
        self.pending: list[Layer] = []
        #: the cache lookahead's dry pass: handlers leave the root and the build alone
        self.dry_run = False

    # ------------------------------------------------------------------ setup

    def _platform(self) -> Platform:
        if self.sp.platform:
            try:
                return Platform.parse(self.sp.platform)
            except LaminaError as exc:
                raise DockerfileError(
                    exc.message, hint=exc.hint, location=self.sp.stage.location
                ) from exc
        return self.env.platform

    def _start(self) -> None:
        sp = self.sp
        location = sp.stage.location
        inherited: StageScope | None = None
        if sp.base_stage is not None:
            self.parent = self.env.results[sp.base_stage]
            self.base_image = self.parent.image
            inherited = self.parent.scope
        elif sp.is_scratch:
            self.base_image = empty_image(self._platform())
        else:
            self.base_image = self.env.pull(sp.base, self._platform(), location)
        cfg = self.base_image.config()
        runtime = cfg.config
        env = list(runtime.env)
        if not any(e.startswith("PATH=") for e in env):
            env.append(DEFAULT_PATH)
        runtime = replace(runtime, env=tuple(env))
        if sp.is_scratch and not runtime.working_dir:
            runtime = replace(runtime, working_dir="/")
        self.runtime = runtime
        self.author = cfg.author
        self.scope = StageScope.start(
            self.env.plan.build_args,
            self.env.plan.meta,
            base_env=_config_env_pairs(runtime.env),
            inherited=inherited,
        )
        if inherited is not None:
            self.scope = self.scope.with_config_env(_config_env_pairs(runtime.env))

    def ensure_fs(self) -> Path:
        """The stage's rootfs, materialised on first use (parent copy or base extraction)."""
        if self.fs_ready:
            return self.rootfs
        self.env.await_preflight()  # no real work for an image that could not be pushed
        if self.env.inplace is not None:
            from lamina.builder._inplace import wipe_root

            self.log.info(
                "stage %s: emptying %s and extracting %s",
                self.sp.display,
                self.rootfs,
                self.sp.base,
            )
            wipe_root(self.env.inplace)
            self.env.extract(self.base_image, self.rootfs, ignore=self.env.inplace.ignore)
            self.fs_ready = True
            return self.rootfs
        try:
            self.rootfs.mkdir(mode=0o755)
        except OSError as exc:
            raise FilesystemError(f"cannot create {self.rootfs}: {exc.strerror}") from exc
        parent = self.parent
        if parent is not None and parent.rootfs is not None:
            self.log.info("stage %s: copying the rootfs of stage %s", self.sp.display, parent.index)
            src = parent.rootfs
            # rootless: in the user namespace, where files of any in-image owner are readable
            self._ownership().run(lambda: self._copy_tree(src, self.rootfs))
        elif not self.sp.is_scratch:
            self.log.info("stage %s: extracting %s", self.sp.display, self.sp.base)
            self.env.extract(self.base_image, self.rootfs)
        self.fs_ready = True
        return self.rootfs

    @staticmethod
    def _copy_tree(src: Path, dst: Path) -> None:
        import subprocess

        proc = subprocess.run(
            ["cp", "-a", "--reflink=auto", f"{src}/.", f"{dst}/"],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise FilesystemError(
                f"cannot copy {src} to {dst}: {proc.stderr.decode(errors='replace').strip()}",
                hint="check free space in the build directory",
            )

    # ------------------------------------------------------------------ loop

    def build(self) -> StageResult:
        try:
            return self._build()
        finally:
            if self.run_snapshots is not None:
                self.run_snapshots.close()

    def _snapshots(self) -> RunSnapshots:
        if self.run_snapshots is None:
            from lamina.builder._snapshots import RunSnapshots

            self.run_snapshots = RunSnapshots(self.log)
        return self.run_snapshots

    def _build(self) -> StageResult:
        self._start()
        assert self.scope is not None
        if self.single_snapshot:
            self.snapshot_base = self.env.scan(self.ensure_fs())
        instructions: list[Instruction] = []
        if self.runtime.on_build:
            instructions.extend(self._triggers(self.runtime.on_build))
            self.runtime = replace(self.runtime, on_build=None)
        instructions.extend(self.sp.stage.instructions)
        if self.env.cache is not None:
            self.cache_parent = self._cache_start()
            self._prefetch(instructions, self.env.cache)
        total = len(instructions)
        for instr in instructions:
            self.step_no += 1
            self.log.info(
                "[stage %s %d/%d] %s",
                self.sp.display,
                self.step_no,
                total,
                redact_url(instr.original) if instr.original else instr.keyword,
            )
            effect = self.step(instr)
            self._apply(effect)
        if self.fs_ready and self.pending:
            self.materialise()
        if self.env.cache is not None:
            self.env.cache.stage_keys[self.sp.index] = self.cache_parent
        if self.is_target and self.env.labels:
            labels = dict(self.runtime.labels)
            labels.update(self.env.labels)
            self.runtime = replace(self.runtime, labels=labels)
        return self._finish()

    def _triggers(self, triggers: Sequence[str]) -> list[Instruction]:
        out: list[Instruction] = []
        text = "\n".join(triggers) + "\n"
        try:
            nodes = parse(text, filename=f"ONBUILD triggers of {self.sp.base}").nodes
            for node in nodes:
                instr = instruction_from_node(node)
                if isinstance(instr, FromInstruction | OnbuildInstruction | MaintainerInstruction):
                    raise DockerfileError(
                        f"{instr.keyword} is not allowed as an ONBUILD trigger",
                        hint="fix the base image's ONBUILD instructions",
                        location=self.sp.stage.location,
                    )
                out.append(instr)
        except DockerfileError as exc:
            raise DockerfileError(
                f"ONBUILD trigger of {self.sp.base}: {exc.message}",
                hint=exc.hint,
                location=self.sp.stage.location,
            ) from exc
        return out

    def _apply(self, effect: StepEffect) -> None:
        if effect.config is not None:
            self.runtime = effect.config
        if effect.scope is not None:
            self.scope = effect.scope
        if effect.author is not None:
            self.author = effect.author
        if effect.created_by is None:
            return
        history = History(
            created=format_time(self.env.created),
            created_by=effect.created_by,
            comment=BUILDKIT_COMMENT,
            empty_layer=effect.layer is None,
        )
        self.addenda.append(Addendum(layer=effect.layer, history=history))

    def _squash(self) -> None:
        """``--single-snapshot``: every change since the base as one layer (kaniko).

        The steps made no layers; the last history entry carries the squashed
        layer (its ``created_by`` is the last instruction, as in kaniko), the
        others are empty. Nothing changed: no layer at all.
        """
        from lamina.fs import diff

        assert self.snapshot_base is not None
        mode = self.env.snapshot_mode
        after = self.env.scan(self.rootfs)
        changes = diff(
            self.snapshot_base,
            after,
            mode=mode if mode in ("full", "redo", "time") else "full",  # type: ignore[arg-type]
        )
        self.single_snapshot = False  # _layer writes layers again
        layer = self._layer(changes, self.rootfs) if changes else None
        addenda = [
            Addendum(layer=None, history=replace(a.history, empty_layer=True)) for a in self.addenda
        ]
        if layer is not None:
            if addenda:
                last = addenda[-1]
                addenda[-1] = Addendum(
                    layer=layer, history=replace(last.history, empty_layer=False)
                )
            else:
                history = History(
                    created=format_time(self.env.created),
                    created_by="single snapshot",
                    comment=BUILDKIT_COMMENT,
                )
                addenda.append(Addendum(layer=layer, history=history))
        self.addenda = addenda

    def _finish(self) -> StageResult:
        if self.snapshot_base is not None:
            self._squash()
        image = append_layers(self.base_image, *self.addenda)
        cfg = image.config()
        assert self.scope is not None
        if self.scope.config_changed:
            self.runtime = replace(self.runtime, env=self.scope.config_env_text)
        if isinstance(self.runtime.labels, PMap):
            self.runtime = replace(self.runtime, labels=dict(self.runtime.labels.items_list()))
        cfg = replace(
            cfg,
            config=self.runtime,
            author=self.author,
            created=format_time(self.env.created),
        )
        if self.env.custom_platform or self.sp.is_scratch:
            plat = self._platform()
            cfg = replace(cfg, os=plat.os, architecture=plat.architecture, variant=plat.variant)
        image = with_config(image, cfg)
        assert self.scope is not None
        return StageResult(
            index=self.sp.index,
            name=self.sp.name,
            image=image,
            # in place, the one root is not the stage's to keep (_build saves a copy)
            rootfs=self.rootfs if self.fs_ready and self.env.inplace is None else None,
            scope=self.scope,
            layers_added=sum(1 for a in self.addenda if a.layer is not None),
        )

    # -------------------------------------------------------------- dispatch

    def step(self, instr: Instruction) -> StepEffect:
        assert self.scope is not None
        if isinstance(instr, ArgInstruction):
            effect = self.do_arg(instr)
            cache = self.env.cache
            if cache is not None:
                self.cache_parent = decide(instr, self._step_context(), cache.options).chain
                cache.record(
                    StepRecord(
                        stage=self.sp.display,
                        step=self.step_no,
                        instruction=instr.original or instr.keyword,
                        key=self.cache_parent,
                        status="metadata",
                        stage_index=self.sp.index,
                    )
                )
            return effect
        expanded = expand_instruction(instr, self.scope.env, escape=self.escape).instruction
        if self.env.cache is not None:
            return self._cached_step(expanded, self.env.cache)
        return self._dispatch(instr, expanded)

    def _dispatch(self, instr: Instruction, expanded: Instruction) -> StepEffect:
        handlers: Mapping[type, Callable[[Instruction], StepEffect]] = {
            EnvInstruction: self.do_env,  # type: ignore[dict-item]
            LabelInstruction: self.do_label,  # type: ignore[dict-item]
            MaintainerInstruction: self.do_maintainer,  # type: ignore[dict-item]
            RunInstruction: self.do_run,  # type: ignore[dict-item]
            CmdInstruction: self.do_cmd,  # type: ignore[dict-item]
            EntrypointInstruction: self.do_entrypoint,  # type: ignore[dict-item]
            ShellInstruction: self.do_shell,  # type: ignore[dict-item]
            CopyInstruction: self.do_copy,  # type: ignore[dict-item]
            AddInstruction: self.do_copy,  # type: ignore[dict-item]
            ExposeInstruction: self.do_expose,  # type: ignore[dict-item]
            VolumeInstruction: self.do_volume,  # type: ignore[dict-item]
            UserInstruction: self.do_user,  # type: ignore[dict-item]
            WorkdirInstruction: self.do_workdir,  # type: ignore[dict-item]
            StopsignalInstruction: self.do_stopsignal,  # type: ignore[dict-item]
            HealthcheckInstruction: self.do_healthcheck,  # type: ignore[dict-item]
            OnbuildInstruction: self.do_onbuild,  # type: ignore[dict-item]
        }
        handler = handlers.get(type(expanded))
        if handler is None:
            raise NotSupportedError(
                f"the {instr.keyword} instruction here",
                location=instr.location,
            )
        return handler(expanded)

    # ------------------------------------------------------------ layer cache

    def materialise(self) -> Path:
        """The rootfs with every pending cached layer applied (extracting it if needed)."""
        if self.pending:
            fetch_all(self.pending)  # lazy cache hits: download and verify first, in parallel
        root = self.ensure_fs()
        pending, self.pending = self.pending, []
        if pending:
            inplace = self.env.inplace
            self.env.ownership().extract(
                pending,
                root,
                warn=self.log.warning,
                ignore=inplace.ignore if inplace is not None else None,
            )
        return root

    def _prefetch(self, instructions: Sequence[Instruction], cache: CacheSession) -> None:
        """Start the lookups of the stage's steps in parallel (cache lookahead).

        A dry pass assumes every step hits: metadata handlers are pure and a hit's
        effect needs no filesystem, so the keys are exactly those the real pass will
        look up. It stops at a step that chains on the layer it makes (ADD of a URL
        without a checksum) and on any error (the real pass reports it). The stage's
        state is put back after it; ``dry_run`` keeps VOLUME from touching the build
        (the in-place ignore list, the directories it makes in the root).
        """
        saved = (self.runtime, self.scope, self.author, self.cmd_seen, self.cache_parent)
        keys: list[str] = []
        self.dry_run = True
        try:
            for instr in instructions:
                assert self.scope is not None
                if isinstance(instr, ArgInstruction):
                    effect = self.do_arg(instr)
                    self.cache_parent = decide(instr, self._step_context(), cache.options).chain
                else:
                    expanded = expand_instruction(
                        instr, self.scope.env, escape=self.escape
                    ).instruction
                    decision = decide(expanded, self._step_context(), cache.options)
                    if decision.chain_on_layer:
                        break
                    if decision.status == "metadata":
                        effect = self._dispatch(expanded, expanded)
                    else:
                        if decision.lookup is not None:
                            keys.append(cache_key(decision.lookup))
                        effect = self._hit_effect(expanded, None)
                    self.cache_parent = decision.chain
                self.runtime = effect.config or self.runtime
                self.scope = effect.scope or self.scope
                self.author = effect.author or self.author
        except LaminaError as exc:
            self.log.debug("cache lookahead stopped: %s", exc.message)
        finally:
            self.runtime, self.scope, self.author, self.cmd_seen, self.cache_parent = saved
            self.dry_run = False
        cache.prefetch(keys)

    def _cache_start(self) -> str:
        """The first key of the stage's chain (module docstring of lamina.builder._cache)."""
        assert self.env.cache is not None
        if self.sp.base_stage is not None:
            return self.env.cache.stage_keys[self.sp.base_stage]
        if self.sp.is_scratch:
            return "scratch"
        return str(self.base_image.digest())

    def _layer_format(self) -> str:
        compression = self.env.compression
        docker = mediatypes.is_docker(self.base_image.media_type())
        if compression == "zstd" and docker:
            compression = "gzip"
        return (
            f"{compression}:{self.env.compression_level}:{self.env.clamp_epoch}:"
            f"{self.env.snapshot_mode}:{'docker' if docker else 'oci'}"
        )

    def _ref_key(self, from_: str) -> tuple[str, str]:
        """``--from``'s stage key or image manifest digest, for a cache key."""
        assert self.env.cache is not None
        stage = self.env.plan.dockerfile.stage_before(from_, self.sp.index)
        if stage is not None:
            key = self.env.cache.stage_keys.get(stage.index)
            if key is None:
                raise BuildStepError(
                    f"--from={from_}: stage {stage.index} has no cache key yet",
                    hint="this is a bug in the build plan",
                )
            return (stage.name or str(stage.index), key)
        image = self.env.pull(from_, self.env.platform, None)
        return (from_, str(image.digest()))

    def _step_context(self) -> StepContext:
        assert self.scope is not None
        return StepContext(
            parent=self.cache_parent,
            platform=str(self._platform()),
            layer_format=self._layer_format(),
            run_env=self.scope.env,  # a persistent map: no copy per step
            context=self.env.context,
            ref_key=self._ref_key,
            single_snapshot=self.single_snapshot,
            memo=self.env.cache.memo if self.env.cache is not None else None,
        )

    def _cached_step(self, expanded: Instruction, cache: CacheSession) -> StepEffect:
        """One step with the layer cache on: look up, apply a hit or run and store."""
        started = time.monotonic()
        decision = decide(expanded, self._step_context(), cache.options)
        slot = cache.slot(self.sp.name or str(self.sp.index), self.step_no, expanded.keyword)
        key = decision.chain
        reason = ""
        layer: Layer | None = None

        def record(status: StepStatus) -> None:
            cache.record(
                StepRecord(
                    stage=self.sp.display,
                    step=self.step_no,
                    instruction=expanded.original or expanded.keyword,
                    key=key,
                    status=status,
                    reason=reason,
                    layer_digest=str(layer.digest()) if layer is not None else None,
                    size=layer.size() if layer is not None else None,
                    seconds=time.monotonic() - started,
                    stage_index=self.sp.index,
                )
            )

        if decision.status == "metadata":
            effect = self._dispatch(expanded, expanded)
            self.cache_parent = key
            record("metadata")
            return effect
        if decision.status == "uncacheable":
            reason = f"not cached: {decision.reason}"
            self.log.info("%s", reason)
            self.materialise()
            effect = self._dispatch(expanded, expanded)
            layer = effect.layer
            if decision.chain_on_layer:
                key = chain_after_layer(decision, layer)
            self.cache_parent = key
            record("uncacheable")
            return effect
        assert decision.lookup is not None
        lookup_inputs = decision.lookup
        key = cache_key(lookup_inputs)
        found = cache.lookup(key)
        if found.hit is not None:
            self.log.info("HIT: %s (%s)", key[:12], found.hit.source)
            cache.note_hit(key, self.sp.index)
            layer = found.hit.layer
            if self.is_target:
                cache.fetch_ahead(layer)  # the output needs it: download while going on
            effect = self._hit_effect(expanded, layer)
            if layer is not None:
                self.pending.append(layer)
            self.cache_parent = decision.chain
            record("hit")
            return effect
        reason = cache.explain(slot, lookup_inputs, found)
        self.log.info("MISS: %s", reason)
        self.materialise()
        effect = self._dispatch(expanded, expanded)
        layer = effect.layer
        cache.store_later(key, layer, lookup_inputs, slot)
        self.cache_parent = decision.chain
        record("miss")
        return effect

    def _hit_effect(self, instr: Instruction, layer: Layer | None) -> StepEffect:
        """What a cached RUN/COPY/ADD/WORKDIR did, without running it (same history)."""
        assert self.scope is not None
        if isinstance(instr, RunInstruction):
            self._check_run_flags(instr)  # a hit is refused as its miss would be
            shell = self.runtime.shell or DEFAULT_SHELL
            if instr.heredocs and isinstance(instr.command, ShellCommand):
                argv = heredoc_command(instr.command.text, instr.heredocs, shell).argv
            else:
                argv = _argv(instr.command, self.runtime.shell)
            args = [(k, v if v is not None else "") for k, v in self.scope.args]
            return StepEffect(created_by=run_created_by(argv, args), layer=layer)
        if isinstance(instr, WorkdirInstruction):
            current = self.runtime.working_dir or "/"
            path = posixpath.normpath(posixpath.join(current, instr.path))
            if path.startswith("//"):
                path = "/" + path.lstrip("/")
            config = replace(self.runtime, working_dir=path)
            return StepEffect(created_by=f"WORKDIR {path}", config=config, layer=layer)
        assert isinstance(instr, CopyInstruction | AddInstruction)
        return StepEffect(created_by=copy_created_by(instr), layer=layer)

    # ------------------------------------------------------ metadata handlers

    def do_arg(self, instr: ArgInstruction) -> StepEffect:
        assert self.scope is not None
        scope = self.scope.with_arg(instr, escape=self.escape)
        values = scope.declared  # a persistent map: no copy per ARG
        words = []
        for kv in instr.args:
            v = values.get(kv.key)
            words.append(kv.key if v is None else f"{kv.key}={v}")
        return StepEffect(created_by="ARG " + " ".join(words), scope=scope)

    def do_env(self, instr: EnvInstruction) -> StepEffect:
        assert self.scope is not None
        pairs = [(kv.key, kv.value or "") for kv in instr.pairs]
        scope = self.scope.with_env(pairs)
        text = " ".join(f"{k}={v}" for k, v in pairs)
        # the config's Env is written from the scope once, by _finish (a tuple per ENV
        # made 100k ENV lines quadratic)
        return StepEffect(created_by=f"ENV {text}", scope=scope)

    def do_label(self, instr: LabelInstruction) -> StepEffect:
        # a persistent map, made a dict by _finish: a copy per LABEL was quadratic
        labels = self.runtime.labels
        persistent = labels if isinstance(labels, PMap) else PMap(labels.items())
        pairs = [(kv.key, kv.value or "") for kv in instr.pairs]
        text = " ".join(f"{k}={v}" for k, v in pairs)
        config = replace(self.runtime, labels=persistent.set_many(pairs))
        return StepEffect(created_by=f"LABEL {text}", config=config)

    def do_maintainer(self, instr: MaintainerInstruction) -> StepEffect:
        return StepEffect(created_by=f"MAINTAINER {instr.maintainer}", author=instr.maintainer)

    def do_cmd(self, instr: CmdInstruction) -> StepEffect:
        argv = _argv(instr.command, self.runtime.shell)
        self.cmd_seen = True
        # BuildKit's dispatchCmd sets ArgsEscaped on every CMD (any form, any OS);
        # ENTRYPOINT leaves it alone.
        return StepEffect(
            created_by=f"CMD {go_quoted_list(argv)}",
            config=replace(self.runtime, cmd=argv or None, args_escaped=True),
        )

    def do_entrypoint(self, instr: EntrypointInstruction) -> StepEffect:
        argv = _argv(instr.command, self.runtime.shell)
        config = replace(self.runtime, entrypoint=argv or None)
        if not self.cmd_seen:
            config = replace(config, cmd=None)
        return StepEffect(created_by=f"ENTRYPOINT {go_quoted_list(argv)}", config=config)

    def do_shell(self, instr: ShellInstruction) -> StepEffect:
        return StepEffect(
            created_by=f"SHELL {go_list(instr.shell)}",
            config=replace(self.runtime, shell=tuple(instr.shell)),
        )

    def do_expose(self, instr: ExposeInstruction) -> StepEffect:
        ports: list[str] = []
        for word in sorted(instr.ports):
            ports.extend(_normalise_port(word, instr.location))
        merged = list(self.runtime.exposed_ports)
        merged.extend(p for p in ports if p not in merged)
        return StepEffect(
            created_by=f"EXPOSE {go_list(ports)}",
            config=replace(self.runtime, exposed_ports=tuple(merged)),
        )

    def do_volume(self, instr: VolumeInstruction) -> StepEffect:
        merged = list(self.runtime.volumes)
        merged.extend(v for v in instr.volumes if v not in merged)
        if self.env.inplace is not None and not self.dry_run:
            # kaniko: later writes below a VOLUME are not kept
            inplace = self.env.inplace
            self.env.inplace = replace(inplace, ignore=inplace.ignore.with_paths(*instr.volumes))
            _make_volume_dirs(inplace.root, instr.volumes)  # kaniko: mkdir -p, never a layer
        return StepEffect(
            created_by=f"VOLUME {go_list(instr.volumes)}",
            config=replace(self.runtime, volumes=tuple(merged)),
        )

    def do_user(self, instr: UserInstruction) -> StepEffect:
        return StepEffect(
            created_by=f"USER {instr.user}", config=replace(self.runtime, user=instr.user)
        )

    def do_stopsignal(self, instr: StopsignalInstruction) -> StepEffect:
        _check_signal(instr.signal, instr.location)
        return StepEffect(
            created_by=f"STOPSIGNAL {instr.signal}",
            config=replace(self.runtime, stop_signal=instr.signal),
        )

    def do_healthcheck(self, instr: HealthcheckInstruction) -> StepEffect:
        hc: dict[str, object] = {"Test": list(instr.test)}
        for key, value in (
            ("Interval", instr.interval),
            ("Timeout", instr.timeout),
            ("StartPeriod", instr.start_period),
            ("StartInterval", instr.start_interval),
            ("Retries", instr.retries),
        ):
            if value:
                hc[key] = value
        return StepEffect(
            created_by=healthcheck_created_by(hc),
            config=replace(self.runtime, healthcheck=hc),
        )

    def do_onbuild(self, instr: OnbuildInstruction) -> StepEffect:
        triggers = list(self.runtime.on_build or ())
        triggers.append(instr.expression)
        return StepEffect(created_by=None, config=replace(self.runtime, on_build=tuple(triggers)))

    def do_workdir(self, instr: WorkdirInstruction) -> StepEffect:
        """As BuildKit: ``mkdir -p`` owned by USER, and always a layer (but for ``/``).

        BuildKit's ``dispatchWorkdir`` commits a ``Mkdir(wd, 0755, WithParents)``
        file op with ``withLayer = true`` whenever ``wd != "/"``, so a WORKDIR
        whose directory already exists still records a (empty) layer.
        """
        from lamina.fs import Change

        current = self.runtime.working_dir or "/"
        path = posixpath.normpath(posixpath.join(current, instr.path))
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        config = replace(self.runtime, working_dir=path)
        created_by = f"WORKDIR {path}"
        if path == "/":
            return StepEffect(created_by=created_by, config=config)
        rootfs = self.ensure_fs()
        host = safe_join(rootfs, path, follow_final=True)
        created: list[Path] = []
        if not host.is_dir():
            created = self._make_workdir(rootfs, host, path, instr.location)
        changes = [Change.add(PurePosixPath("/", *p.relative_to(rootfs).parts)) for p in created]
        layer = self._layer(changes, rootfs)
        return StepEffect(created_by=created_by, config=config, layer=layer)

    def _make_workdir(
        self, rootfs: Path, host: Path, path: str, location: SourceLocation
    ) -> list[Path]:
        from lamina.builder._ids import file_op_owner

        uid, gid = file_op_owner(rootfs, self.runtime.user) if self.runtime.user else (0, 0)
        created: list[Path] = []
        probe = host
        while not probe.exists() and probe != rootfs:
            created.append(probe)
            probe = probe.parent

        def make() -> None:
            for p in reversed(created):
                if p.is_symlink() or p.exists():
                    p.unlink()
                p.mkdir(mode=0o755)
                os.chmod(p, 0o755)
                os.lchown(p, uid, gid)

        try:
            self._ownership().run(make)
        except OSError as exc:
            raise FilesystemError(
                f"WORKDIR {path}: cannot create {exc.filename}: {exc.strerror}",
                location=location,
            ) from exc
        return created

    # -------------------------------------------------------- filesystem steps

    def _layer(self, changes: Sequence[Change], root: Path) -> Layer | None:
        if self.single_snapshot:
            return None  # one layer at the end of the stage (_squash)
        compression = self.env.compression
        if compression == "zstd" and mediatypes.is_docker(self.base_image.media_type()):
            compression = "gzip"  # kaniko: a Docker-typed base keeps gzip
        change_list = list(changes)

        def write() -> tuple[Path, str, Digest, int, Digest]:
            layer = make_layer(
                change_list,
                root,
                self.env.build_dir.layers,
                compression=compression,
                level=self.env.compression_level,
                epoch=self.env.clamp_epoch,
            )
            return layer.path, layer.media_type(), layer.digest(), layer.size(), layer.diff_id()

        # rootless, files of subordinate owners may be unreadable to the builder itself:
        # the layer is read as root of the user namespace, where owners are image owners
        path, media_type, digest, size, diff_id = self._ownership().run(write)
        return FileLayer(
            path, media_type=media_type, digest=digest, size=size, diff_id=diff_id, verify=False
        )

    def _ownership(self) -> Ownership:
        return self.env.ownership()

    def _check_run_flags(self, instr: RunInstruction) -> tuple[str, str]:
        """RUN's flags refused or not entitled, on a hit as on a miss: (security, network)."""
        loc = instr.location
        for m in instr.mounts:
            from lamina.builder._mounts import unsupported_mount  # RUN-only: not on a hit's path

            what = unsupported_mount(m)
            if what is not None:
                raise NotSupportedError(what, location=loc)
        check_secret_mounts(instr.mounts, self.env.secrets, self.env.ssh, loc)
        if instr.devices:
            raise NotSupportedError("RUN --device", location=loc)
        security = instr.security or "sandbox"
        if security not in ("sandbox", "insecure"):
            raise DockerfileError(
                f"unknown RUN --security value {security!r}",
                hint="use sandbox (the default) or insecure",
                location=loc,
            )
        if security == "insecure" and "security.insecure" not in self.env.allow:
            raise UsageError(
                "RUN --security=insecure needs the security.insecure entitlement",
                hint="pass --allow=security.insecure to let this step run with every "
                "capability, the host's /dev and a writable /sys",
                location=loc,
            )
        network = instr.network or "default"
        if network not in ("default", "none", "host"):
            raise DockerfileError(
                f"unknown RUN --network value {network!r}",
                hint="use default, none or host",
                location=loc,
            )
        return security, network

    def do_run(self, instr: RunInstruction) -> StepEffect:
        from lamina.builder._inplace import in_image_path
        from lamina.builder._mounts import (
            UpperCache,
            mount_target,
            released,
            secret_mounts,
        )
        from lamina.fs import changes_from_upper
        from lamina.sandbox import BindMount, RunSpec, TmpfsMount, host_network_files

        assert self.scope is not None
        loc = instr.location
        security, network = self._check_run_flags(instr)
        runner = self.env.get_runner()
        if network == "none" and not runner.captures_upper:
            raise NotSupportedError(
                f"RUN --network=none with --isolation={runner.name}",
                hint=f"--isolation={runner.name} runs the step in lamina's own network "
                "namespace, so it cannot take the network away; drop --network=none or build "
                "with --isolation=namespace",
                location=loc,
            )
        script: tuple[str, bytes] | None = None
        if instr.heredocs and not isinstance(instr.command, ShellCommand):
            raise DockerfileError(
                "here-documents need the shell form of RUN", hint="write RUN <<EOF", location=loc
            )
        if instr.heredocs and isinstance(instr.command, ShellCommand):
            hd = heredoc_command(
                instr.command.text, instr.heredocs, self.runtime.shell or DEFAULT_SHELL
            )
            argv, script = hd.argv, hd.script
        else:
            argv = _argv(instr.command, self.runtime.shell)
        if not argv:
            raise DockerfileError("RUN needs a command", hint="write RUN <command>", location=loc)
        args = [(k, v if v is not None else "") for k, v in self.scope.args]
        created_by = run_created_by(argv, args)
        rootfs = self.ensure_fs()
        # mounts emulated in the rootfs (InPlaceMounts): without mount rights, and for what
        # the chroot runner does not mount itself (cache, tmpfs, writable binds)
        emulate = not runner.can_mount or (
            not runner.captures_upper
            and any(
                m.type in ("cache", "tmpfs") or (m.type == "bind" and not m.readonly)
                for m in instr.mounts
            )
        )
        cwd = self.runtime.working_dir or "/"
        run_argv = argv
        if script is not None:
            run_argv = (*argv[:-1], posixpath.join(SANDBOX_PIPES_DIR, script[0]))
        command_text = " ".join(argv)
        out = _Output(self.log, f"[stage {self.sp.display} line {loc.line}]")
        n = self.env.next_id()
        scratch = self.env.build_dir.work / f"run-{n}"
        mounts: list[MountSpec] = []
        caches: list[tuple[Mount, str]] = []
        leases: list[CacheLease] = []
        uppers: list[UpperCache] = []
        run_env = self.scope.run_env
        try:
            if script is not None:
                pipes = scratch / "pipes"
                pipes.mkdir(parents=True, mode=0o755)
                os.chmod(pipes, 0o755)
                (pipes / script[0]).write_bytes(script[1])
                os.chmod(pipes / script[0], 0o755)
                if self.env.inplace is not None:  # in place: the build dir is in the root
                    inside = in_image_path(self.env.inplace.root, pipes / script[0])
                    if inside is None:
                        raise NotSupportedError(
                            "a here-document script with --isolation=none and a build "
                            "directory outside the root",
                            hint="keep --kaniko-dir inside the root",
                            location=loc,
                        )
                    run_argv = (*argv[:-1], str(inside))
                else:
                    mounts.append(BindMount(source=pipes, target=SANDBOX_PIPES_DIR, readonly=True))
            for m in instr.mounts:
                if m.type in ("secret", "ssh"):
                    continue
                target = mount_target(m.target, cwd, loc)
                if m.type == "tmpfs":
                    mounts.append(TmpfsMount(target=target, size=m.size))
                elif m.type == "bind":
                    source = self._mount_source(m, loc)
                    mounts.append(BindMount(source=source, target=target, readonly=m.readonly))
                elif m.type == "cache":
                    _check_cache_twice(caches, m, target, loc)
                    caches.append((m, target))
            step_secrets = secret_mounts(
                instr.mounts,
                secrets=self.env.secrets,
                agents=self.env.ssh,
                workdir=cwd,
                run_env=run_env,
                scratch=scratch,
                location=loc,
            )
            mounts.extend(step_secrets.mounts)
            if step_secrets.env:
                run_env = {**run_env, **step_secrets.env}
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise FilesystemError(f"cannot prepare the mounts of RUN: {exc}", location=loc) from exc
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        if caches and not runner.captures_upper and not emulate:
            shutil.rmtree(scratch, ignore_errors=True)
            raise NotSupportedError(
                f"RUN --mount=type=cache with --isolation={runner.name}",
                hint="cache mounts need --isolation=namespace",
                location=loc,
            )
        emulated: list[MountSpec] = []
        if emulate:  # no mount rights: emulated by _run_emulated
            emulated, mounts = mounts, []
        spec = RunSpec(
            rootfs=rootfs,
            argv=run_argv,
            env=run_env,
            cwd=cwd,
            user=self.runtime.user or "",
            network=network,  # type: ignore[arg-type]
            mounts=tuple(mounts),
            extra_files=host_network_files("lamina"),
            security=security,  # type: ignore[arg-type]
            placeholders=_volume_placeholders(rootfs, self.runtime.volumes),
        )
        try:
            if runner.captures_upper:
                upper = self.env.build_dir.work / f"upper-{n}"
                work = self.env.build_dir.work / f"work-{n}"
                try:
                    upper.mkdir()
                    work.mkdir()
                except OSError as exc:
                    raise FilesystemError(f"cannot create {upper}: {exc.strerror}") from exc
                spec = replace(spec, upper=upper, work=work)
                with released(leases, uppers):
                    for m, target in caches:
                        seed = self._mount_source(m, loc) if m.from_ else None
                        lease = self._cache_store().acquire(
                            m, m.id or target, seed=seed, location=loc
                        )
                        leases.append(lease)
                        if m.readonly:
                            spec = replace(
                                spec,
                                mounts=(
                                    *spec.mounts,
                                    BindMount(source=lease.data, target=target, readonly=True),
                                ),
                            )
                            continue
                        uc = UpperCache(
                            lease=lease, upper=upper, rootfs=rootfs, target=target, location=loc
                        )
                        uppers.append(uc)
                        uc.place()
                    result = self._run_in(runner, spec, out, loc)
                out.flush()
                if not result.ok:
                    raise self._run_failure(result, command_text, loc)
                # lower=: a hardlinked file changed through one name keeps its group (#16)
                changes = self._ownership().run(lambda: changes_from_upper(upper, lower=rootfs))
                layer = self._layer(changes, upper)
                ownership = self._ownership()
                ownership.apply_upper(upper, rootfs)
                ownership.remove(work)
                ownership.remove(upper)
            elif emulate:
                layer = self._run_emulated(runner, spec, emulated, caches, out, command_text, loc)
            else:
                ignore = _run_ignore(self.env.inplace)
                snapshots = self._snapshots()
                snapshots.before(rootfs, ignore)
                result = self._run_in(runner, spec, out, loc)
                out.flush()
                if not result.ok:
                    raise self._run_failure(result, command_text, loc)
                mode = (
                    self.env.snapshot_mode if self.env.snapshot_mode in ("full", "time") else "full"
                )
                changes = snapshots.after(mode=mode, ignore=ignore)  # type: ignore[arg-type]
                layer = self._layer(changes, rootfs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return StepEffect(created_by=created_by, layer=layer)

    def _run_emulated(  # noqa: PLR0917 - one RUN's parts
        self,
        runner: Runner,
        spec: RunSpec,
        mounts: Sequence[MountSpec],
        caches: Sequence[tuple[Mount, str]],
        out: _Output,
        command_text: str,
        loc: SourceLocation,
    ) -> Layer | None:
        """A RUN whose runner cannot mount, its mounts emulated in ``spec.rootfs``.

        ``--isolation=none`` (the one in-place root) and ``chroot`` without
        mount rights (the stage's private rootfs) take this one path. See
        :class:`InPlaceMounts`: the targets are left out of both scans and
        restored, even when the step fails or the build is interrupted.
        """
        from lamina.builder._mounts import InPlaceMounts, released

        root = spec.rootfs
        inplace = self.env.inplace
        em = InPlaceMounts(root=root, location=loc, log=self.log.info, isolation=runner.name)
        places: list[tuple[str, Callable[[], None]]] = []
        leases: list[CacheLease] = []
        for mount in mounts:
            places.append((mount.target, self._emulation(em, inplace, mount, loc)))
        mode = self.env.snapshot_mode if self.env.snapshot_mode in ("full", "time") else "full"
        with released(leases, []):
            for m, target in caches:
                seed = self._mount_source(m, loc) if m.from_ else None
                lease = self._cache_store().acquire(m, m.id or target, seed=seed, location=loc)
                leases.append(lease)
                places.append(
                    (target, functools.partial(em.cache, lease, target, readonly=bool(m.readonly)))
                )
            places.sort(key=lambda p: PurePosixPath(p[0]).parts)
            watched = _run_ignore(inplace)
            ignore = watched.with_paths(*(em.resolve(t) for t, _ in places))
            snapshots = self._snapshots()
            snapshots.before(root, watched)
            try:
                for _, place in places:
                    place()
                em.placed()
                result = self._run_in(runner, spec, out, loc)
            except BaseException:
                try:
                    em.restore()
                except LaminaError as exc:
                    self.log.warning("%s", exc.message)
                raise
            em.restore()
        out.flush()
        if not result.ok:
            raise self._run_failure(result, command_text, loc)
        changes = snapshots.after(mode=mode, ignore=ignore)  # type: ignore[arg-type]
        return self._layer(changes, root)

    def _emulation(
        self, em: InPlaceMounts, inplace: InPlace | None, mount: MountSpec, loc: SourceLocation
    ) -> Callable[[], None]:
        """How ``mount`` is placed in the step's root (checked now, done later)."""
        from lamina.builder._inplace import in_image_path
        from lamina.sandbox import TmpfsMount

        if isinstance(mount, TmpfsMount):
            if mount.size is not None:
                self.log.warning(
                    "%s: RUN --mount=type=tmpfs,size=%d at %s: the size is not enforced with "
                    "--isolation=%s without mount rights (the mount is an ordinary directory "
                    "in the root)",
                    loc,
                    mount.size,
                    mount.target,
                    em.isolation,
                )
            return lambda: em.tmpfs(mount.target)
        source = mount.source
        try:
            is_socket = stat.S_ISSOCK(os.stat(source).st_mode)
        except OSError as exc:
            raise FilesystemError(
                f"cannot read the RUN --mount source {source}: {exc.strerror or exc}",
                location=loc,
            ) from exc
        if is_socket and inplace is None:  # an ssh agent in a chroot: a hard link
            return lambda: em.socket(source, mount.target)
        if is_socket and inplace is not None:  # in place: a symlink, if the socket survives
            inside = in_image_path(inplace.root, source)
            if inside is None or not inplace.ignore.matches(inside):
                raise NotSupportedError(
                    f"RUN --mount=type=ssh at {mount.target} with --isolation=none and the "
                    f"agent socket {source}",
                    hint="without mount rights the socket is reached through a symlink, so it "
                    "must lie in a path the build keeps (the kaniko dir, --ignore-path, a "
                    "mount point): move the socket there or use --isolation=namespace",
                    location=loc,
                )
            return lambda: em.link(inside, mount.target)
        return lambda: em.bind(source, mount.target)

    @staticmethod
    def _run_in(runner: Runner, spec: RunSpec, out: _Output, loc: SourceLocation) -> RunResult:
        """``runner.run``; a sandbox set-up error gets the RUN's Dockerfile line."""
        try:
            return runner.run(spec, on_output=out)
        except (BuildStepError, NotSupportedError) as exc:
            if exc.location is not None:
                raise
            if isinstance(exc, NotSupportedError):  # its message is "not supported yet: what"
                raise NotSupportedError(exc.what, hint=exc.hint, location=loc) from exc
            raise type(exc)(exc.message, hint=exc.hint, location=loc) from exc

    def _copy_heredocs(
        self,
        instr: CopyInstruction | AddInstruction,
        rootfs: Path,
        *,
        dest: str,
        dest_is_dir: bool,
        owner: tuple[int, int] | None,
        chmod: ChmodSpec | None,
        created_dir_mtime: int | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> list[PurePosixPath]:
        """``COPY <<NAME dest``: a file named NAME (0644 unless ``--chmod``) with the body."""
        docs = instr.heredocs
        if not docs:
            return []
        loc = instr.location
        if len(instr.sources) + len(docs) > 1 and not dest_is_dir:
            raise DockerfileError(
                f"when using {instr.keyword} with more than one source file, "
                "the destination must be a directory and end with a /",
                hint=f"write the destination as {instr.dest}/",
                location=loc,
            )
        tmp = self.env.build_dir.work / f"heredoc-{self.env.next_id()}"
        try:
            try:
                tmp.mkdir()
                for h in docs:
                    host = safe_join(tmp, h.name)
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.write_bytes(h.body.encode("utf-8", "surrogateescape"))
                    os.chmod(host, 0o644)
            except OSError as exc:
                raise FilesystemError(
                    f"cannot write the here-document of {instr.keyword}: {exc}", location=loc
                ) from exc
            tree = LocalContext(tmp, None, name="here-documents")
            sources = [s for h in docs for s in tree.resolve(h.name, location=loc)]
            req = CopyRequest(
                tree=tree,
                sources=tuple(sources),
                dest=dest,
                dest_is_dir=dest_is_dir,
                owner=owner or (0, 0),
                chmod=chmod,
                created_dir_mtime=created_dir_mtime,
                ignore=self.env.inplace.ignore if self.env.inplace is not None else None,
            )
            return copy_into(rootfs, req, warn=warn or self.log.warning)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _cache_store(self) -> CacheStore:
        from lamina.builder._mounts import CacheStore

        root = self.env.cache_mount_dir or (self.env.build_dir.path.parent / "cache-mounts")
        return CacheStore(root)

    def _mount_source(self, m: Mount, loc: SourceLocation) -> Path:
        """The host path a bind mount (or a cache seed) reads: ``source`` inside ``from``."""
        if m.from_ is not None:
            root = self._source_tree(m.from_, loc).root
        else:
            root = self._filtered_context()
        source = m.source or "/"
        try:
            host = safe_join(root, source, follow_final=True)
        except LaminaError as exc:
            raise BuildStepError(
                f"--mount source {source}: {exc.message}", hint=exc.hint, location=loc
            ) from exc
        if not host.exists():
            where = f"stage or image {m.from_}" if m.from_ else "the build context"
            raise BuildStepError(
                f"--mount source {source} not found in {where}",
                hint="source= is a path inside from= (default: the build context)",
                location=loc,
            )
        return host

    def _filtered_context(self) -> Path:
        """The build context as a mount sees it: with ``.dockerignore`` applied."""
        ctx = self.env.context
        if ctx.ignore is None:
            return ctx.root
        key = "context://filtered"
        root = self.env.image_trees.get(key)
        if root is not None:
            return root
        root = self.env.build_dir.path / f"context-{self.env.next_id()}"
        root.mkdir(mode=0o755)
        for src in ctx.resolve("."):
            for entry in ctx.walk(src):
                dest = root / entry.rel
                try:
                    if stat.S_ISDIR(entry.st.st_mode):
                        dest.mkdir(parents=True, exist_ok=True)
                        shutil.copystat(entry.host, dest)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        copy_entry(entry.host, dest)  # a device node is re-made, not read
                except OSError as exc:
                    raise FilesystemError(
                        f"cannot copy the build context for a bind mount: {exc}"
                    ) from exc
        self.env.image_trees[key] = root
        return root

    def _run_failure(self, result: RunResult, command: str, loc: SourceLocation) -> BuildStepError:
        from lamina.sandbox import failure_error

        return failure_error(result, command=command, stage=self.sp.display, location=loc)

    def _source_tree(self, from_: str | None, loc: SourceLocation) -> LocalContext:
        if from_ is None:
            return self.env.context
        stage = self.env.plan.dockerfile.stage_before(from_, self.sp.index)
        if stage is not None:
            result = self.env.stage_result(stage.index)
            if result is None or result.rootfs is None:
                raise BuildStepError(
                    f"COPY --from={from_}: stage {stage.index} has no filesystem here",
                    hint="this is a bug in the build plan",
                    location=loc,
                )
            return LocalContext(result.rootfs, None, name=f"stage {from_}")
        root = self.env.image_trees.get(from_)
        if root is None:
            image = self.env.pull(from_, self.env.platform, loc)
            root = self.env.build_dir.path / f"image-{self.env.next_id()}"
            root.mkdir()
            self.env.extract(image, root)
            self.env.image_trees[from_] = root
        return LocalContext(root, None, name=f"image {from_}")

    def _fetch_all(self, urls: Sequence[str], instr: AddInstruction, into: Path) -> list[Fetched]:
        """Download the ``ADD`` URL sources into ``into`` (deleted by the caller)."""
        try:
            into.mkdir(parents=True)
        except OSError as exc:
            raise FilesystemError(f"cannot create {into}: {exc.strerror}") from exc
        out: list[Fetched] = []
        try:
            for url in urls:
                self.log.info("downloading %s", redact_url(url))
                out.append(fetch_url(url, into, checksum=instr.checksum, location=instr.location))
        except BaseException:
            shutil.rmtree(into, ignore_errors=True)
            raise
        return out

    def _checkout_all(
        self, gits: Sequence[str], instr: AddInstruction, into: Path
    ) -> list[GitCheckout]:
        """Check out the ``ADD`` git sources below ``into`` (deleted by the caller)."""
        from lamina.builder._git import fetch_git, git_auth_header, git_secrets, parse_git_source

        loc = instr.location
        parsed = [
            parse_git_source(
                src, keep_git_dir=instr.keep_git_dir, checksum=instr.checksum, location=loc
            )
            for src in gits
        ]
        out: list[GitCheckout] = []
        try:
            for source in parsed:
                self.log.info("fetching git repository %s", source.display)
                header = git_auth_header(source.remote, git_secrets(self.env.secrets, loc))
                out.append(
                    fetch_git(
                        source,
                        into / f"git-{self.env.next_id()}",
                        commit_mtime=self.env.git_commit_mtime,
                        auth_header=header,
                        ssh_socket=next(
                            (s.socket for s in self.env.ssh if s.id == "default"), None
                        ),
                        location=loc,
                    )
                )
        except BaseException:
            shutil.rmtree(into, ignore_errors=True)
            raise
        return out

    def do_copy(self, instr: CopyInstruction | AddInstruction) -> StepEffect:
        """COPY/ADD, with ``--exclude``, ``COPY --parents``, ``--link`` and symbolic ``--chmod``.

        ``--link``: the sources are copied into an empty directory, the layer is
        made from that directory alone (so it does not depend on earlier
        layers: the same sources give the same layer digest whatever came
        before), then merged into the stage's rootfs like an extracted layer.
        As in BuildKit, symlinks in the destination's parents are not
        followed, and the parent directories the copy creates are 0755 root
        (or the ``--chown`` owner) in the layer, overriding the image's (e.g.
        ``/tmp`` becomes 0755). Unlike BuildKit, those directories get a fixed
        mtime (``SOURCE_DATE_EPOCH``, else 0) instead of the copy time, which
        is what makes the layer reproducible without BuildKit's cache keys.
        As BuildKit does, ``--link`` together with ``--chmod`` is a plain copy.
        """
        from lamina.fs import Change

        loc = instr.location
        kw = instr.keyword
        from_: str | None = None
        parents = False
        if isinstance(instr, CopyInstruction):
            from_ = instr.from_
            parents = instr.parents
        link = instr.link and not instr.chmod
        excludes = None
        if instr.excludes:
            try:
                excludes = parse_dockerignore("\n".join(instr.excludes), filename="--exclude")
            except DockerfileError as exc:
                raise DockerfileError(
                    f"{kw} --exclude: {exc.message}", hint=exc.hint, location=loc
                ) from exc
        urls: list[str] = []
        gits: list[str] = []
        if isinstance(instr, AddInstruction):
            urls = check_add_sources(instr)
            gits = [src for src in instr.sources if is_git_source(src)]
        rootfs = self.ensure_fs()
        tree = self._source_tree(from_, loc)
        local = [src for src in instr.sources if src not in urls and src not in gits]
        sources, bases = resolve_sources(tree, local, parents=parents, location=loc)
        fetch_dir = self.env.build_dir.work / f"add-{self.env.next_id()}"
        fetched: list[Fetched] = []
        if urls and isinstance(instr, AddInstruction):
            fetched = self._fetch_all(urls, instr, fetch_dir)
        checkouts: list[GitCheckout] = []
        if gits and isinstance(instr, AddInstruction):
            checkouts = self._checkout_all(gits, instr, fetch_dir)
        dest, dest_is_dir = resolve_dest(instr.dest, self.runtime.working_dir or "/")
        if not dest_is_dir and safe_join(rootfs, dest, follow_final=True).is_dir():
            dest_is_dir = True
        several = len(instr.sources) > 1 or any(has_glob(s) for s in instr.sources)
        if several and len(sources) + len(fetched) + len(checkouts) > 1 and not dest_is_dir:
            raise DockerfileError(
                f"when using {kw} with more than one source file, "
                "the destination must be a directory and end with a /",
                hint=f"write the destination as {instr.dest}/",
                location=loc,
            )
        owner: tuple[int, int] | None = None if from_ is not None else (0, 0)
        if instr.chown:
            owner = resolve_chown(rootfs, instr.chown, loc)
        chmod = parse_chmod(instr.chmod, loc) if instr.chmod else None
        stamp = (self.env.clamp_epoch or 0) if link else None
        req = CopyRequest(
            tree=tree,
            sources=tuple(sources),
            dest=dest,
            dest_is_dir=dest_is_dir,
            owner=owner,
            chmod=chmod,
            extract_archives=isinstance(instr, AddInstruction) and instr.unpack is not False,
            remote=tuple(fetched),
            unpack_remote=isinstance(instr, AddInstruction) and instr.unpack is True,
            bases=tuple(bases),
            parents=parents,
            excludes=excludes,
            created_dir_mtime=stamp,
            chown_archives=bool(instr.chown),
            ignore=self.env.inplace.ignore if self.env.inplace is not None else None,
        )
        target = rootfs
        if link:
            target = self.env.build_dir.work / f"link-{self.env.next_id()}"
        try:
            if link:
                try:
                    target.mkdir(mode=0o755)
                except OSError as exc:
                    raise FilesystemError(f"cannot create {target}: {exc.strerror}") from exc

            def copy() -> tuple[list[PurePosixPath], list[str]]:
                # rootless this runs in a forked child: warnings come back with the result
                warnings: list[str] = []
                written = copy_into(target, req, warn=warnings.append)
                for checkout in checkouts:  # each git checkout: a directory source of its own
                    git_tree = LocalContext(checkout.root, None, name="git repository")
                    git_req = replace(
                        req,
                        tree=git_tree,
                        sources=(ContextSource(path="", host=checkout.root, kind="dir"),),
                        bases=(),
                        parents=False,
                        extract_archives=False,
                        remote=(),
                    )
                    written += copy_into(target, git_req, warn=warnings.append)
                written += self._copy_heredocs(
                    instr,
                    target,
                    dest=dest,
                    dest_is_dir=dest_is_dir,
                    owner=owner,
                    chmod=chmod,
                    created_dir_mtime=stamp,
                    warn=warnings.append,
                )
                return written, warnings

            written, warnings = self._ownership().run(copy)
            for text in warnings:
                self.log.warning("%s", text)
            layer = self._layer([Change.add(p) for p in written], target)
            if link:
                self._ownership().apply_upper(target, rootfs)
        finally:
            shutil.rmtree(fetch_dir, ignore_errors=True)
            if link:
                self._ownership().remove(target)
        return StepEffect(created_by=copy_created_by(instr), layer=layer)


def copy_created_by(instr: CopyInstruction | AddInstruction) -> str:
    """A COPY/ADD's history entry, for a cache hit and a miss alike (URL user-info
    redacted)."""
    parents = isinstance(instr, CopyInstruction) and instr.parents
    flags = "--parents " if parents else ""
    if instr.chown:
        flags += f"--chown={instr.chown} "
    if instr.chmod:
        flags += f"--chmod={instr.chmod} "
    srcs = [*map(redact_url, instr.sources), *(f"<<{h.name}" for h in instr.heredocs)]
    return f"{instr.keyword} {flags}{' '.join(srcs)} {instr.dest} # buildkit"


def _check_cache_twice(
    earlier: Sequence[tuple[Mount, str]], mount: Mount, target: str, loc: SourceLocation
) -> None:
    """Refuse a cache one RUN mounts twice where its lock would wait for itself forever.

    The lock of a cache is taken per mount: a second read-write mount (shared
    or locked), or a read-only one after a read-write one, would wait for the
    step's own first mount. A private read-write second mount gets a fresh
    cache, and two read-only mounts share the lock.
    """
    cache_id = mount.id or target
    for other, other_target in earlier:
        if (other.id or other_target) != cache_id:
            continue
        if (mount.readonly and other.readonly) or (
            not mount.readonly and mount.sharing == "private"
        ):
            continue
        raise BuildStepError(
            f"RUN mounts the cache {cache_id!r} twice (at {other_target} and {target})",
            hint="give each cache mount its own id, or mount it once",
            location=loc,
        )


def _missing_volume_dir(rootfs: Path, volume: str) -> Path | None:
    """The host path of a VOLUME directory missing from ``rootfs`` that can be made there."""
    if not volume.startswith("/"):
        return None
    try:
        host = safe_join(rootfs, volume, follow_final=True)
    except LaminaError:
        return None  # below a file: nothing to make
    if os.path.lexists(host):
        return None
    probe = host.parent
    while probe != rootfs and not os.path.lexists(probe):
        probe = probe.parent
    return host if probe.is_dir() and not probe.is_symlink() else None


def _volume_placeholders(rootfs: Path, volumes: Sequence[str]) -> tuple[str, ...]:
    """VOLUME paths a RUN finds as (empty) directories, as with kaniko, Docker and buildah.

    BuildKit only records VOLUME in the config, so ``VOLUME /foo1`` then ``RUN
    echo > /foo1/hello`` fails there. Here the missing directory exists for the
    step like a mount point (:class:`RunSpec` ``placeholders``): it leaves no
    trace unless the step writes below it, and what it writes is kept (as
    BuildKit keeps writes below VOLUME paths that exist).
    """
    return tuple(v for v in volumes if _missing_volume_dir(rootfs, v) is not None)


def _make_volume_dirs(root: Path, volumes: Sequence[str]) -> None:
    """In place (kaniko's mode): create missing VOLUME directories (0755), as kaniko does."""
    for volume in volumes:
        host = _missing_volume_dir(root, volume)
        if host is None:
            continue
        try:
            host.mkdir(mode=0o755, parents=True)
        except OSError as exc:
            raise FilesystemError(
                f"VOLUME {volume}: cannot create {exc.filename}: {exc.strerror}",
                hint="kaniko's mode creates the directories of VOLUME paths in the root",
            ) from exc


def now_utc() -> datetime:
    return datetime.now(tz=UTC).replace(microsecond=0)
