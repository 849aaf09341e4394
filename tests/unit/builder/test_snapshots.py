"""RunSnapshots: one watch per stage root, kept between RUN steps (lamina.builder._snapshots)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lamina.builder._snapshots import RunSnapshots
from lamina.fs import Change, IgnoreList

LOG = logging.getLogger("lamina.tests.snapshots")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "a").write_text("a")
    (r / "vol").mkdir()
    return r


def test_the_watch_is_kept_between_steps_and_logged(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snaps = RunSnapshots(LOG)
    base = IgnoreList.of(["/proc"])
    try:
        snaps.before(root, base)
        watch = snaps._watch
        assert watch is not None
        (root / "etc" / "b").write_text("b")
        with caplog.at_level(logging.DEBUG, logger=LOG.name):
            assert snaps.after(mode="full", ignore=base) == [
                Change.add("etc"),
                Change.add("etc/b"),
            ]
        assert "snapshot: 2 changed paths" in caplog.text
        assert "(inotify)" in caplog.text
        # a VOLUME later in the stage: a longer list, the same watch, its paths left out
        more = base.with_paths("/vol")
        snaps.before(root, more)
        assert snaps._watch is watch
        (root / "vol" / "x").write_text("x")
        (root / "etc" / "a").write_text("A")
        assert snaps.after(mode="full", ignore=more) == [Change.add("etc/a")]
        # another root (or a list that leaves out less): a new watch
        other = root.parent / "other"
        other.mkdir()
        snaps.before(other, None)
        assert snaps._watch is not watch
        assert not watch.watching  # the old one is closed
    finally:
        snaps.close()
    assert snaps._watch is None
