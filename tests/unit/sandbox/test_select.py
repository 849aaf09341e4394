"""Container detection and the --isolation choices that need no probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.errors import UsageError
from lamina.sandbox import InPlaceRunner, detect_container, select_runner


def test_detect_container(tmp_path: Path) -> None:
    assert detect_container({}, root=tmp_path) is None
    assert detect_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, root=tmp_path)
    assert detect_container({"container": "podman"}, root=tmp_path)
    (tmp_path / "proc/1").mkdir(parents=True)
    (tmp_path / "proc/1/cgroup").write_text("0::/kubepods/burstable/pod1\n")
    assert "kubepods" in (detect_container(None, root=tmp_path) or "")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").touch()
    assert detect_container(None, root=tmp_path) == "/run/.containerenv exists"


def test_unknown_isolation() -> None:
    with pytest.raises(UsageError, match="unknown --isolation"):
        select_runner("vm", force=False, log=lambda _: None)


def test_none_with_force_or_in_container() -> None:
    assert isinstance(select_runner("none", force=True, log=lambda _: None), InPlaceRunner)
    runner = select_runner("none", force=False, log=lambda _: None, environ={"container": "oci"})
    assert runner.name == "none"
    assert not runner.captures_upper
