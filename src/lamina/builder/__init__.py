"""Build orchestration: plan, per-instruction steps, the build loop.

Entry points (the CLI calls these)::

    result = build_image(build, cache, output, registry=client, runner=None, log=log)
    try:
        write_outputs(result, output, client)   # digest files, OCI layout, tar, push
    finally:
        result.cleanup()                        # delete the build directory

or :func:`build_and_output` for both. :func:`plan_build` / :func:`make_plan`
plan without building (stages needed for ``--target``, in dependency order).
"""

from lamina.builder._build import (
    DUMMY_DESTINATION,
    BuildResult,
    build_and_output,
    build_image,
    plan_build,
    write_outputs,
)
from lamina.builder._plan import BuildPlan, StagePlan, make_plan
from lamina.builder._stage import ImageSource, StageResult, StepEffect
from lamina.builder.options import (
    BuildOptions,
    CacheOptions,
    GitOptions,
    OutputOptions,
    SecretSource,
    SSHSource,
)

__all__ = [
    "DUMMY_DESTINATION",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "CacheOptions",
    "GitOptions",
    "ImageSource",
    "OutputOptions",
    "SSHSource",
    "SecretSource",
    "StagePlan",
    "StageResult",
    "StepEffect",
    "build_and_output",
    "build_image",
    "make_plan",
    "plan_build",
    "write_outputs",
]
