"""Typed instructions and stages (BuildKit's ``instructions`` package).

Every instruction is a frozen dataclass holding its *unexpanded* fields, its
``location`` and its ``original`` text. Flags are validated per instruction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lamina.errors import DockerfileError, SourceLocation

from ._mounts import Mount, parse_mount
from ._parser import _HEREDOC, DockerfileWarning, Heredoc, Node, ParseResult, _parse_heredoc, parse
from ._records import fast_init
from ._text import suggest

__all__ = [
    "AddInstruction",
    "ArgInstruction",
    "CmdInstruction",
    "Command",
    "CopyInstruction",
    "Dockerfile",
    "EntrypointInstruction",
    "EnvInstruction",
    "ExecCommand",
    "ExposeInstruction",
    "FromInstruction",
    "HealthcheckInstruction",
    "Instruction",
    "KeyValue",
    "LabelInstruction",
    "MaintainerInstruction",
    "OnbuildInstruction",
    "RunInstruction",
    "ShellCommand",
    "ShellInstruction",
    "Stage",
    "StopsignalInstruction",
    "UserInstruction",
    "VolumeInstruction",
    "WorkdirInstruction",
    "instruction_from_node",
    "parse_dockerfile",
    "parse_duration",
]

KEYWORDS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_VAR = re.compile(r"\$.")
_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")
_HEREDOC_OPERATOR = re.compile(r"[0-9]*<<-?")


# ----------------------------------------------------------------------- records


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ShellCommand:
    """Shell form: the raw text handed to ``SHELL + [text]``."""

    text: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecCommand:
    """Exec (JSON) form: argv as written."""

    argv: tuple[str, ...]


Command = ShellCommand | ExecCommand


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValue:
    """One ``key=value`` of ENV/LABEL, or ``name[=default]`` of ARG (value None: no default)."""

    key: str
    value: str | None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class _Base:
    location: SourceLocation
    original: str

    @property
    def keyword(self) -> str:
        return type(self).__name__.removesuffix("Instruction").upper()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class FromInstruction(_Base):
    base: str
    stage_name: str | None = None
    platform: str | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ArgInstruction(_Base):
    args: tuple[KeyValue, ...]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EnvInstruction(_Base):
    pairs: tuple[KeyValue, ...]
    legacy: bool = False


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LabelInstruction(_Base):
    pairs: tuple[KeyValue, ...]
    legacy: bool = False


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MaintainerInstruction(_Base):
    maintainer: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunInstruction(_Base):
    command: Command
    mounts: tuple[Mount, ...] = ()
    mount_specs: tuple[str, ...] = ()
    network: str | None = None
    security: str | None = None
    devices: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CmdInstruction(_Base):
    command: Command


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EntrypointInstruction(_Base):
    command: Command


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ShellInstruction(_Base):
    shell: tuple[str, ...]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CopyInstruction(_Base):
    sources: tuple[str, ...]
    dest: str
    from_: str | None = None
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AddInstruction(_Base):
    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    excludes: tuple[str, ...] = ()
    keep_git_dir: bool | None = None
    checksum: str | None = None
    unpack: bool | None = None
    heredocs: tuple[Heredoc, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ExposeInstruction(_Base):
    ports: tuple[str, ...]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeInstruction(_Base):
    volumes: tuple[str, ...]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class UserInstruction(_Base):
    user: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkdirInstruction(_Base):
    path: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StopsignalInstruction(_Base):
    signal: str


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class HealthcheckInstruction(_Base):
    """``test`` is the config ``Test``: ``["NONE"]``, ``["CMD", ...]`` or ``["CMD-SHELL", text]``.

    Durations are integer nanoseconds; 0 means "not given" (runtime default).
    """

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OnbuildInstruction(_Base):
    """``expression`` is the trigger text stored in the image config."""

    trigger: Instruction
    expression: str


Instruction = (
    FromInstruction
    | ArgInstruction
    | EnvInstruction
    | LabelInstruction
    | MaintainerInstruction
    | RunInstruction
    | CmdInstruction
    | EntrypointInstruction
    | ShellInstruction
    | CopyInstruction
    | AddInstruction
    | ExposeInstruction
    | VolumeInstruction
    | UserInstruction
    | WorkdirInstruction
    | StopsignalInstruction
    | HealthcheckInstruction
    | OnbuildInstruction
)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """One build stage: ``FROM base [AS name]`` and its instructions."""

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: tuple[Instruction, ...]
    location: SourceLocation
    from_instruction: FromInstruction


@dataclass(frozen=True, slots=True, kw_only=True)
class Dockerfile:
    """A parsed Dockerfile: global ARGs, stages, warnings and directives."""

    meta_args: tuple[ArgInstruction, ...]
    stages: tuple[Stage, ...]
    warnings: tuple[DockerfileWarning, ...] = ()
    escape: str = "\\"
    syntax: str | None = None
    directives: dict[str, str] = field(default_factory=dict)
    filename: str = "Dockerfile"

    def stage(self, ref: str | int) -> Stage | None:
        """A stage by name (case-insensitive) or index (int or decimal string)."""
        if isinstance(ref, int):
            return self.stages[ref] if 0 <= ref < len(self.stages) else None
        low = ref.lower()
        for st in self.stages:
            if st.name is not None and st.name == low:
                return st
        if ref.isdigit():
            i = int(ref)
            return self.stages[i] if i < len(self.stages) else None
        return None

    def stage_before(self, ref: str, current: int) -> Stage | None:
        """Resolve ``COPY --from``/``--mount from`` inside stage ``current``.

        Returns None when ``ref`` is no earlier stage (it is then an image name).
        Raises when it names the current or a later stage.
        """
        st = self.stage(ref)
        if st is None:
            return None
        if st.index >= current:
            cur = self.stages[current] if 0 <= current < len(self.stages) else None
            raise DockerfileError(
                f"stage {ref!r} needs to be defined before it is used",
                hint="move the referenced stage above the one using it",
                location=cur.location if cur is not None else None,
            )
        return st


# ------------------------------------------------------------------------ flags

_BOOL, _STRING, _STRINGS = "bool", "string", "strings"


class _Flags:
    __slots__ = ("lists", "values")

    def __init__(self, node: Node, spec: dict[str, str]) -> None:
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        if not node.flags:
            return
        kw = node.keyword.upper()
        for raw in node.flags:
            if raw == "--":
                break
            body = raw[2:] if raw.startswith("--") else raw
            name, eq, value = body.partition("=")
            ftype = spec.get(name)
            if ftype is None:
                near = suggest(name, list(spec))
                hint = (
                    f"did you mean --{near}?"
                    if near
                    else (
                        f"{kw} accepts " + ", ".join("--" + k for k in spec)
                        if spec
                        else f"{kw} takes no flags"
                    )
                )
                raise _error(node, f"unknown flag: --{name}", hint)
            if ftype != _STRINGS and name in self.values:
                raise _error(node, f"duplicate flag specified: --{name}", "give the flag once")
            if ftype == _BOOL:
                if eq and value == "":
                    raise _error(
                        node,
                        f"missing a value on flag: --{name}",
                        f"write --{name}, --{name}=true or --{name}=false",
                    )
                low = value.lower()
                if low not in ("", "true", "false"):
                    raise _error(
                        node,
                        f"expecting boolean value for flag --{name}, not: {value}",
                        f"write --{name}=true or --{name}=false",
                    )
                self.values[name] = "false" if low == "false" else "true"
            else:
                if not eq:
                    raise _error(
                        node, f"missing a value on flag: --{name}", f"write --{name}=<value>"
                    )
                if ftype == _STRINGS:
                    self.lists.setdefault(name, []).append(value)
                    self.values.setdefault(name, "")
                else:
                    self.values[name] = value

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def flag(self, name: str) -> bool | None:
        v = self.values.get(name)
        return None if v is None else v == "true"

    def many(self, name: str) -> tuple[str, ...]:
        return tuple(self.lists.get(name, ()))


# per-instruction flag specs (built once)
_NO_SPEC: dict[str, str] = {}
_FROM_FLAGS = {"platform": _STRING}
_RUN_FLAGS = {"mount": _STRINGS, "network": _STRING, "security": _STRING, "device": _STRINGS}
_COPY_FLAGS = {
    "from": _STRING,
    "chown": _STRING,
    "chmod": _STRING,
    "link": _BOOL,
    "parents": _BOOL,
    "exclude": _STRINGS,
}
_ADD_FLAGS = {
    "chown": _STRING,
    "chmod": _STRING,
    "link": _BOOL,
    "exclude": _STRINGS,
    "keep-git-dir": _BOOL,
    "checksum": _STRING,
    "unpack": _BOOL,
}
_HEALTHCHECK_FLAGS = {
    "interval": _STRING,
    "timeout": _STRING,
    "start-period": _STRING,
    "start-interval": _STRING,
    "retries": _STRING,
}


def _no_flags(node: Node) -> None:
    """Reject any flag on an instruction that takes none."""
    if node.flags:
        _Flags(node, _NO_SPEC)


def _error(node: Node, message: str, hint: str) -> DockerfileError:
    return DockerfileError(message, hint=hint, location=node.location)


# ------------------------------------------------------------------ durations

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` → integer nanoseconds; ValueError if invalid."""
    s = text
    neg = False
    if s[:1] in ("+", "-"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        num = m.group(1)
        whole, _, frac = num.partition(".")
        unit = _DURATION_UNITS[m.group(2)]
        total += int(whole or "0") * unit
        if frac:
            total += int(frac) * unit // (10 ** len(frac))
        pos = m.end()
    return -total if neg else total


def _interval(node: Node, flags: _Flags, name: str) -> int:
    raw = flags.get(name)
    if raw is None or raw == "":
        return 0
    try:
        d = parse_duration(raw)
    except ValueError:
        raise _error(
            node,
            f"invalid duration {raw!r} for --{name}",
            "use a Go duration such as 30s, 1m30s or 500ms",
        ) from None
    if d < 0:
        raise _error(node, f"Interval {name} cannot be negative", "use a positive duration")
    if 0 < d < 1_000_000:
        raise _error(node, f"Interval {name} cannot be less than 1ms", "use at least 1ms")
    return d


# -------------------------------------------------------------- per instruction


def _command(node: Node, args: tuple[str, ...]) -> Command:
    if node.json:
        return ExecCommand(argv=args)
    return ShellCommand(text=args[0] if args else "")


def _require(node: Node, ok: bool, message: str, hint: str) -> None:
    if not ok:
        raise _error(node, message, hint)


def _pairs(node: Node) -> tuple[tuple[KeyValue, ...], bool]:
    a = node.args
    pairs = tuple([KeyValue(key=a[i], value=a[i + 1]) for i in range(0, len(a) - 2, 3)])
    legacy = bool(a) and a[2] == ""
    return pairs, legacy


def _sources_dest(node: Node, kw: str) -> tuple[tuple[str, ...], str, tuple[Heredoc, ...]]:
    if len(node.args) >= 2 and "<<" not in " ".join(node.args):
        # no heredoc operator anywhere: nothing to merge, no marker
        return tuple(node.args[:-1]), node.args[-1], ()
    args = list(node.args)
    # "<<  EOF" split into two words: join them back (BuildKit >= 0.22)
    merged: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if not node.json and _HEREDOC_OPERATOR.fullmatch(a) and i + 1 < len(args) - 1:
            merged.append(a + args[i + 1])
            i += 2
            continue
        merged.append(a)
        i += 1
    args = merged
    if len(args) < 2:
        raise _error(
            node,
            f"{kw} requires at least two arguments, but only {len(args)} "
            f"{'was' if len(args) == 1 else 'were'} provided. Destination could not be determined.",
            f"write {kw} <src>... <dest>",
        )
    dest = args[-1]
    if _heredoc_marker(dest) is not None:
        raise _error(
            node,
            f"{kw} cannot accept a heredoc as a destination",
            "put the here-document before the destination path",
        )
    docs = {h.name: h for h in node.heredocs}
    sources: list[str] = []
    heredocs: list[Heredoc] = []
    for src in args[:-1]:
        marker = None if node.json else _heredoc_marker(src)
        if marker is not None:
            heredocs.append(docs.get(marker.name, marker))
            continue
        sources.append(src)
    return tuple(sources), dest, tuple(heredocs)


def _heredoc_marker(word: str) -> Heredoc | None:
    m = _HEREDOC.match(word)
    if m is None:
        return None
    return _parse_heredoc(m.group(1), m.group(2), m.group(3))


def _check_from_var(node: Node, value: str | None, flag: str) -> None:
    if value is not None and _VAR.search(value):
        raise _error(
            node,
            f"'{flag}' doesn't support variable expansion, define alias stage instead",
            "declare FROM ${VAR} AS name and use that stage name",
        )


def instruction_from_node(
    node: Node, warnings: list[DockerfileWarning] | None = None
) -> Instruction:
    """Convert one low-level node into its typed instruction (validating it)."""
    handler = _HANDLERS.get(node.keyword)
    if handler is None:
        return _unknown(node)
    return handler(node, node.location, warnings if warnings is not None else [])


_Handler = Callable[[Node, SourceLocation, list[DockerfileWarning]], Instruction]


def _from(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    fl = _Flags(node, _FROM_FLAGS)
    _require(
        node,
        len(args) in (1, 3),
        "FROM requires either one or three arguments",
        "write FROM <image> [AS <name>]",
    )
    name = None
    if len(args) == 3:
        _require(
            node,
            args[1].lower() == "as",
            "When using FROM with AS, the second argument must be 'AS'",
            "write FROM <image> AS <name>",
        )
        name = args[2].lower()
        _require(
            node,
            bool(_STAGE_NAME.match(name)),
            f"invalid name for build stage: {args[2]!r}, name can't start with a number "
            "or contain symbols",
            "stage names match [a-z][a-z0-9-_.]*",
        )
        if args[1] != "AS" and args[1] != "as":
            w.append(
                DockerfileWarning(
                    rule="FromAsCasing",
                    location=loc,
                    message="'as' and 'FROM' keywords' casing do not match",
                )
            )
    return FromInstruction(
        location=loc,
        original=node.original,
        base=args[0],
        stage_name=name,
        platform=fl.get("platform"),
    )


def _check_name(node: Node, kw: str, key: str) -> None:
    """A variable or label name must be valid UTF-8: it is a key of the image config's
    JSON (a value is written as Go does, invalid bytes as U+FFFD)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise _error(
            node,
            f"{kw} name {key!r} is not valid UTF-8",
            "save the Dockerfile as UTF-8, or rename the variable",
        ) from None


def _arg(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _no_flags(node)
    _require(node, bool(args), "ARG requires at least one argument", "write ARG <name>[=<default>]")
    kvs = []
    for a in args:
        key, eq, value = a.partition("=")
        _require(node, key != "", f"ARG names can not be blank: {a!r}", "write ARG <name>=<value>")
        _check_name(node, "ARG", key)
        kvs.append(KeyValue(key=key, value=value if eq else None))
    return ArgInstruction(location=loc, original=node.original, args=tuple(kvs))


def _env_label(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    kw = node.keyword
    _no_flags(node)
    _require(
        node,
        bool(node.args),
        f"{kw.upper()} requires at least one argument",
        f"write {kw.upper()} <key>=<value>",
    )
    pairs, legacy = _pairs(node)
    for pair in pairs:
        _check_name(node, kw.upper(), pair.key)
    if legacy:
        w.append(
            DockerfileWarning(
                rule="LegacyKeyValueFormat",
                location=loc,
                message=f'"{kw.upper()} key=value" should be used instead of legacy '
                f'"{kw.upper()} key value" format',
            )
        )
    cls = EnvInstruction if kw == "env" else LabelInstruction
    return cls(location=loc, original=node.original, pairs=pairs, legacy=legacy)


def _maintainer(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _no_flags(node)
    _require(
        node,
        len(args) == 1,
        "MAINTAINER requires exactly one argument",
        "write MAINTAINER <name>, or better LABEL org.opencontainers.image.authors=...",
    )
    w.append(
        DockerfileWarning(
            rule="MaintainerDeprecated",
            location=loc,
            message="The MAINTAINER instruction is deprecated, use a label instead",
        )
    )
    return MaintainerInstruction(location=loc, original=node.original, maintainer=args[0])


def _run(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    fl = _Flags(node, _RUN_FLAGS)
    _require(
        node,
        bool(args) or bool(node.heredocs),
        "RUN requires at least one argument",
        'write RUN <command> or RUN ["executable", "arg"]',
    )
    network = fl.get("network")
    if network is not None and network not in ("default", "none", "host"):
        raise _error(node, f"unsupported network mode {network!r}", "use default, none or host")
    security = fl.get("security")
    if security is not None and security not in ("sandbox", "insecure"):
        raise _error(node, f"unsupported security mode {security!r}", "use sandbox or insecure")
    specs = fl.many("mount")
    mounts = tuple([parse_mount(s, location=loc) for s in specs]) if specs else ()
    return RunInstruction(
        location=loc,
        original=node.original,
        command=_command(node, args),
        mounts=mounts,
        mount_specs=specs,
        network=network,
        security=security,
        devices=fl.many("device"),
        heredocs=node.heredocs,
    )


def _cmd(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    _no_flags(node)
    return CmdInstruction(location=loc, original=node.original, command=_command(node, node.args))


def _entrypoint(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    _no_flags(node)
    return EntrypointInstruction(
        location=loc, original=node.original, command=_command(node, node.args)
    )


def _shell(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _no_flags(node)
    _require(
        node,
        bool(args),
        "SHELL requires at least one argument",
        'write SHELL ["/bin/bash", "-c"]',
    )
    _require(
        node,
        node.json,
        "SHELL requires the arguments to be in JSON form",
        'write SHELL ["/bin/bash", "-c"]',
    )
    return ShellInstruction(location=loc, original=node.original, shell=args)


def _copy(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    fl = _Flags(node, _COPY_FLAGS)
    sources, dest, docs = _sources_dest(node, "COPY")
    from_ = fl.get("from")
    _check_from_var(node, from_, "--from")
    return CopyInstruction(
        location=loc,
        original=node.original,
        sources=sources,
        dest=dest,
        from_=from_,
        chown=fl.get("chown"),
        chmod=fl.get("chmod"),
        link=bool(fl.flag("link")),
        parents=bool(fl.flag("parents")),
        excludes=fl.many("exclude"),
        heredocs=docs,
    )


def _add(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    fl = _Flags(node, _ADD_FLAGS)
    sources, dest, docs = _sources_dest(node, "ADD")
    return AddInstruction(
        location=loc,
        original=node.original,
        sources=sources,
        dest=dest,
        chown=fl.get("chown"),
        chmod=fl.get("chmod"),
        link=bool(fl.flag("link")),
        excludes=fl.many("exclude"),
        keep_git_dir=fl.flag("keep-git-dir"),
        checksum=fl.get("checksum"),
        unpack=fl.flag("unpack"),
        heredocs=docs,
    )


def _expose(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _no_flags(node)
    _require(
        node,
        bool(args),
        "EXPOSE requires at least one argument",
        "write EXPOSE <port>[/<proto>]",
    )
    return ExposeInstruction(location=loc, original=node.original, ports=args)


def _volume(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _no_flags(node)
    _require(node, bool(args), "VOLUME requires at least one argument", "write VOLUME /path")
    for v in args:
        _require(
            node,
            v.strip() != "",
            "VOLUME specified can not be an empty string",
            "remove the empty entry",
        )
    return VolumeInstruction(location=loc, original=node.original, volumes=args)


def _one_arg(node: Node) -> str:
    args = node.args
    _no_flags(node)
    if len(args) != 1:
        kw = node.keyword
        raise _error(
            node, f"{kw.upper()} requires exactly one argument", f"write {kw.upper()} <value>"
        )
    return args[0]


def _user(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    return UserInstruction(location=loc, original=node.original, user=_one_arg(node))


def _workdir(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    return WorkdirInstruction(location=loc, original=node.original, path=_one_arg(node))


def _stopsignal(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    return StopsignalInstruction(location=loc, original=node.original, signal=_one_arg(node))


def _onbuild(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    _no_flags(node)
    inner = node.inner
    _require(
        node,
        inner is not None,
        "ONBUILD requires at least one argument",
        "write ONBUILD <INSTRUCTION> ...",
    )
    assert inner is not None
    ik = inner.keyword
    if ik == "onbuild":
        raise _error(
            node,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            "give each trigger its own ONBUILD line",
        )
    if ik in ("from", "maintainer"):
        raise _error(
            node,
            f"{ik.upper()} isn't allowed as an ONBUILD trigger",
            "triggers run after FROM in the downstream build",
        )
    trigger = instruction_from_node(inner, w)
    expr = _ONBUILD_PREFIX.sub("", node.original)
    for h in inner.heredocs:
        expr += "\n" + h.content + h.name
    return OnbuildInstruction(
        location=loc, original=node.original, trigger=trigger, expression=expr
    )


def _unknown(node: Node) -> Instruction:
    kw = node.keyword
    word = node.original.strip().split(None, 1)[0] if node.original.strip() else kw
    near = suggest(word.upper(), KEYWORDS)
    raise _error(
        node,
        f"unknown instruction: {word}",
        f"did you mean {near}?" if near else "see the Dockerfile reference for instructions",
    )


def _healthcheck(node: Node, loc: SourceLocation, w: list[DockerfileWarning]) -> Instruction:
    args = node.args
    _require(
        node,
        bool(args),
        "HEALTHCHECK requires at least one argument",
        "write HEALTHCHECK [options] CMD <command> or HEALTHCHECK NONE",
    )
    typ = args[0].upper()
    rest = args[1:]
    if typ == "NONE":
        _require(node, not rest, "HEALTHCHECK NONE takes no arguments", "write HEALTHCHECK NONE")
        return HealthcheckInstruction(location=loc, original=node.original, test=("NONE",))
    fl = _Flags(node, _HEALTHCHECK_FLAGS)
    if typ != "CMD":
        raise _error(
            node,
            f"Unknown type {args[0]!r} in HEALTHCHECK (try CMD)",
            "write HEALTHCHECK CMD <command> or HEALTHCHECK NONE",
        )
    _require(
        node, bool(rest), "Missing command after HEALTHCHECK CMD", "write HEALTHCHECK CMD <command>"
    )
    test = ("CMD", *rest) if node.json else ("CMD-SHELL", *rest)
    retries = 0
    raw = fl.get("retries")
    if raw:
        try:
            retries = int(raw, 10)
        except ValueError:
            raise _error(node, f"invalid --retries value {raw!r}", "use a whole number") from None
        if retries < 0:
            raise _error(node, f"--retries cannot be negative ({retries})", "use 0 or more")
        if retries > 0x7FFFFFFF:
            raise _error(node, f"--retries value {raw!r} out of range", "use a smaller number")
    return HealthcheckInstruction(
        location=loc,
        original=node.original,
        test=test,
        interval=_interval(node, fl, "interval"),
        timeout=_interval(node, fl, "timeout"),
        start_period=_interval(node, fl, "start-period"),
        start_interval=_interval(node, fl, "start-interval"),
        retries=retries,
    )


_HANDLERS: dict[str, _Handler] = {
    "from": _from,
    "arg": _arg,
    "env": _env_label,
    "label": _env_label,
    "maintainer": _maintainer,
    "run": _run,
    "cmd": _cmd,
    "entrypoint": _entrypoint,
    "shell": _shell,
    "copy": _copy,
    "add": _add,
    "expose": _expose,
    "volume": _volume,
    "user": _user,
    "workdir": _workdir,
    "stopsignal": _stopsignal,
    "healthcheck": _healthcheck,
    "onbuild": _onbuild,
}


# ------------------------------------------------------------------ the file


def parse_dockerfile(text: str | bytes, *, filename: str = "Dockerfile") -> Dockerfile:
    """Parse and validate a Dockerfile into global ARGs and stages."""
    result: ParseResult = parse(text, filename=filename)
    warnings = list(result.warnings)
    meta: list[ArgInstruction] = []
    stages: list[Stage] = []
    current: FromInstruction | None = None
    body: list[Instruction] = []
    names: dict[str, int] = {}

    def close() -> None:
        if current is not None:
            stages.append(
                Stage(
                    index=len(stages),
                    name=current.stage_name,
                    base=current.base,
                    platform=current.platform,
                    instructions=tuple(body),
                    location=current.location,
                    from_instruction=current,
                )
            )

    for node in result.nodes:
        instr = instruction_from_node(node, warnings)
        if isinstance(instr, FromInstruction):
            close()
            current = instr
            body = []
            if instr.stage_name is not None:
                if instr.stage_name in names:
                    warnings.append(
                        DockerfileWarning(
                            rule="DuplicateStageName",
                            location=instr.location,
                            message=f"Duplicate stage name {instr.stage_name!r}",
                        )
                    )
                if instr.stage_name in ("scratch", "context"):
                    warnings.append(
                        DockerfileWarning(
                            rule="ReservedStageName",
                            location=instr.location,
                            message=f"Stage name should not use reserved name {instr.stage_name!r}",
                        )
                    )
                names.setdefault(instr.stage_name, len(stages))
            continue
        if current is None:
            if isinstance(instr, ArgInstruction):
                meta.append(instr)
                continue
            raise _error(
                node,
                f"{node.keyword.upper()} is not allowed before the first FROM "
                "(no build stage in current context)",
                "start the Dockerfile with FROM (only ARG may come before it)",
            )
        body.append(instr)
    close()
    if not stages:
        last = result.nodes[-1]
        raise DockerfileError(
            "the Dockerfile has no FROM instruction (no build stage)",
            hint="add FROM <image> after the global ARGs",
            location=last.location,
        )
    return Dockerfile(
        meta_args=tuple(meta),
        stages=tuple(stages),
        warnings=tuple(warnings),
        escape=result.escape,
        syntax=result.syntax,
        directives=dict(result.directives),
        filename=filename,
    )
