"""``history[].created_by`` strings, written the way BuildKit writes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "BUILDKIT_COMMENT",
    "go_duration",
    "go_list",
    "go_quoted_list",
    "healthcheck_created_by",
    "run_created_by",
]

#: ``comment`` of every history entry BuildKit's Dockerfile frontend writes
BUILDKIT_COMMENT = "buildkit.dockerfile.v0"


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_quoted_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["/bin/sh" "-c" "echo hi"]``."""
    return "[" + " ".join(_go_quote(i) for i in items) + "]"


def go_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a ``[]string``: ``[/bin/bash -c]``."""
    return "[" + " ".join(items) + "]"


def run_created_by(argv: Sequence[str], args: Sequence[tuple[str, str]]) -> str:
    """``RUN [|N k=v …] argv # buildkit`` (``args``: the stage's ARGs, declaration order)."""
    prefix = ""
    if args:
        prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args) + " "
    return f"RUN {prefix}{' '.join(argv)} # buildkit"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` for a non-negative number of nanoseconds."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(ns / 1_000) + "µs"
    if ns < 1_000_000_000:
        return _trim(ns / 1_000_000) + "ms"
    total_s = ns / 1_000_000_000
    hours = int(total_s // 3600)
    minutes = int((total_s - hours * 3600) // 60)
    seconds = total_s - hours * 3600 - minutes * 60
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _trim(seconds) + "s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def healthcheck_created_by(hc: Mapping[str, object]) -> str:
    """``HEALTHCHECK {Test:[CMD-SHELL x] Interval:30s Timeout:0s … Retries:0}`` (Go ``%+v``)."""
    test = hc.get("Test")
    items = [str(t) for t in test] if isinstance(test, list | tuple) else []

    def dur(key: str) -> str:
        v = hc.get(key, 0)
        return go_duration(v if isinstance(v, int) else 0)

    retries = hc.get("Retries", 0)
    return (
        f"HEALTHCHECK {{Test:{go_list(items)} Interval:{dur('Interval')} "
        f"Timeout:{dur('Timeout')} StartPeriod:{dur('StartPeriod')} "
        f"StartInterval:{dur('StartInterval')} Retries:{retries}}}"
    )
