"""What a RUN runs, without running it: the argv of a here-document RUN and the
secrets a RUN requires. A cache hit needs both (its history and its refusal of a
missing required secret are those of a run), so this module is cheap to import;
the mount machinery (``_mounts``) is loaded only when a step runs.

Here-documents (``dockerfile2llb`` ``dispatchRun``):

* the whole command is one heredoc whose body starts with ``#!``: the body is
  the file ``/dev/pipes/<NAME>`` (mode 0755, mounted read-only) and the
  command is ``SHELL + ["/dev/pipes/<NAME>"]`` (lamina mounts the file at
  ``/.lamina-pipes/<NAME>`` and runs that path; the history shows BuildKit's);
* the whole command is one heredoc without a shebang: ``SHELL + [body]``;
* anything else (``RUN <<A cat > /a && <<B cat > /b``): the shell gets the line
  followed by ``"\\n" + raw body + NAME`` for each heredoc, and handles the
  heredocs itself (quoting, ``<<-`` tab stripping).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from typing import NamedTuple

from lamina.builder.options import SecretSource, SSHSource
from lamina.dockerfile import Heredoc, Mount
from lamina.errors import BuildStepError, SourceLocation

__all__ = [
    "PIPES_DIR",
    "SANDBOX_PIPES_DIR",
    "HeredocCommand",
    "check_secret_mounts",
    "heredoc_command",
    "missing_source",
]

#: where BuildKit mounts a shebang heredoc script (the path in ``history``)
PIPES_DIR = "/dev/pipes"
#: where lamina mounts it: the sandbox gives each step a fresh ``/dev`` tmpfs
#: that hides mount points below it, so ``/dev/pipes`` cannot be a mount target
SANDBOX_PIPES_DIR = "/.lamina-pipes"
_SINGLE = re.compile(r"^\s*(\d*)<<(-?)\s*(\S+)\s*$")


class HeredocCommand(NamedTuple):
    """The argv of a heredoc RUN and, for a shebang script, its file (name, bytes)."""

    argv: tuple[str, ...]
    script: tuple[str, bytes] | None = None


def _unquote(word: str) -> str:
    return word.replace('"', "").replace("'", "")


def heredoc_command(text: str, heredocs: Sequence[Heredoc], shell: Sequence[str]) -> HeredocCommand:
    """``RUN`` shell-form ``text`` with ``heredocs`` → the argv BuildKit runs."""
    m = _SINGLE.match(text)
    if m is not None and len(heredocs) == 1 and _unquote(m.group(3)) == heredocs[0].name:
        doc = heredocs[0]
        data = doc.body  # <<- strips leading tabs; the expand flag is ignored for RUN
        if data.startswith("#!"):
            name = posixpath.basename(doc.name) or "EOF"
            path = posixpath.join(PIPES_DIR, name)
            return HeredocCommand(
                argv=(*shell, path), script=(name, data.encode("utf-8", "surrogateescape"))
            )
        return HeredocCommand(argv=(*shell, data))
    full = text
    for doc in heredocs:
        full += "\n" + doc.content + doc.name
    return HeredocCommand(argv=(*shell, full))


def missing_source(kind: str, mount_id: str, location: SourceLocation) -> BuildStepError:
    """The error for a required secret (``kind`` "secret") or "ssh agent" not given."""
    flag = "--secret id=" if kind == "secret" else "--ssh "
    return BuildStepError(
        f"{kind} {mount_id!r} is required but was not given to the build",
        hint=f"pass {flag}{mount_id}{',src=FILE' if kind == 'secret' else '=SOCKET'}"
        " (or drop required=true)",
        location=location,
    )


def check_secret_mounts(
    mounts: Sequence[Mount],
    secrets: Sequence[SecretSource],
    agents: Sequence[SSHSource],
    location: SourceLocation,
) -> None:
    """Refuse a RUN whose required secrets or ssh agents were not given (before it runs)."""
    have_secrets = {s.id for s in secrets}
    have_agents = {a.id for a in agents}
    for m in mounts:
        if not m.required:
            continue
        if m.type == "secret" and (m.id or "") not in have_secrets:
            raise missing_source("secret", m.id or "", location)
        if m.type == "ssh" and (m.id or "default") not in have_agents:
            raise missing_source("ssh agent", m.id or "default", location)
