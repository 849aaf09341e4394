"""A small command-line parser with Go pflag semantics.

kaniko's users pass flags the way spf13/pflag accepts them, and their CI
scripts must keep working unchanged:

* ``--flag=value`` and ``--flag value`` for valued flags;
* booleans as ``--flag``, ``--flag=true`` or ``--flag=false`` (``--flag false``
  does *not* consume ``false``: a boolean only takes a value after ``=``);
* short forms ``-c DIR``, ``-cDIR`` and ``-c=DIR``; short booleans can be grouped;
* repeatable flags append one value per occurrence;
* ``--`` ends flag parsing.

The parser is table driven (:class:`FlagSpec`) and returns plain values; turning
them into option records is the caller's job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from lamina.errors import UsageError

__all__ = [
    "FlagKind",
    "FlagSpec",
    "ParsedFlags",
    "extend_key_values",
    "format_duration",
    "parse_bool",
    "parse_duration",
    "parse_flags",
    "render_flag_help",
]


class FlagKind(Enum):
    BOOL = "bool"
    STRING = "string"
    INT = "int"
    DURATION = "duration"
    #: repeatable, one value per occurrence (kaniko's ``multiArg``)
    MULTI = "multi-arg type"
    #: repeatable ``key=value`` pairs into a mapping (kaniko's ``keyValueArg``)
    KEY_VALUE = "key-value-arg type"
    #: repeatable ``k=v;k2=v2`` into a mapping of lists (kaniko's ``multiKeyMultiValueArg``)
    MULTI_KEY_VALUE = "multi-key-multi-value-arg type"


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagSpec:
    name: str
    kind: FlagKind
    help: str
    default: Any = None
    short: str | None = None
    #: the canonical flag this one is a deprecated alias of
    deprecated_alias_of: str | None = None
    hidden: bool = False
    #: extra validation/conversion of each raw value (raise UsageError)
    check: Callable[[str], object] | None = None

    @property
    def dest(self) -> str:
        return (self.deprecated_alias_of or self.name).replace("-", "_")


@dataclass(slots=True)
class ParsedFlags:
    values: dict[str, Any]
    #: canonical names of the flags given on the command line
    given: set[str] = field(default_factory=set)
    positional: list[str] = field(default_factory=list)
    #: deprecation warnings to log once logging is configured
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, dest: str) -> Any:
        return self.values[dest]


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str, *, flag: str = "") -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    where = f" for --{flag}" if flag else ""
    raise UsageError(
        f'invalid argument "{text}"{where}: not a boolean',
        hint="use true or false, e.g. --cache=true",
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str, *, flag: str = "") -> timedelta:
    """Go's ``time.ParseDuration`` (e.g. ``336h``, ``1h30m``, ``90s``, ``0``)."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return timedelta(0)
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        where = f" for --{flag}" if flag else ""
        raise UsageError(
            f'invalid argument "{text}"{where}: not a duration',
            hint="use Go duration syntax such as 336h, 90m or 1h30m",
        )
    return timedelta(seconds=sign * total)


def format_duration(value: timedelta) -> str:
    """Go's ``Duration.String`` for whole seconds (``336h0m0s``)."""
    secs = int(value.total_seconds())
    if secs == 0:
        return "0s"
    sign = "-" if secs < 0 else ""
    secs = abs(secs)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


def _initial(spec: FlagSpec) -> Any:
    if spec.kind is FlagKind.MULTI:
        return list(spec.default or [])
    if spec.kind is FlagKind.KEY_VALUE:
        return dict(spec.default or {})
    if spec.kind is FlagKind.MULTI_KEY_VALUE:
        return {k: list(v) for k, v in (spec.default or {}).items()}
    return spec.default


def _split_key_value(raw: str, name: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise UsageError(
            f'invalid argument "{raw}" for --{name}: expected key=value',
            hint=f"write --{name}=KEY=VALUE, once per pair",
        )
    return key, value


def _store(values: dict[str, Any], spec: FlagSpec, name: str, raw: str) -> None:
    if spec.check is not None:
        spec.check(raw)
    dest = spec.dest
    kind = spec.kind
    if kind is FlagKind.BOOL:
        values[dest] = parse_bool(raw, flag=name)
    elif kind is FlagKind.STRING:
        values[dest] = raw
    elif kind is FlagKind.INT:
        try:
            values[dest] = int(raw, 0)
        except ValueError:
            raise UsageError(
                f'invalid argument "{raw}" for --{name}: not an integer',
                hint=f"give --{name} a whole number",
            ) from None
    elif kind is FlagKind.DURATION:
        values[dest] = parse_duration(raw, flag=name)
    elif kind is FlagKind.MULTI:
        values[dest].append(raw)
    elif kind is FlagKind.KEY_VALUE:
        key, value = _split_key_value(raw, name)
        values[dest][key] = value
    else:  # MULTI_KEY_VALUE: "k=v;k2=v2"
        extend_key_values(
            values[dest],
            raw,
            lambda part: UsageError(
                f'invalid argument "{part}" for --{name}: expected key=value',
                hint=f"write --{name}=KEY=VALUE, once per pair",
            ),
        )


def extend_key_values(
    target: dict[str, list[str]], raw: str, error: Callable[[str], UsageError]
) -> None:
    """Add kaniko's ``k=v;k2=v2`` pairs to ``target``; ``error(part)`` for a bad part."""
    for part in raw.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise error(part)
        target.setdefault(key, []).append(value)


def _closest(name: str, candidates: Iterable[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return match[0] if match else None


def parse_flags(
    argv: Sequence[str],
    specs: Sequence[FlagSpec],
    *,
    command: str,
    allow_positional: bool = False,
) -> ParsedFlags:
    """Parse ``argv`` (without the program name) against ``specs``."""
    by_long: dict[str, FlagSpec] = {s.name: s for s in specs}
    by_short: dict[str, FlagSpec] = {s.short: s for s in specs if s.short}
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.deprecated_alias_of is None:
            values[spec.dest] = _initial(spec)
    result = ParsedFlags(values=values)

    def unknown(flag: str) -> UsageError:
        near = _closest(flag.lstrip("-"), by_long) if flag.startswith("--") else None
        hint = (
            f"did you mean --{near}?" if near else f"run '{command} --help' for the list of flags"
        )
        return UsageError(f"unknown flag: {flag}", hint=hint)

    def record(spec: FlagSpec, name: str) -> None:
        canonical = spec.deprecated_alias_of or spec.name
        result.given.add(canonical)
        if spec.deprecated_alias_of is not None:
            result.warnings.append(
                f"Flag --{spec.name} is deprecated. Use: --{spec.deprecated_alias_of}"
            )

    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            result.positional.extend(args[i:])
            break
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            found = by_long.get(name)
            if found is None:
                raise unknown("--" + name)
            spec = found
            if spec.kind is FlagKind.BOOL:
                _store(values, spec, name, inline if eq else "true")
            elif eq:
                _store(values, spec, name, inline)
            else:
                if i >= len(args):
                    raise UsageError(
                        f"flag needs an argument: --{name}",
                        hint=f"write --{name}=VALUE or --{name} VALUE",
                    )
                _store(values, spec, name, args[i])
                i += 1
            record(spec, name)
        elif arg.startswith("-") and len(arg) > 1:
            shorts = arg[1:]
            while shorts:
                letter, shorts = shorts[0], shorts[1:]
                short_spec = by_short.get(letter)
                if short_spec is None:
                    raise UsageError(
                        f"unknown shorthand flag: '{letter}' in {arg}",
                        hint=f"run '{command} --help' for the list of flags",
                    )
                spec = short_spec
                if spec.kind is FlagKind.BOOL:
                    if shorts.startswith("="):
                        _store(values, spec, spec.name, shorts[1:])
                        shorts = ""
                    else:
                        _store(values, spec, spec.name, "true")
                else:
                    if shorts.startswith("="):
                        raw = shorts[1:]
                    elif shorts:
                        raw = shorts
                    elif i < len(args):
                        raw = args[i]
                        i += 1
                    else:
                        raise UsageError(
                            f"flag needs an argument: '{letter}' in -{letter}",
                            hint=f"write -{letter} VALUE",
                        )
                    _store(values, spec, spec.name, raw)
                    shorts = ""
                record(spec, spec.name)
        else:
            if not allow_positional:
                raise UsageError(
                    f'unexpected argument "{arg}" for "{command}"',
                    hint="every option of this command is a --flag; "
                    f"a boolean takes its value after '=' (e.g. --cache=true), "
                    f"run '{command} --help' for the list",
                )
            result.positional.append(arg)
    return result


def _type_word(spec: FlagSpec) -> str:
    if spec.kind is FlagKind.BOOL:
        return ""
    return str(spec.kind.value)


def _default_text(spec: FlagSpec) -> str:
    d = spec.default
    if spec.kind is FlagKind.BOOL:
        return " (default true)" if d else ""
    if spec.kind is FlagKind.STRING:
        return f' (default "{d}")' if d else ""
    if spec.kind is FlagKind.INT:
        return f" (default {d})" if d else ""
    if spec.kind is FlagKind.DURATION:
        return f" (default {format_duration(d)})" if d is not None else ""
    if isinstance(d, Mapping) and d:
        return f" (default {dict(d)})"
    if isinstance(d, list) and d:
        return f" (default {d})"
    return ""


def render_flag_help(specs: Sequence[FlagSpec]) -> str:
    """cobra-style flag listing, sorted by long name, each with its default."""
    rows: list[tuple[str, str]] = []
    for spec in sorted(specs, key=lambda s: s.name.lower()):
        if spec.hidden:
            continue
        short = f"-{spec.short}, " if spec.short else "    "
        type_word = _type_word(spec)
        left = f"  {short}--{spec.name}" + (f" {type_word}" if type_word else "")
        rows.append((left, spec.help + _default_text(spec)))
    width = max(len(left) for left, _ in rows) + 3
    return "\n".join(left.ljust(width) + text for left, text in rows)
