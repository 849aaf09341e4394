"""The Dockerfile frontend: text → typed stages, shell-word expansion, ``.dockerignore``.

Pure: no file, environment, clock or subprocess access. Callers pass text and the
file name used in messages. Three one-way steps, as in BuildKit:

* :func:`parse` — low-level nodes (directives, continuations, heredocs, flags);
  ``ParseResult.dump()`` prints BuildKit's parser-test format;
* :func:`parse_dockerfile` — typed, validated instructions grouped in stages;
* :func:`expand_instruction` — late ``$VAR`` expansion of one instruction against the
  environment at that step (see :class:`StageScope` / :class:`BuildArgs`).

Every error is a :class:`lamina.errors.DockerfileError` with file, line and hint.
"""

from __future__ import annotations

from ._dockerignore import (
    IgnorePattern,
    IgnoreRules,
    dockerignore_candidates,
    files_read_despite_ignore,
    parse_dockerignore,
)
from ._expand import Expanded, expand_heredoc, expand_instruction
from ._instructions import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    Command,
    CopyInstruction,
    Dockerfile,
    EntrypointInstruction,
    EnvInstruction,
    ExecCommand,
    ExposeInstruction,
    FromInstruction,
    HealthcheckInstruction,
    Instruction,
    KeyValue,
    LabelInstruction,
    MaintainerInstruction,
    OnbuildInstruction,
    RunInstruction,
    ShellCommand,
    ShellInstruction,
    Stage,
    StopsignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
    instruction_from_node,
    parse_dockerfile,
    parse_duration,
)
from ._lexer import Expansion, ShellLex, ShellSyntaxError, expand_word, expand_words
from ._mounts import Mount, parse_mount
from ._parser import DockerfileWarning, Heredoc, Node, ParseResult, parse
from ._pmap import PMap
from ._scope import PROXY_ARGS, BuildArgs, MetaScope, StageScope, platform_args

__all__ = [
    "PROXY_ARGS",
    "AddInstruction",
    "ArgInstruction",
    "BuildArgs",
    "CmdInstruction",
    "Command",
    "CopyInstruction",
    "Dockerfile",
    "DockerfileWarning",
    "EntrypointInstruction",
    "EnvInstruction",
    "ExecCommand",
    "Expanded",
    "Expansion",
    "ExposeInstruction",
    "FromInstruction",
    "HealthcheckInstruction",
    "Heredoc",
    "IgnorePattern",
    "IgnoreRules",
    "Instruction",
    "KeyValue",
    "LabelInstruction",
    "MaintainerInstruction",
    "MetaScope",
    "Mount",
    "Node",
    "OnbuildInstruction",
    "PMap",
    "ParseResult",
    "RunInstruction",
    "ShellCommand",
    "ShellInstruction",
    "ShellLex",
    "ShellSyntaxError",
    "Stage",
    "StageScope",
    "StopsignalInstruction",
    "UserInstruction",
    "VolumeInstruction",
    "WorkdirInstruction",
    "dockerignore_candidates",
    "expand_heredoc",
    "expand_instruction",
    "expand_word",
    "expand_words",
    "files_read_despite_ignore",
    "instruction_from_node",
    "parse",
    "parse_dockerfile",
    "parse_dockerignore",
    "parse_duration",
    "parse_mount",
    "platform_args",
]
