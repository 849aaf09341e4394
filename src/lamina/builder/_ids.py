"""File owners in rootless builds: host ids on disk, in-image ids in layers.

As root, a file's owner on disk is its owner in the image. Rootless, RUN
steps go through a user namespace: what the sandbox creates as uid N is owned
on the host by the id the namespace maps N to (the invoking user for 0, its
subordinate range for the others), and the builder itself can neither create
files with such owners nor move, read or delete them. :class:`Ownership` is
the one way the builder touches the rootfs and a RUN's upper directory
(COPY/ADD, WORKDIR, reading a RUN's changes, writing layers, merging, clean-up):
:meth:`Ownership.run` runs that work as root of a user namespace with the
sandbox's id map, where a file's owner *is* its in-image owner, so layers
record in-image ids (0 for the invoking user, N for subordinate id N-1) with
no translation, and files only their owner may read are readable.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lamina.fs import apply_upper
from lamina.sandbox import IdMap, NamespaceRunner, Runner

__all__ = ["Ownership"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ownership:
    """How owners are written for one build: directly (root), or through an id map."""

    runner: NamespaceRunner | None = None
    id_map: IdMap | None = None

    @classmethod
    def of(cls, runner: Runner | None) -> Ownership:
        if isinstance(runner, NamespaceRunner):
            id_map = runner.effective_id_map()
            if id_map is not None:
                return cls(runner, id_map)
        return cls()

    @property
    def rootless(self) -> bool:
        return self.id_map is not None

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` where in-image owners are real: here as root, else in the user
        namespace (``fn`` must not log; see ``NamespaceRunner.as_root``)."""
        return fn() if self.runner is None else self.runner.as_root(fn)

    def apply_upper(self, upper: Path, rootfs: Path) -> None:
        """Merge a RUN's overlay upper directory into the rootfs, owners kept."""
        self.run(lambda: apply_upper(upper, rootfs))

    def remove(self, path: Path) -> None:
        """Delete a scratch tree, even one holding files of subordinate owners."""
        if self.runner is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.runner.remove(path)
