"""``--isolation=auto|namespace|chroot|none``: probing and choosing a runner."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lamina.errors import BuildStepError, UsageError
from lamina.fs import IgnoreList
from lamina.sandbox._detect import detect_container
from lamina.sandbox._runners import (
    ChrootRunner,
    InPlaceRunner,
    NamespaceRunner,
    _init_command,
    remove_tree,
)
from lamina.sandbox._spec import Runner

__all__ = [
    "ISOLATIONS",
    "auto_in_place",
    "detect_container",
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


def probe_namespace(*, user_namespace: bool) -> str | None:
    """Can we make mount+pid namespaces, an overlay and a fresh /proc? ``None`` if so."""
    tmp = tempfile.mkdtemp(prefix="lamina-probe-")
    try:
        return _run_probe("namespace", tmp, "userns" if user_namespace else "root")
    finally:
        remove_tree(Path(tmp))


def probe_chroot() -> str | None:
    """Can we chroot? ``None`` if so, else the reason."""
    return _run_probe("chroot")


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
) -> Runner:
    """The runner for ``--isolation``; ``auto`` probes and logs its choice.

    ``auto`` tries namespaces (as root, then through a user namespace), then
    chroot, then ``none`` -- but only inside a container (see
    :func:`detect_container`) that has kaniko's layout (a ``/kaniko``
    directory, as in the executor image); ``--force`` never makes ``auto``
    pick ``none``. ``--isolation=none`` refuses to run outside a container
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
            reason = probe_namespace(user_namespace=userns)
            if reason is None:
                via = "a user namespace" if userns else "root"
                log(f"isolation: namespace (mount+pid+ipc+uts namespaces via {via})")
                return NamespaceRunner(user_namespace=userns)
            failures.append(f"namespace ({'user namespace' if userns else 'root'}): {reason}")
        if isolation == "namespace":
            raise BuildStepError(
                "--isolation=namespace is not available here: " + "; ".join(failures),
                hint="use --isolation=chroot (root) or --isolation=none (inside a container)",
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

    if root:
        reason = probe_chroot()
        if reason is None:
            log("isolation: chroot (namespaces unavailable: " + "; ".join(failures) + ")")
            return ChrootRunner()
        failures.append(f"chroot: {reason}")
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
    reasons = "; ".join(failures)
    container = detect_container(environ, root=probe_root)
    kaniko = probe_root / "kaniko"
    if (
        container is None
        or not kaniko.is_dir()
        or not installed_at.resolve().is_relative_to(kaniko.resolve())
    ):
        raise BuildStepError(
            "--isolation=auto found no way to isolate RUN steps here ("
            + reasons
            + "), and it picks the in-place mode only inside a container with lamina "
            "installed under /kaniko (the executor image)",
            hint="give the build the rights for user namespaces, run it as root, or run "
            "the executor image; --isolation=none --force builds in this machine's own / "
            f"(it would delete: {_would_delete(probe_root, ignore)})",
        )
    log(f"isolation: none (in place; {container}; namespaces and chroot unavailable: {reasons})")
    return InPlaceRunner()
