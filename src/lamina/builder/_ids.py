"""File owners in rootless builds: host ids on disk, in-image ids in layers.

As root, a file's owner on disk is its owner in the image. Rootless, RUN
steps go through a user namespace: what the sandbox creates as uid N is owned
on the host by the id the namespace maps N to (the invoking user for 0, its
subordinate range for the others), and the builder itself can only create
files owned by the invoking user. :class:`Ownership` is the one place that
knows the map: the layer writer turns host owners back into image owners with
:attr:`Ownership.layer_owner`, and the owners COPY/ADD/WORKDIR set are applied
through :meth:`Ownership.batch` (inside the user namespace when needed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lamina.fs import OwnerMap, apply_upper
from lamina.sandbox import IdMap, NamespaceRunner, Runner

__all__ = ["ChownBatch", "Ownership"]


@dataclass(slots=True)
class ChownBatch:
    """Owners to set, collected while files are written and applied at once."""

    items: list[tuple[Path, int, int]] = field(default_factory=list)

    def __call__(self, path: Path, uid: int, gid: int) -> None:
        self.items.append((path, uid, gid))


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

    @property
    def layer_owner(self) -> OwnerMap | None:
        """Host owner -> image owner for the layer writer (None: the same)."""
        return self.id_map.image_owner if self.id_map is not None else None

    @contextmanager
    def batch(self) -> Iterator[ChownBatch | None]:
        """A chown hook for the copier: None (``os.lchown``) as root, else a batch
        applied through the sandbox when the block ends without an error."""
        if self.runner is None:
            yield None
            return
        batch = ChownBatch()
        yield batch
        self.runner.chown(batch.items)

    def chown(self, path: Path, uid: int, gid: int) -> None:
        """Give ``path`` the in-image owner ``uid:gid``."""
        if self.runner is None:
            os.lchown(path, uid, gid)
        else:
            self.runner.chown([(path, uid, gid)])

    def apply_upper(self, upper: Path, rootfs: Path) -> None:
        """Merge a RUN's overlay upper directory into the rootfs, owners kept."""
        if self.runner is None:
            apply_upper(upper, rootfs)
        else:
            self.runner.apply_upper(upper, rootfs)

    def remove(self, path: Path) -> None:
        """Delete a scratch tree, even one holding files of subordinate owners."""
        if self.runner is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.runner.remove(path)
