"""Are we inside a container? (``--isolation=auto|none`` decide with this; cheap to
import, so a build whose steps are all cached can ask without loading the runners.)"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lamina.fs import mount_points_from_mountinfo

__all__ = ["detect_container"]

_CGROUP_MARKERS = ("docker", "kubepods", "containerd", "libpod", "lxc", "crio", "buildkit")
_RUNTIME_MOUNTS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def detect_container(
    environ: Mapping[str, str] | None = None, *, root: Path = Path("/")
) -> str | None:
    """Why we believe we run inside a container, or ``None``.

    The hints, in order: the ``KUBERNETES_SERVICE_HOST`` and ``container``
    variables of ``environ`` (the caller passes its environment; the library
    does not read it), the files ``/.dockerenv`` (Docker) and
    ``/run/.containerenv`` (Podman), a container runtime's name in
    ``/proc/1/cgroup`` (cgroup v1, or v2 without a cgroup namespace), and
    ``/etc/hostname``, ``/etc/hosts`` or ``/etc/resolv.conf`` being mount
    points in ``/proc/self/mountinfo`` (every runtime bind-mounts them; a
    host never does). All paths are read below ``root``.
    """
    env = environ or {}
    if env.get("KUBERNETES_SERVICE_HOST"):
        return "KUBERNETES_SERVICE_HOST is set"
    if env.get("container"):
        return f"container={env['container']} is set"
    for marker in (".dockerenv", "run/.containerenv"):
        if (root / marker).exists():
            return f"/{marker} exists"
    try:
        cgroup = (root / "proc/1/cgroup").read_text(errors="replace")
    except OSError:
        cgroup = ""
    for marker in _CGROUP_MARKERS:
        if marker in cgroup:
            return f"/proc/1/cgroup mentions {marker}"
    try:
        mountinfo = (root / "proc/self/mountinfo").read_text(errors="replace")
    except OSError:
        mountinfo = ""
    points = set(mount_points_from_mountinfo(mountinfo))
    for marker in _RUNTIME_MOUNTS:
        if marker in points:
            return f"{marker} is a mount point"
    return None
