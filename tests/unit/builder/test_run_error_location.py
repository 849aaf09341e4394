"""A sandbox refusal raised without a line gets the RUN's line, its message unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.builder._stage import StageBuilder
from lamina.errors import NotSupportedError, SourceLocation
from lamina.sandbox import InPlaceRunner, RunSpec


def test_not_supported_gets_the_line_and_says_not_supported_yet_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    other = tmp_path / "other"
    root.mkdir()
    other.mkdir()
    # the in-place runner refuses a root filesystem other than its own root, lineless
    spec = RunSpec(rootfs=other, argv=("true",))
    loc = SourceLocation(file="Dockerfile", line=3)
    with pytest.raises(NotSupportedError) as info:
        StageBuilder._run_in(InPlaceRunner(root=root), spec, lambda _: None, loc)  # type: ignore[arg-type]
    assert info.value.location == loc
    assert info.value.message.startswith("not supported yet: --isolation=none with a root")
    assert info.value.message.count("not supported yet") == 1
    assert info.value.hint
