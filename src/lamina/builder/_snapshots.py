"""RUN snapshots without an overlay (``--isolation=none`` and ``chroot``).

One :class:`~lamina.fs.TreeWatch` per stage root, set up at the stage's
first RUN (one full scan, an inotify watch on every directory) and kept until
the stage ends: each later snapshot costs what changed since the last one,
not the size of the rootfs. Where inotify cannot follow, the watch does full
scans, as before.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lamina.fs import Change, IgnoreList, SnapshotMode, TreeWatch

__all__ = ["RunSnapshots"]


def _covers(step: IgnoreList | None, watched: IgnoreList | None) -> bool:
    """Whether the step's ignore list leaves out at least what the watch leaves out."""
    if watched is None:
        return True
    return (
        step is not None
        and watched.paths <= step.paths
        and set(watched.prefixes) <= set(step.prefixes)
    )


class RunSnapshots:
    """The snapshots of one stage's RUN steps: :meth:`before`, the step, :meth:`after`."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._watch: TreeWatch | None = None
        self._before = 0.0

    def before(self, root: Path, ignore: IgnoreList | None) -> None:
        """The state the step's changes are measured from (``ignore``: the stage's list)."""
        started = time.perf_counter()
        watch = self._watch
        if watch is None or watch.root != root or not _covers(ignore, watch.ignore):
            self.close()
            watch = self._watch = TreeWatch(root, ignore, debug=self.log.debug)
        watch.mark()
        self._before = time.perf_counter() - started

    def after(self, *, mode: SnapshotMode, ignore: IgnoreList | None) -> list[Change]:
        """What the step changed, leaving out ``ignore`` (the stage's list, plus the step's)."""
        watch = self._watch
        assert watch is not None, "RunSnapshots.after without before"
        started = time.perf_counter()
        changes = watch.changes(mode=mode, ignore=ignore)
        self.log.debug(
            "snapshot: %d changed paths, %.4f s before the step + %.4f s after (%s)",
            len(changes),
            self._before,
            time.perf_counter() - started,
            "inotify" if watch.watching else "full scans",
        )
        return changes

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
