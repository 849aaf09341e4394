"""Session fixtures of the parity suite: one private buildah storage root."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.parity.harness import Buildah


@pytest.fixture(scope="session")
def buildah_tool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    """buildah with vfs storage under a temp dir (nothing lands in /var/lib/containers)."""
    if shutil.which("buildah") is None or shutil.which("umoci") is None:
        pytest.skip("buildah and umoci are needed for the parity suite")
    root = tmp_path_factory.mktemp("buildah-root")
    runroot = Path(tempfile.mkdtemp(prefix="lp-"))  # short: buildah limits socket paths
    tool = Buildah(root=root, runroot=runroot)
    try:
        yield tool
    finally:
        tool.cleanup()
        shutil.rmtree(runroot, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
