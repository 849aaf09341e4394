"""A docker-archive written by lamina is accepted by ``podman load`` (no daemon needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.images import BuiltLayout


def test_podman_loads_our_docker_archive(busybox_layout: BuiltLayout, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "copy",
            f"oci:{busybox_layout.layout}:{busybox_layout.tag}",
            f"docker-archive:{archive}:example.com/lamina/busybox:1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # podman refuses a runroot path longer than 50 characters
    runroot = Path(tempfile.mkdtemp(prefix="lamina-podman-"))
    base = [
        "podman",
        "--root",
        str(tmp_path / "podman-root"),
        "--runroot",
        str(runroot),
        "--storage-driver",
        "vfs",
    ]
    try:
        load = subprocess.run(
            [*base, "load", "-i", str(archive)], capture_output=True, text=True, check=False
        )
        assert load.returncode == 0, load.stderr
        assert "example.com/lamina/busybox:1" in load.stdout
        images = subprocess.run(
            [*base, "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "example.com/lamina/busybox:1" in images.stdout
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
