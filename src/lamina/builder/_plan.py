"""The build plan: which stages to build, in which order, from which bases (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lamina.dockerfile import (
    PROXY_ARGS,
    ArgInstruction,
    BuildArgs,
    CopyInstruction,
    Dockerfile,
    MetaScope,
    RunInstruction,
    Stage,
    expand_word,
    parse_dockerfile,
)
from lamina.errors import DockerfileError, UsageError

__all__ = ["BuildPlan", "StagePlan", "make_plan"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePlan:
    """One stage to build.

    ``base`` is the FROM name expanded with the global ARGs; ``base_stage``
    the index of the earlier stage it names (None: an image or ``scratch``);
    ``platform`` the expanded ``FROM --platform`` (None: the build's);
    ``copy_from_stages`` the earlier stages its ``COPY --from`` and
    ``RUN --mount=from=`` read; ``copy_from_images`` the images they name instead.
    """

    stage: Stage
    base: str
    base_stage: int | None
    platform: str | None
    copy_from_stages: tuple[int, ...]
    copy_from_images: tuple[str, ...]

    @property
    def index(self) -> int:
        return self.stage.index

    @property
    def name(self) -> str | None:
        return self.stage.name

    @property
    def display(self) -> str:
        """How messages name the stage: its name, else its index."""
        return self.stage.name if self.stage.name is not None else str(self.stage.index)

    @property
    def is_scratch(self) -> bool:
        return self.base_stage is None and self.base.lower() == "scratch"


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildPlan:
    """All stages (planned), the ones to build in order, the target, the global scope."""

    dockerfile: Dockerfile
    stages: tuple[StagePlan, ...]
    order: tuple[int, ...]
    target: int
    build_args: BuildArgs
    meta: MetaScope
    unused_build_args: tuple[str, ...]

    @property
    def target_stage(self) -> StagePlan:
        return self.stages[self.target]

    def dependents(self, index: int) -> tuple[int, ...]:
        """Stages in the build order that use stage ``index`` (FROM or COPY --from)."""
        return tuple(
            i
            for i in self.order
            if self.stages[i].base_stage == index or index in self.stages[i].copy_from_stages
        )


def _pick_target(df: Dockerfile, target: str) -> int:
    if not target:
        return len(df.stages) - 1
    st = df.stage(target)
    if st is not None:
        return st.index
    names = [s.name if s.name is not None else f"#{s.index}" for s in df.stages]
    raise UsageError(
        f"--target {target!r}: no such stage in {df.filename}",
        hint="the stages are: " + ", ".join(names) + " (a stage is named with FROM ... AS name,"
        " or given by its 0-based index)",
    )


def _copy_froms(df: Dockerfile, stage: Stage) -> tuple[list[int], list[str]]:
    stages: list[int] = []
    images: list[str] = []
    for instr in stage.instructions:
        # (ONBUILD triggers run in images built FROM this one, not here)
        froms: list[str] = []
        if isinstance(instr, CopyInstruction) and instr.from_ is not None:
            froms.append(instr.from_)
        elif isinstance(instr, RunInstruction):
            # RUN --mount=from=... (bind and cache) reads that stage's rootfs too
            froms.extend(m.from_ for m in instr.mounts if m.from_)
        for from_ in froms:
            ref = df.stage_before(from_, stage.index)
            if ref is not None:
                if ref.index not in stages:
                    stages.append(ref.index)
            elif from_ not in images:
                images.append(from_)
    return stages, images


def make_plan(
    text: str | bytes,
    *,
    filename: str = "Dockerfile",
    build_args: Mapping[str, str] | None = None,
    target: str = "",
    build_platform: str = "linux/amd64",
    target_platform: str = "linux/amd64",
    skip_unused_stages: bool = True,
) -> BuildPlan:
    """Parse ``text`` and plan the build of ``target`` (name, index, or "" for the last)."""
    df = parse_dockerfile(text, filename=filename)
    values = dict(build_args or {})
    target_index = _pick_target(df, target)
    args = BuildArgs(
        values=values,
        build_platform=build_platform,
        target_platform=target_platform,
        target_stage=df.stages[target_index].name,
    )
    meta = args.meta_scope(df.meta_args, escape=df.escape)
    planned: list[StagePlan] = []
    for st in df.stages:
        fi = st.from_instruction
        try:
            base = expand_word(st.base, meta.env, escape=df.escape)
            platform = (
                expand_word(st.platform, meta.env, escape=df.escape)
                if st.platform is not None
                else None
            )
        except DockerfileError as exc:
            raise DockerfileError(exc.message, hint=exc.hint, location=fi.location) from None
        if not base:
            raise DockerfileError(
                f"base name ({st.base}) should not be blank",
                hint="the FROM image is empty after expanding the global ARGs; "
                "pass it with --build-arg or give the ARG a default",
                location=fi.location,
            )
        base_stage: int | None = None
        for earlier in planned:  # stage names are case-insensitive (FROM Build after AS build)
            if earlier.name is not None and earlier.name == base.lower():
                base_stage = earlier.index
        copy_stages, copy_images = _copy_froms(df, st)
        planned.append(
            StagePlan(
                stage=st,
                base=base,
                base_stage=base_stage,
                platform=platform or None,
                copy_from_stages=tuple(copy_stages),
                copy_from_images=tuple(copy_images),
            )
        )
    if skip_unused_stages:
        needed: set[int] = set()
        todo = [target_index]
        while todo:
            i = todo.pop()
            if i in needed:
                continue
            needed.add(i)
            sp = planned[i]
            if sp.base_stage is not None:
                todo.append(sp.base_stage)
            todo.extend(sp.copy_from_stages)
        order = tuple(sorted(needed))
    else:
        order = tuple(range(target_index + 1))
    declared = {kv.key for a in df.meta_args for kv in a.args}
    for i in order:
        for instr in df.stages[i].instructions:
            if isinstance(instr, ArgInstruction):
                declared.update(kv.key for kv in instr.args)
    unused = tuple(k for k in values if k not in declared and k not in PROXY_ARGS)
    return BuildPlan(
        dockerfile=df,
        stages=tuple(planned),
        order=order,
        target=target_index,
        build_args=args,
        meta=meta,
        unused_build_args=unused,
    )
