"""Running a RUN step isolated in a root filesystem.

``select_runner(isolation, force=..., log=...)`` gives a :class:`Runner`;
``runner.run(spec, on_output=...)`` runs a :class:`RunSpec` and returns a
:class:`RunResult` (a non-zero exit is a result, not an exception; use
:func:`failure_error` to turn it into the user's error).

``--isolation=auto|namespace|chroot|none`` (default ``auto``)
    ``namespace``
        mount + pid + ipc + uts namespaces, plus a user namespace when not
        root (rootless builds; ``USER`` other than root then needs
        ``/etc/subuid``/``/etc/subgid`` ranges and ``newuidmap``/``newgidmap``).
        The image (or an overlay of it, so changes land in an upper directory;
        staged on a tmpfs and copied back where the upper's filesystem refuses,
        e.g. a container's overlay root) is ``/``, mounted ``nodev``, with a
        fresh ``/proc`` (or the container's, bound, where masks forbid a fresh
        one), a minimal ``nodev`` ``/dev`` (null, zero, full, random, urandom,
        tty bound from the host; shm; pts where allowed) and the host's
        ``/etc/resolv.conf`` and ``/etc/hosts`` mounted read-only (never
        captured in a layer). Host
        network by default; ``RUN --network=none`` gets a private network with
        only ``lo``. Every process the step leaves behind dies with it.
        Supports ``RUN --mount=type=bind|tmpfs``.
    ``chroot``
        for root without namespaces: ``chroot`` into the image. No fresh
        ``/proc``; missing standard ``/dev`` nodes are created for the step and
        removed after. Leftover processes are killed. Read-only bind mounts
        are real mounts in a private mount namespace when
        :attr:`ChrootRunner.can_mount` (CAP_SYS_ADMIN, :func:`probe_mounts`);
        otherwise ``spec.mounts`` must be empty and the builder emulates every
        RUN mount in the rootfs, as for ``none``. No ``--network=none``.
    ``none``
        kaniko's mode for unprivileged Kubernetes pods: the container's own
        ``/`` is the image; the step runs directly in it (new process group,
        leftovers killed). Refused outside a container unless ``--force``
        (:func:`detect_container` lists the hints used; the error names what
        would be deleted). ``InPlaceRunner.root`` tells the builder where the
        one rootfs is; its snapshots skip kaniko's ignore list
        (:func:`lamina.fs.default_ignore_list`). No mounts (the builder
        emulates RUN mounts by copies, ``lamina.builder._mounts``), no
        ``--network=none``. A ``root`` other than ``/`` (tests only) is
        entered with ``chroot``.
    ``auto``
        the first that works of: namespace (as root), namespace (through a
        user namespace), each probed by setting up a real RUN sandbox and
        checking it from inside (:func:`namespace_probe`), then none -- only
        inside a container with lamina under ``/kaniko`` (the executor image),
        never elsewhere, ``--force`` or not. Never chroot (no ``/proc``). The
        choice is logged in one line.

* :class:`NamespaceRunner`, :class:`ChrootRunner`, :class:`InPlaceRunner` are
  the three runners; :class:`IdMap` describes a user namespace's id map (the
  builder needs :meth:`IdMap.to_inside_uid` to turn owners found in a rootless
  upper directory back into image ids).
* :func:`resolve_user` resolves ``USER`` through the image's passwd/group
  files; :func:`host_network_files` reads the host's resolv.conf/hosts for
  ``RunSpec.extra_files``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports

if TYPE_CHECKING:
    from lamina.sandbox._detect import detect_container
    from lamina.sandbox._runners import (
        ChrootRunner,
        IdMap,
        InPlaceRunner,
        NamespaceRunner,
        host_network_files,
        probe_mounts,
    )
    from lamina.sandbox._select import (
        ISOLATIONS,
        NamespaceProbe,
        namespace_probe,
        probe_chroot,
        probe_namespace,
        select_runner,
    )
    from lamina.sandbox._spec import (
        BindMount,
        MountSpec,
        Network,
        Runner,
        RunResult,
        RunSpec,
        TmpfsMount,
        failure_error,
    )
    from lamina.sandbox._users import ResolvedUser, read_image_file, resolve_user

__all__ = [
    "ISOLATIONS",
    "BindMount",
    "ChrootRunner",
    "IdMap",
    "InPlaceRunner",
    "MountSpec",
    "NamespaceProbe",
    "NamespaceRunner",
    "Network",
    "ResolvedUser",
    "RunResult",
    "RunSpec",
    "Runner",
    "TmpfsMount",
    "detect_container",
    "failure_error",
    "host_network_files",
    "namespace_probe",
    "probe_chroot",
    "probe_mounts",
    "probe_namespace",
    "read_image_file",
    "resolve_user",
    "select_runner",
]

#: what each name is imported from, on first use (a build whose steps are all
#: cached never loads the runners)
_EXPORTS = {
    "BindMount": "lamina.sandbox._spec",
    "ChrootRunner": "lamina.sandbox._runners",
    "ISOLATIONS": "lamina.sandbox._select",
    "IdMap": "lamina.sandbox._runners",
    "InPlaceRunner": "lamina.sandbox._runners",
    "MountSpec": "lamina.sandbox._spec",
    "NamespaceProbe": "lamina.sandbox._select",
    "NamespaceRunner": "lamina.sandbox._runners",
    "Network": "lamina.sandbox._spec",
    "ResolvedUser": "lamina.sandbox._users",
    "RunResult": "lamina.sandbox._spec",
    "RunSpec": "lamina.sandbox._spec",
    "Runner": "lamina.sandbox._spec",
    "TmpfsMount": "lamina.sandbox._spec",
    "detect_container": "lamina.sandbox._detect",
    "failure_error": "lamina.sandbox._spec",
    "host_network_files": "lamina.sandbox._runners",
    "namespace_probe": "lamina.sandbox._select",
    "probe_chroot": "lamina.sandbox._select",
    "probe_mounts": "lamina.sandbox._runners",
    "probe_namespace": "lamina.sandbox._select",
    "read_image_file": "lamina.sandbox._users",
    "resolve_user": "lamina.sandbox._users",
    "select_runner": "lamina.sandbox._select",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
