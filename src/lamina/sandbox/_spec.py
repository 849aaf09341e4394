"""The records a RUN step is described by, and the ``Runner`` protocol."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

from lamina.errors import BuildStepError, SourceLocation, UsageError

__all__ = [
    "BindMount",
    "MountSpec",
    "Network",
    "RunResult",
    "RunSpec",
    "Runner",
    "TmpfsMount",
    "failure_error",
]

Network: TypeAlias = Literal["default", "host", "none"]
_NETWORKS = ("default", "host", "none")
Security: TypeAlias = Literal["sandbox", "insecure"]


def _check_target(target: str) -> None:
    if not target or posixpath.normpath(posixpath.join("/", target)) == "/":
        raise UsageError(f"mount target {target!r} is not allowed: it would hide the root")


@dataclass(frozen=True, slots=True, kw_only=True)
class BindMount:
    """A host file or directory made visible at ``target`` inside the sandbox.

    ``readonly=False`` lets the step write to it, but the writes are discarded
    after the step (a directory gets a throw-away overlay, a file a copy); the
    host ``source`` is never modified. A relative ``target`` is taken relative
    to the step's working directory.
    """

    source: Path
    target: str
    readonly: bool = True

    def __post_init__(self) -> None:
        _check_target(self.target)


@dataclass(frozen=True, slots=True, kw_only=True)
class TmpfsMount:
    """An empty tmpfs at ``target``; ``size`` in bytes (``None``: the kernel default)."""

    target: str
    size: int | None = None

    def __post_init__(self) -> None:
        _check_target(self.target)
        if self.size is not None and self.size <= 0:
            raise UsageError(f"tmpfs size for {self.target} must be positive, not {self.size}")


MountSpec: TypeAlias = BindMount | TmpfsMount


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """Everything needed to run one RUN command in a root filesystem.

    * ``rootfs``: the image filesystem (the read-only lower layer when
      ``upper``/``work`` are given).
    * ``upper``/``work``: with the namespace runner, an overlay
      ``lowerdir=rootfs,upperdir=upper,workdir=work`` becomes ``/`` so every
      change lands in ``upper`` and ``rootfs`` is untouched. Both on the same
      filesystem, ``work`` empty.
    * ``argv``: final (shell form already turned into ``SHELL + [cmd]``);
      ``argv[0]`` is looked up in the image's ``PATH`` from ``env``.
    * ``env``: the step's environment (ENV + ARG). ``HOME`` is added from the
      user's passwd entry and ``PATH`` gets Docker's default when missing.
    * ``cwd``: absolute; created (0755, root) when missing.
    * ``user``: the raw ``USER`` value (``name[:group]`` or ``uid[:gid]``;
      empty means root), resolved through the image's ``/etc/passwd``.
    * ``extra_files``: image path → contents, bind-mounted read-only over the
      image (for ``/etc/resolv.conf`` and ``/etc/hosts``); never captured in
      ``upper``.
    * ``security``: ``sandbox`` (default) keeps only the capabilities of
      BuildKit's default set (containerd's default OCI spec) and a read-only
      ``/sys``; ``insecure`` (``RUN --security=insecure``, allowed with
      ``--allow=security.insecure``) keeps every capability, mounts ``/sys``
      read-write and the host's ``/dev``.
    """

    rootfs: Path
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    user: str = ""
    hostname: str = "lamina"
    network: Network = "default"
    mounts: tuple[MountSpec, ...] = ()
    extra_files: Mapping[str, bytes] = field(default_factory=dict)
    upper: Path | None = None
    work: Path | None = None
    security: Security = "sandbox"
    #: directories the step must find (VOLUME paths missing from the image): made when
    #: missing, like mount points, and gone afterwards unless the step wrote below them
    placeholders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise UsageError("RUN needs a command: the argument list is empty")
        if not self.cwd.startswith("/"):
            raise UsageError(f"the working directory must be absolute, not {self.cwd!r}")
        if self.network not in _NETWORKS:
            raise UsageError(
                f"unknown network mode {self.network!r}",
                hint="use one of: " + ", ".join(_NETWORKS),
            )
        if (self.upper is None) != (self.work is None):
            raise UsageError("an overlay needs both an upper and a work directory")
        for target in self.extra_files:
            if not target.startswith("/"):
                raise UsageError(f"extra file target must be absolute, not {target!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """How a command ended. A non-zero ``exit_code`` is not an exception here.

    ``signal`` is set when the command was killed by a signal (then
    ``exit_code`` is ``128 + signal``). ``tail`` holds the last lines of the
    merged output; ``exec_error`` says why the command could not be started
    (``exit_code`` 127 not found, 126 not executable).
    """

    exit_code: int
    signal: int | None = None
    tail: bytes = b""
    exec_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None


class Runner(Protocol):
    """Runs a :class:`RunSpec` somewhere isolated (or not)."""

    @property
    def name(self) -> str:
        """The isolation name: ``namespace``, ``chroot`` or ``none``."""
        ...

    @property
    def captures_upper(self) -> bool:
        """True when changes land in ``spec.upper``; else they go to ``spec.rootfs``."""
        ...

    @property
    def can_mount(self) -> bool:
        """True when ``spec.mounts`` are real mounts; False: pass none (the builder
        emulates RUN mounts in ``spec.rootfs``)."""
        ...

    def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
        """Run the command, streaming merged stdout/stderr chunks to ``on_output``."""
        ...


def failure_error(
    result: RunResult,
    *,
    command: str,
    stage: str | None = None,
    location: SourceLocation | None = None,
) -> BuildStepError:
    """The error for a RUN that did not succeed: stage, line, command, status, output tail."""
    where = f"stage {stage!r}: " if stage else ""
    if result.exec_error is not None:
        status = f"could not start: {result.exec_error}"
    elif result.signal is not None:
        status = f"was killed by signal {result.signal}"
    else:
        status = f"exited with code {result.exit_code}"
    message = f"{where}RUN {command} {status}"
    tail = result.tail.decode(errors="replace").rstrip("\n")
    if tail:
        message += "\nlast lines of output:\n" + "\n".join("  " + line for line in tail.split("\n"))
    hint = None
    if result.exit_code == 127:
        hint = "the command was not found: check PATH and that the image has it installed"
    elif result.signal == 9:
        hint = "SIGKILL often means the step ran out of memory"
    return BuildStepError(message, hint=hint, location=location, status=result.exit_code)
