"""Late expansion of typed instructions against the environment at that step.

Rules (BuildKit): ADD/COPY sources, dest, ``--chown``, ``--chmod``, ``--checksum``
and unquoted heredoc bodies; ENV/LABEL keys and values; EXPOSE (word-split);
FROM base and ``--platform``; STOPSIGNAL, USER, VOLUME, WORKDIR; ARG defaults;
RUN ``--mount`` option values (not ``from``). Never: RUN/CMD/ENTRYPOINT text,
HEALTHCHECK, SHELL, MAINTAINER, ONBUILD (expanded when the trigger runs),
``--from``, ``--exclude``, ``--network``, ``--security``, ``--link``, ``--parents``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from lamina.errors import DockerfileError

from ._instructions import (
    AddInstruction,
    ArgInstruction,
    CopyInstruction,
    EnvInstruction,
    ExposeInstruction,
    FromInstruction,
    Instruction,
    KeyValue,
    LabelInstruction,
    RunInstruction,
    StopsignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
)
from ._lexer import MAX_EXPANSION, ShellLex, ShellSyntaxError
from ._mounts import parse_mount
from ._parser import Heredoc

__all__ = ["Expanded", "expand_heredoc", "expand_instruction"]

_I = TypeVar("_I", bound=Instruction)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expanded:
    """An instruction with its fields expanded, plus the variables it looked up.

    ``matched`` are the names found in the environment (BuildKit's "matched" set: the
    build args a step depends on); ``unmatched`` are names used but unset.
    """

    instruction: Instruction
    matched: frozenset[str]
    unmatched: frozenset[str]


class _Expander:
    def __init__(self, instr: Instruction, env: Mapping[str, str], escape: str) -> None:
        self.instr = instr
        self.env = env
        self.lex = ShellLex(escape=escape)
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        #: what substitutions may still add to this instruction (all its words)
        self.budget = MAX_EXPANSION

    def _run(self, word: str, lex: ShellLex | None = None) -> tuple[str, tuple[str, ...]]:
        try:
            res = (lex or self.lex).process(word, self.env, budget=self.budget)
            self.budget -= res.substituted
        except ShellSyntaxError as exc:
            raise DockerfileError(
                f"{self.instr.keyword}: {exc.message}",
                hint=exc.hint,
                location=self.instr.location,
            ) from None
        self.matched |= res.matched
        self.unmatched |= res.unmatched
        return res.result, res.words

    def word(self, word: str) -> str:
        return self._run(word)[0]

    def opt(self, word: str | None) -> str | None:
        return None if word is None else self.word(word)

    def words(self, word: str) -> tuple[str, ...]:
        return self._run(word)[1]


_HEREDOC_LEX = {
    "\\": ShellLex(skip_process_quotes=True),
    "`": ShellLex(escape="`", skip_process_quotes=True),
}


def expand_heredoc(heredoc: Heredoc, env: Mapping[str, str], *, escape: str = "\\") -> str:
    """The body of a COPY/ADD heredoc as written to the file (expanded if unquoted)."""
    body = heredoc.body
    if not heredoc.expand:
        return body
    lex = _HEREDOC_LEX.get(escape) or ShellLex(escape=escape, skip_process_quotes=True)
    try:
        return lex.process(body, env).result
    except ShellSyntaxError as exc:
        raise DockerfileError(
            f"heredoc {heredoc.name}: {exc.message}",
            hint="quote the delimiter (<<'EOF') to write the body without expansion",
        ) from None


def _pairs(x: _Expander, pairs: tuple[KeyValue, ...], kw: str) -> tuple[KeyValue, ...]:
    out = []
    for kv in pairs:
        key = x.word(kv.key)
        if not key:
            raise DockerfileError(
                f"{kw} names can not be blank",
                hint=f"check the variable used as a {kw} name",
                location=x.instr.location,
            )
        out.append(KeyValue(key=key, value=x.opt(kv.value)))
    return tuple(out)


def _heredocs(x: _Expander, docs: tuple[Heredoc, ...], escape: str) -> tuple[Heredoc, ...]:
    out = []
    for h in docs:
        if not h.expand:
            out.append(h)
            continue
        lex = _HEREDOC_LEX.get(escape) or ShellLex(escape=escape, skip_process_quotes=True)
        content = x._run(h.body, lex)[0]
        out.append(dataclasses.replace(h, content=content, chomp=False, expand=False))
    return tuple(out)


def expand_instruction(
    instruction: Instruction, env: Mapping[str, str], *, escape: str = "\\"
) -> Expanded:
    """Expand ``instruction`` against ``env`` (the environment *before* the step).

    Returns a new instruction of the same type. COPY/ADD heredocs with unquoted
    delimiters get their expanded body in ``content`` (and ``expand=False``).
    """
    x = _Expander(instruction, env, escape)
    i = instruction
    new: Instruction
    if isinstance(i, FromInstruction):
        new = dataclasses.replace(i, base=x.word(i.base), platform=x.opt(i.platform))
    elif isinstance(i, ArgInstruction):
        new = dataclasses.replace(
            i, args=tuple(KeyValue(key=a.key, value=x.opt(a.value)) for a in i.args)
        )
    elif isinstance(i, EnvInstruction):
        new = dataclasses.replace(i, pairs=_pairs(x, i.pairs, "ENV"))
    elif isinstance(i, LabelInstruction):
        new = dataclasses.replace(i, pairs=_pairs(x, i.pairs, "LABEL"))
    elif isinstance(i, CopyInstruction):
        new = dataclasses.replace(
            i,
            sources=tuple(x.word(s) for s in i.sources),
            dest=x.word(i.dest),
            chown=x.opt(i.chown),
            chmod=x.opt(i.chmod),
            heredocs=_heredocs(x, i.heredocs, escape),
        )
    elif isinstance(i, AddInstruction):
        new = dataclasses.replace(
            i,
            sources=tuple(x.word(s) for s in i.sources),
            dest=x.word(i.dest),
            chown=x.opt(i.chown),
            chmod=x.opt(i.chmod),
            checksum=x.opt(i.checksum),
            heredocs=_heredocs(x, i.heredocs, escape),
        )
    elif isinstance(i, ExposeInstruction):
        new = dataclasses.replace(i, ports=tuple(p for w in i.ports for p in x.words(w)))
    elif isinstance(i, VolumeInstruction):
        vols = tuple(x.word(v) for v in i.volumes)
        if any(not v for v in vols):
            raise DockerfileError(
                "VOLUME specified can not be an empty string",
                hint="check the variables used in VOLUME",
                location=i.location,
            )
        new = dataclasses.replace(i, volumes=vols)
    elif isinstance(i, UserInstruction):
        new = dataclasses.replace(i, user=x.word(i.user))
    elif isinstance(i, WorkdirInstruction):
        new = dataclasses.replace(i, path=x.word(i.path))
    elif isinstance(i, StopsignalInstruction):
        new = dataclasses.replace(i, signal=x.word(i.signal))
    elif isinstance(i, RunInstruction) and i.mount_specs:
        mounts = tuple(
            parse_mount(spec, expander=x.word, location=i.location) for spec in i.mount_specs
        )
        new = dataclasses.replace(i, mounts=mounts)
    else:
        new = i
    return Expanded(instruction=new, matched=frozenset(x.matched), unmatched=frozenset(x.unmatched))
