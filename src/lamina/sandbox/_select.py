"""``--isolation=auto|namespace|chroot|none``: probing and choosing a runner."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import BuildStepError, UsageError
from lamina.fs import IgnoreList
from lamina.sandbox._detect import detect_container
from lamina.sandbox._runners import (
    ChrootRunner,
    IdMap,
    InPlaceRunner,
    NamespaceRunner,
    _init_command,
    remove_tree,
)
from lamina.sandbox._spec import Runner

__all__ = [
    "ISOLATIONS",
    "NamespaceProbe",
    "auto_in_place",
    "detect_container",
    "namespace_probe",
    "probe_chroot",
    "probe_namespace",
    "select_runner",
]

ISOLATIONS = ("auto", "namespace", "chroot", "none")
_PROBE_TIMEOUT = 20.0


def _would_delete(root: Path, ignore: IgnoreList | None) -> str:
    """The top-level entries of ``root`` an in-place build would delete, for messages."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return "everything in " + str(root)
    kept = ignore or IgnoreList()
    doomed = [f"/{n}" for n in names if not kept.matches(n)]
    if len(doomed) > 12:
        doomed = [*doomed[:12], f"... ({len(doomed) - 12} more)"]
    return ", ".join(doomed) or "nothing yet"


def _run_probe(*args: str) -> str | None:
    """Run an init probe; ``None`` on success, else the reason it failed."""
    try:
        proc = subprocess.run(
            _init_command("--probe", *args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    return proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceProbe:
    """What the namespace probe found: ``reason`` is ``None`` when a RUN would work.

    ``proc``: ``fresh`` (a /proc of the step's own pid namespace) or ``bound``
    (the container's, bound with its masks); ``upper``: ``direct`` (the
    overlay's upper in the build directory) or ``tmpfs`` (that filesystem
    refused to be an upper; a tmpfs holds the step's changes until copied back).
    """

    user_namespace: bool
    reason: str | None
    proc: str = ""
    upper: str = ""

    def describe(self) -> str:
        via = "a user namespace" if self.user_namespace else "root"
        extras = [via]
        if self.proc == "bound":
            extras.append("the container's /proc")
        if self.upper == "tmpfs":
            extras.append("changes staged on a tmpfs")
        return "namespace (" + ", ".join(extras) + ")"


def namespace_probe(
    *, user_namespace: bool, id_map: IdMap | None = None, scratch: Path | None = None
) -> NamespaceProbe:
    """Set up the namespace sandbox as a RUN would get it and check it from inside.

    The probe runs the real set-up (user namespace with ``id_map``, default
    :meth:`IdMap.for_current_user`; overlay root or its tmpfs fallback; /proc
    fresh or bound; /dev; pivot_root) on a tiny image and checks what a RUN
    needs: the /dev nodes open, /proc/self/status reads, /dev/shm is writable,
    a directory of the image can be replaced, a device node made in the root
    does not open. ``scratch``: where the build keeps its overlay directories
    (the probe's go there, so that their filesystem is the one probed).
    """
    config: dict[str, object] = {"userns": user_namespace}
    if user_namespace:
        id_map = id_map or IdMap.for_current_user()
        config["idmap"] = id_map.payload() if id_map is not None else None
    try:
        tmp = tempfile.mkdtemp(prefix="lamina-probe-", dir=scratch)
    except OSError:
        tmp = tempfile.mkdtemp(prefix="lamina-probe-")
    try:
        proc = subprocess.run(
            _init_command("--probe", "namespace", tmp, json.dumps(config)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return NamespaceProbe(user_namespace=user_namespace, reason=str(exc))
    finally:
        remove_tree(Path(tmp))
    found: dict[str, object] = {}
    for line in proc.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found[str(event.get("event"))] = event
    reason: str | None = None
    probe = found.get("probe")
    error = found.get("error")
    if isinstance(error, dict):
        reason = str(error.get("message"))
    elif not isinstance(probe, dict):
        err = proc.stderr.decode(errors="replace").strip()
        reason = err or f"the probe ended with status {proc.returncode} and no answer"
    elif probe.get("problems"):
        reason = "the RUN environment is broken: " + "; ".join(map(str, probe["problems"]))
    upper = found.get("upper")
    return NamespaceProbe(
        user_namespace=user_namespace,
        reason=reason,
        proc=str(probe.get("proc", "")) if isinstance(probe, dict) else "",
        upper=str(upper.get("kind", "")) if isinstance(upper, dict) else "",
    )


def probe_namespace(*, user_namespace: bool) -> str | None:
    """Would a RUN work in the namespace sandbox? ``None`` if so, else why not."""
    return namespace_probe(user_namespace=user_namespace).reason


def probe_chroot() -> str | None:
    """Can we chroot? ``None`` if so, else the reason."""
    return _run_probe("chroot")


#: what the usual probe failures mean, for the one-line messages (details go to debug)
_MEANINGS = (
    ("uid_map", "mapping root into a user namespace is refused (needs CAP_SETFCAP)"),
    ("gid_map", "mapping root into a user namespace is refused (needs CAP_SETFCAP)"),
    ("setgroups", "user namespaces are refused"),
    ("id mapping", "mapping ids into a user namespace is refused"),
    ("cannot create the namespaces", "creating namespaces is refused (seccomp, or no rights)"),
    ("unshare", "creating namespaces is refused (seccomp, or no rights)"),
    ("mount proc", "mounting /proc is refused"),
    ("overlay", "overlay mounts are refused"),
    ("environment is broken", "the RUN environment is broken"),
)


def _meaning(reason: str, *, root: bool) -> str:
    for needle, meaning in _MEANINGS:
        if needle in reason:
            if not root and "CAP_SETFCAP" in meaning:  # rootless: newuidmap's ranges instead
                return "mapping ids into a user namespace is refused"
            return meaning
    return reason.splitlines()[0][:120] if reason else "unknown failure"


def _refuse_outside_container(
    force: bool,
    environ: Mapping[str, str] | None,
    *,
    why: str = "",
    root: Path = Path("/"),
    ignore: IgnoreList | None = None,
) -> None:
    if force or detect_container(environ, root=root) is not None:
        return
    raise UsageError(
        "refusing to run with --isolation=none outside a container: every base image is "
        f"unpacked over {root} after deleting what is there (here: "
        f"{_would_delete(root, ignore)}; only the ignore list is kept)" + why,
        hint="run lamina inside a container (the executor image), choose another "
        "--isolation, or pass --force if this machine is disposable",
    )


def select_runner(
    isolation: str,
    *,
    force: bool,
    log: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
    probe_root: Path = Path("/"),
    ignore: IgnoreList | None = None,
    debug: Callable[[str], None] = lambda _: None,
    scratch: Path | None = None,
) -> Runner:
    """The runner for ``--isolation``; ``auto`` probes and logs its choice in one line.

    ``auto`` tries namespaces (as root, then through a user namespace), each
    probed by setting up a RUN's sandbox and checking it from inside
    (:func:`namespace_probe`), then ``none`` -- but only inside a container
    (see :func:`detect_container`) that has kaniko's layout (a ``/kaniko``
    directory, as in the executor image); ``--force`` never makes ``auto``
    pick ``none``. ``auto`` never picks ``chroot``: its RUN gets no ``/proc``
    and no ``/dev`` nodes without CAP_MKNOD. ``debug`` gets the probes' details;
    ``scratch`` is where the build keeps its overlay directories (probed there).
    ``--isolation=none`` refuses to run outside a container
    unless ``force``. ``probe_root`` is where the container hints are looked
    for and ``ignore`` the paths an in-place build keeps (for the message).
    """
    if isolation not in ISOLATIONS:
        raise UsageError(
            f"unknown --isolation value {isolation!r}", hint="use one of: " + ", ".join(ISOLATIONS)
        )
    root = os.geteuid() == 0
    failures: list[str] = []
    if isolation in ("namespace", "auto"):
        for userns in (False, True) if root else (True,):
            found = namespace_probe(user_namespace=userns, scratch=scratch)
            where = "user namespace" if userns else "as root"
            if found.reason is None:
                log(f"isolation: {found.describe()}")
                return NamespaceRunner(user_namespace=userns)
            debug(f"isolation probe: namespace ({where}): {found.reason}")
            failures.append(f"namespace ({where}): {_meaning(found.reason, root=root)}")
        if isolation == "namespace":
            raise BuildStepError(
                "--isolation=namespace is not available here: " + "; ".join(failures),
                hint="run with --debug for the probe's details; use --isolation=chroot (root, "
                "trusted Dockerfiles only) or --isolation=none (inside a container)",
            )
    if isolation == "chroot":
        reason = probe_chroot()
        if reason is not None:
            raise BuildStepError(
                f"--isolation=chroot is not available here: {reason}",
                hint="chroot needs root (CAP_SYS_CHROOT); use --isolation=none in a container",
            )
        return ChrootRunner()
    if isolation == "none":
        _refuse_outside_container(force, environ, root=probe_root, ignore=ignore)
        return InPlaceRunner()
    # auto never picks chroot: its RUN has no /proc, and no /dev without CAP_MKNOD
    return auto_in_place(failures, environ=environ, probe_root=probe_root, ignore=ignore, log=log)


def auto_in_place(
    failures: Sequence[str],
    *,
    environ: Mapping[str, str] | None,
    probe_root: Path,
    ignore: IgnoreList | None,
    log: Callable[[str], None],
    installed_at: Path = Path(__file__),
) -> InPlaceRunner:
    """``auto``'s last resort after ``failures``: in place, only in a kaniko-like container.

    Needs a container hint (:func:`detect_container`), a ``kaniko`` directory
    in ``probe_root`` and lamina itself installed under it (``installed_at``:
    this module's file), which is what the executor image looks like; a
    machine, or a CI container that merely has a ``/kaniko`` directory, never
    gets its ``/`` emptied by ``auto``. Otherwise raises, whatever ``--force`` says.
    """
    reasons = "; ".join(failures) or "no isolation was tried"
    container = detect_container(environ, root=probe_root)
    kaniko = probe_root / "kaniko"
    missing = ""
    if container is None:
        missing = "this is not a container (no container hint found)"
    elif not kaniko.is_dir():
        missing = f"there is no {kaniko} directory"
    elif not installed_at.resolve().is_relative_to(kaniko.resolve()):
        missing = f"lamina is not installed under {kaniko}"
    if missing:
        raise BuildStepError(
            f"--isolation=auto found no way to isolate RUN steps here ({reasons}), and "
            f"the in-place mode is only chosen in the executor image: {missing}",
            hint="allow user namespaces (a pod with seccomp unconfined, or the capabilities "
            "SETUID, SETGID, SETFCAP and SYS_ADMIN), pass --isolation=chroot as root for "
            "trusted Dockerfiles, or run the executor image; --isolation=none --force builds "
            f"in this machine's own / (it would delete: {_would_delete(probe_root, ignore)})",
        )
    last = failures[-1].split(": ", 1)[-1] if failures else "no namespaces"
    log(f"isolation: none (in place, as kaniko; {last})")
    return InPlaceRunner()
