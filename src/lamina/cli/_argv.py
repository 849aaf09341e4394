"""A pod spec that repeats the executor's own path as its first argument.

Buildkite's documented Kubernetes recipe for kaniko sets ``command:
["/kaniko/executor"]`` and ``args: ["/kaniko/executor", "--dockerfile=…", …]``:
the container runs ``/kaniko/executor /kaniko/executor --dockerfile=…``. The
executor takes no positional arguments, so a first argument naming the program
itself can only be that repetition; it is dropped (with a debug note) instead of
failing the job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["KANIKO_PROGRAMS", "split_own_path"]

#: the paths of kaniko's programs in its images, by command
KANIKO_PROGRAMS = {"executor": "/kaniko/executor", "warmer": "/kaniko/warmer"}


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def split_own_path(
    args: Sequence[str], program: str, invoked_as: str
) -> tuple[list[str], str | None]:
    """``args`` without a leading copy of the program's own path, and that copy (or None).

    The first argument is the program's own path when it is kaniko's path for
    ``program`` (``/kaniko/executor``), the path the program was started as
    (``invoked_as``, i.e. ``argv[0]``), or another name of that same file.
    """
    if not args:
        return list(args), None
    first = args[0]
    if first.startswith("-") or not first:
        return list(args), None
    own = KANIKO_PROGRAMS.get(program)
    if first in (own, invoked_as) or (invoked_as and _same_file(first, invoked_as)):
        return list(args[1:]), first
    return list(args), None
