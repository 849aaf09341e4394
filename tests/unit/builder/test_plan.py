"""The build plan: targets, stage dependencies, ARG scoping of FROM."""

from __future__ import annotations

import pytest

from lamina.builder import make_plan
from lamina.errors import DockerfileError, UsageError

MULTI = """\
ARG BASE=alpine
FROM ${BASE} AS base
RUN true
FROM base AS build
RUN make
FROM scratch AS unrelated
COPY x /x
FROM busybox AS final
COPY --from=build /out /out
COPY --from=0 /etc /etc
"""


def test_default_target_is_the_last_stage_and_unused_stages_are_skipped() -> None:
    plan = make_plan(MULTI)
    assert plan.target == 3
    assert plan.order == (0, 1, 3)
    final = plan.stages[3]
    assert final.copy_from_stages == (1, 0)
    assert plan.stages[1].base_stage == 0
    assert plan.stages[0].base == "alpine"
    assert plan.dependents(0) == (1, 3)


def test_all_earlier_stages_without_skip_unused() -> None:
    assert make_plan(MULTI, skip_unused_stages=False).order == (0, 1, 2, 3)


@pytest.mark.parametrize(("target", "index"), [("build", 1), ("BUILD", 1), ("2", 2), ("0", 0)])
def test_target_by_name_or_index(target: str, index: int) -> None:
    plan = make_plan(MULTI, target=target)
    assert plan.target == index
    assert plan.order[-1] == index


def test_unknown_target_lists_the_stages() -> None:
    with pytest.raises(UsageError) as info:
        make_plan(MULTI, target="nope")
    assert "nope" in info.value.message
    assert info.value.hint is not None
    for name in ("base", "build", "unrelated", "final"):
        assert name in info.value.hint


def test_build_arg_overrides_global_arg_in_from() -> None:
    plan = make_plan(MULTI, build_args={"BASE": "debian:12", "UNUSED": "1"})
    assert plan.stages[0].base == "debian:12"
    assert plan.unused_build_args == ("UNUSED",)


def test_proxy_args_are_never_reported_unused() -> None:
    plan = make_plan("FROM scratch\n", build_args={"HTTP_PROXY": "http://p"})
    assert plan.unused_build_args == ()


def test_blank_base_is_an_error_with_the_line() -> None:
    with pytest.raises(DockerfileError) as info:
        make_plan("ARG B\nFROM ${B}\n")
    assert info.value.location is not None
    assert info.value.location.line == 2


def test_copy_from_a_later_stage_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="defined before"):
        make_plan("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\n")


def test_copy_from_an_image_and_from_platform() -> None:
    plan = make_plan(
        "ARG P=linux/arm64\nFROM --platform=$P scratch\nCOPY --from=busybox:1 /bin/sh /sh\n"
    )
    sp = plan.stages[0]
    assert sp.copy_from_images == ("busybox:1",)
    assert sp.platform == "linux/arm64"
    assert sp.is_scratch


def test_from_a_stage_name_is_case_insensitive_like_kaniko() -> None:
    # BuildKit looks FROM up case-sensitively (and then fails on the image "BUG_stage");
    # kaniko and buildah take the stage, and so does lamina (issue 12 #19)
    plan = make_plan("FROM scratch AS BUG_stage\nRUN true\nFROM BUG_stage\n")
    assert plan.stages[0].name == "bug_stage"
    assert plan.stages[1].base_stage == 0
    assert plan.order == (0, 1)
    assert plan.dependents(0) == (1,)
