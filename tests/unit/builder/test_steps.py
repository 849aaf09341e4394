"""Instruction handlers through metadata-only builds FROM scratch (no runner, no network)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, BuildResult, CacheOptions, OutputOptions, build_image
from lamina.errors import DockerfileError
from lamina.oci import ContainerConfig

LOG = logging.getLogger("lamina.tests.steps")


def _build(tmp_path: Path, text: str, **options: object) -> BuildResult:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    build = BuildOptions(
        dockerfile=str(ctx / "Dockerfile"),
        context=str(ctx),
        kaniko_dir=tmp_path / "k",
        **options,  # type: ignore[arg-type]
    )
    result = build_image(
        build, CacheOptions(), OutputOptions(), registry=None, runner=None, log=LOG
    )
    result.cleanup()
    return result


def _config(tmp_path: Path, text: str, **options: object) -> ContainerConfig:
    return _build(tmp_path, text, **options).image.config().config


def test_scratch_defaults(tmp_path: Path) -> None:
    c = _config(tmp_path, "FROM scratch\n")
    assert c.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    assert c.working_dir == "/"


def test_env_replaces_in_place_and_expands_from_the_previous_step(tmp_path: Path) -> None:
    c = _config(tmp_path, "FROM scratch\nENV A=1 B=2\nENV A=x$B C=${A}\nENV PATH=/bin:$PATH\n")
    assert c.env == (
        "PATH=/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "A=x2",
        "B=2",
        "C=1",
    )


def test_args_scope_and_never_reach_the_config(tmp_path: Path) -> None:
    text = "ARG V=global\nFROM scratch\nARG V\nARG W=$V-w\nLABEL v=$V w=$W\n"
    result = _build(tmp_path, text, build_args=(("W", "cli"),))
    cfg = result.image.config()
    assert cfg.config.labels == {"v": "global", "w": "cli"}
    assert not any(e.startswith(("V=", "W=")) for e in cfg.config.env)
    assert [h.created_by for h in cfg.history] == [
        "ARG V=global",
        "ARG W=cli",
        "LABEL v=global w=cli",
    ]
    assert all(h.empty_layer for h in cfg.history)
    assert all(h.comment == "buildkit.dockerfile.v0" for h in cfg.history)


def test_entrypoint_resets_an_inherited_cmd_but_not_one_from_this_stage(tmp_path: Path) -> None:
    text = (
        'FROM scratch AS base\nCMD ["base-cmd"]\n'
        'FROM base AS a\nENTRYPOINT ["ep"]\n'
        'FROM base AS b\nCMD ["own"]\nENTRYPOINT ["ep"]\n'
    )
    a = _config(tmp_path / "a", text, target="a")
    assert a.entrypoint == ("ep",)
    assert a.cmd is None
    b = _config(tmp_path / "b", text, target="b")
    assert b.cmd == ("own",)


def test_shell_form_uses_shell(tmp_path: Path) -> None:
    result = _build(tmp_path, 'FROM scratch\nSHELL ["/bin/bash", "-eu", "-c"]\nCMD echo hi\n')
    cfg = result.image.config()
    assert cfg.config.cmd == ("/bin/bash", "-eu", "-c", "echo hi")
    assert cfg.config.shell == ("/bin/bash", "-eu", "-c")
    assert [h.created_by for h in cfg.history] == [
        "SHELL [/bin/bash -eu -c]",
        'CMD ["/bin/bash" "-eu" "-c" "echo hi"]',
    ]


def test_metadata_instructions(tmp_path: Path) -> None:
    text = """\
FROM scratch
MAINTAINER someone <a@b>
USER app:staff
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data", "/logs"]
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/
ONBUILD RUN echo triggered
"""
    result = _build(tmp_path, text)
    cfg = result.image.config()
    c = cfg.config
    assert cfg.author == "someone <a@b>"
    assert c.user == "app:staff"
    assert c.exposed_ports == ("53/udp", "80/tcp", "8000/tcp", "8001/tcp")
    assert c.volumes == ("/data", "/logs")
    assert c.stop_signal == "SIGINT"
    assert c.healthcheck == {
        "Test": ["CMD-SHELL", "curl -f http://localhost/"],
        "Interval": 30_000_000_000,
        "Retries": 3,
    }
    assert c.on_build == ("RUN echo triggered",)
    created_by = [h.created_by for h in cfg.history]
    assert created_by == [
        "MAINTAINER someone <a@b>",
        "USER app:staff",
        "EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]",
        "VOLUME [/data /logs]",
        "VOLUME [/data]",
        "STOPSIGNAL SIGINT",
        "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:0s "
        "StartPeriod:0s StartInterval:0s Retries:3}",
    ]  # ONBUILD writes no history entry (BuildKit)


def test_onbuild_triggers_run_in_the_child_and_are_cleared(tmp_path: Path) -> None:
    text = "FROM scratch AS base\nONBUILD LABEL from=trigger\nFROM base\nLABEL own=1\n"
    cfg = _build(tmp_path, text).image.config()
    assert cfg.config.labels == {"from": "trigger", "own": "1"}
    assert cfg.config.on_build is None


def test_label_flag_and_reproducible_created(tmp_path: Path) -> None:
    result = _build(tmp_path, "FROM scratch\nLABEL a=1\n", labels=(("b", "2"),), reproducible=True)
    cfg = result.image.config()
    assert cfg.config.labels == {"a": "1", "b": "2"}
    assert cfg.created == "1970-01-01T00:00:00Z"
    assert all(h.created == "1970-01-01T00:00:00Z" for h in cfg.history)


def test_custom_platform_sets_os_and_arch(tmp_path: Path) -> None:
    cfg = _build(tmp_path, "FROM scratch\n", platform="linux/arm64").image.config()
    assert (cfg.os, cfg.architecture) == ("linux", "arm64")


def test_bad_stopsignal_and_unsupported_flags(tmp_path: Path) -> None:
    with pytest.raises(DockerfileError) as info:
        _build(tmp_path / "a", "FROM scratch\n\nSTOPSIGNAL NOPE\n")
    assert info.value.location is not None
    assert info.value.location.line == 3
    ctx = tmp_path / "b"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    options = BuildOptions(
        dockerfile=str(ctx / "Dockerfile"), context=str(ctx), kaniko_dir=tmp_path / "k"
    )
    # --cache is supported now: a scratch build with an empty directory cache just works
    result = build_image(
        options,
        CacheOptions(enabled=True, dir=tmp_path / "cache"),
        OutputOptions(),
        registry=None,
        runner=None,
        log=LOG,
    )
    result.cleanup()
