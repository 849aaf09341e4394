"""``--isolation=none``: building in the container's own root, as kaniko does.

There is one root filesystem (the runner's ``root``, ``/`` in real builds),
so every stage that needs files starts by deleting everything in it that is
not on the ignore list and unpacking its base image there. Snapshots scan the
root with the ignore list, so ignored paths (the kaniko dir, every mount
point, ``/var/run``, ``--ignore-path``, VOLUMEs) never reach a layer, and the
layers are the ones a private-rootfs build makes for the same Dockerfile.

A finished stage whose files a later stage reads is kept in two ways: ``FROM
<stage>`` unpacks the stage's image (its base layers plus the layers the
build wrote), and ``COPY --from=<stage>`` reads a private copy made the same
way under the build directory (kaniko saves ``/kaniko/<n>`` before the wipe).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lamina.builder._plan import BuildPlan
from lamina.builder.options import BuildOptions
from lamina.dockerfile import RunInstruction
from lamina.errors import FilesystemError
from lamina.fs import IgnoreList, default_ignore_list, read_mountinfo, remove_path
from lamina.sandbox import InPlaceRunner, Runner, select_runner

__all__ = ["InPlace", "in_image_path", "plan_runs", "prepare_inplace", "wipe_root"]

#: the only environment variables the container detection looks at
CONTAINER_ENV_VARS = ("container", "KUBERNETES_SERVICE_HOST")


@dataclass(frozen=True, slots=True, kw_only=True)
class InPlace:
    """Where an in-place build keeps its one rootfs and what it must leave alone."""

    root: Path
    ignore: IgnoreList


def plan_runs(plan: BuildPlan) -> bool:
    """Whether a stage that is built has a RUN instruction (ONBUILD triggers aside)."""
    return any(
        isinstance(instr, RunInstruction)
        for index in plan.order
        for instr in plan.stages[index].stage.instructions
    )


def in_image_path(root: Path, host: Path) -> PurePosixPath | None:
    """``host`` as a path inside the image rooted at ``root``, if it lies below it."""
    try:
        rel = Path(os.path.abspath(host)).relative_to(os.path.abspath(root))
    except ValueError:
        return None
    return PurePosixPath("/", *rel.parts)


def ignore_list_for(
    build: BuildOptions, root: Path, keep: Sequence[Path], *, mountinfo: str
) -> IgnoreList:
    """kaniko's ignore list, plus the host paths in ``keep`` that lie inside ``root``.

    ``keep`` is what the build itself reads or writes (the build directory,
    the context, the Dockerfile): deleting it would break the build.
    """
    ignore = default_ignore_list(
        mountinfo=mountinfo,
        kaniko_dir=in_image_path(root, build.kaniko_dir) or "/kaniko",
        ignore_var_run=build.ignore_var_run,
        extra_paths=build.ignore_paths,
    )
    inside = [p for p in (in_image_path(root, k) for k in keep) if p is not None]
    return ignore.with_paths(*inside)


def prepare_inplace(
    build: BuildOptions,
    plan: BuildPlan,
    runner: Runner | None,
    *,
    keep: Sequence[Path],
    environ: Mapping[str, str],
    log: logging.Logger,
) -> tuple[Runner | None, InPlace | None]:
    """Choose the runner early when it decides where the rootfs lives.

    ``--isolation=none`` always builds in place (kaniko builds in ``/`` even
    without RUN); ``auto`` picks a runner up front only when a RUN step will
    need one (a build without RUN keeps private rootfs directories). An
    injected :class:`~lamina.sandbox.InPlaceRunner` builds in its ``root``.
    """
    if runner is None and (
        build.isolation == "none" or (build.isolation == "auto" and plan_runs(plan))
    ):
        preview = ignore_list_for(build, Path("/"), keep, mountinfo=read_mountinfo())
        runner = select_runner(
            build.isolation,
            force=build.force,
            log=log.info,
            environ=environ,
            ignore=preview,
            debug=log.debug,
            scratch=build.kaniko_dir if build.kaniko_dir.is_dir() else None,
        )
    if not isinstance(runner, InPlaceRunner):
        if build.ignore_paths or not build.ignore_var_run:
            log.debug(
                "--ignore-path and --ignore-var-run only matter with --isolation=none: "
                "the other modes build in a private rootfs"
            )
        return runner, None
    ignore = ignore_list_for(build, runner.root, keep, mountinfo=read_mountinfo())
    log.info(
        "building in place in %s (kept: %s)",
        runner.root,
        ", ".join(sorted(ignore.paths | set(ignore.prefixes))),
    )
    return runner, InPlace(root=runner.root, ignore=ignore)


def wipe_root(inplace: InPlace) -> None:
    """Delete everything in the root except the ignore list (kaniko's DeleteFilesystem)."""
    root = inplace.root
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise FilesystemError(
            f"cannot list {root} to empty it: {exc.strerror}",
            hint="--isolation=none needs to own the container's root filesystem",
        ) from exc
    for name in names:
        if inplace.ignore.matches(name):
            continue
        remove_path(root, root / name, inplace.ignore)
