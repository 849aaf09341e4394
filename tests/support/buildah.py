"""``buildah`` with a private overlay storage root, as the benchmarks run it (the peer).

The parity suite has its own vfs-based wrapper (tests/parity/harness.py), which also
pushes and inspects; the benchmarks only build and time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BuildahStore"]


@dataclass(frozen=True, slots=True)
class BuildahStore:
    """One storage root (``root``) and its run root (``runroot``, keep the path short)."""

    root: Path
    runroot: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "BUILDAH_ISOLATION": "chroot"}

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            *args,
        ]

    def bud(
        self,
        context: Path,
        *,
        tag: str,
        layers: bool,
        build_args: Mapping[str, str],
        dockerfile: Path | None = None,
    ) -> list[str]:
        """``buildah bud --isolation=chroot`` of ``context`` in OCI format (the command line)."""
        args = [
            "bud",
            "--isolation=chroot",
            "--layers" if layers else "--layers=false",
            "--tls-verify=false",
            "--format",
            "oci",
        ]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        return self.argv(*args, "-t", tag, str(context))

    def remove(self) -> None:
        """Delete every container and image, unmount the overlay storage, remove the root."""
        subprocess.run(self.argv("rm", "--all"), capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(self.root)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
