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

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports

if TYPE_CHECKING:
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

#: what each name is imported from, on first use: ``lamina.builder.options`` (the CLI's
#: flags) must not pull the whole builder in
_EXPORTS = {
    "BuildOptions": "lamina.builder.options",
    "BuildPlan": "lamina.builder._plan",
    "BuildResult": "lamina.builder._build",
    "CacheOptions": "lamina.builder.options",
    "DUMMY_DESTINATION": "lamina.builder._build",
    "GitOptions": "lamina.builder.options",
    "ImageSource": "lamina.builder._stage",
    "OutputOptions": "lamina.builder.options",
    "SSHSource": "lamina.builder.options",
    "SecretSource": "lamina.builder.options",
    "StagePlan": "lamina.builder._plan",
    "StageResult": "lamina.builder._stage",
    "StepEffect": "lamina.builder._stage",
    "build_and_output": "lamina.builder._build",
    "build_image": "lamina.builder._build",
    "make_plan": "lamina.builder._plan",
    "plan_build": "lamina.builder._build",
    "write_outputs": "lamina.builder._build",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)
