"""The kaniko-compatible command line: flags, validation, errors and exit codes."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from lamina.cli import run
from lamina.cli._flags import FlagKind, FlagSpec, format_duration, parse_duration, parse_flags
from lamina.cli._options import ExecutorConfig, executor_config
from lamina.cli._specs import BUILD_FLAGS, WARM_FLAGS
from lamina.errors import EXIT_USAGE, UsageError

# every executor flag of kaniko v1.24 (reference/kaniko.md §1.1)
KANIKO_EXECUTOR_FLAGS = [
    "dockerfile",
    "context",
    "context-sub-path",
    "bucket",
    "destination",
    "snapshot-mode",
    "custom-platform",
    "build-arg",
    "insecure",
    "skip-tls-verify",
    "insecure-pull",
    "skip-tls-verify-pull",
    "push-retry",
    "push-ignore-immutable-tag-errors",
    "image-fs-extract-retry",
    "image-download-retry",
    "kaniko-dir",
    "tar-path",
    "single-snapshot",
    "reproducible",
    "target",
    "no-push",
    "no-push-cache",
    "cache",
    "cache-repo",
    "cache-dir",
    "cache-ttl",
    "cache-copy-layers",
    "cache-run-layers",
    "compressed-caching",
    "compression",
    "compression-level",
    "digest-file",
    "image-name-with-digest-file",
    "image-name-tag-with-digest-file",
    "oci-layout-path",
    "cleanup",
    "insecure-registry",
    "skip-tls-verify-registry",
    "registry-certificate",
    "registry-client-cert",
    "registry-map",
    "registry-mirror",
    "skip-default-registry-fallback",
    "ignore-var-run",
    "ignore-path",
    "label",
    "skip-unused-stages",
    "use-new-run",
    "git",
    "force-build-metadata",
    "skip-push-permission-check",
    "force",
    "verbosity",
    "log-format",
    "log-timestamp",
    "snapshotMode",
    "customPlatform",
    "tarPath",
    "whitelist-var-run",
]

KANIKO_WARMER_FLAGS = [
    "image",
    "cache-dir",
    "force",
    "cache-ttl",
    "dockerfile",
    "build-arg",
    "customPlatform",
    "insecure-pull",
    "skip-tls-verify-pull",
    "insecure-registry",
    "skip-tls-verify-registry",
    "registry-certificate",
    "registry-client-cert",
    "registry-map",
    "registry-mirror",
    "skip-default-registry-fallback",
    "verbosity",
    "log-format",
    "log-timestamp",
]


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def test_every_kaniko_flag_is_known() -> None:
    names = {s.name for s in BUILD_FLAGS}
    assert set(KANIKO_EXECUTOR_FLAGS) <= names
    assert {s.name for s in WARM_FLAGS} >= set(KANIKO_WARMER_FLAGS)
    shorts = {s.short: s.name for s in BUILD_FLAGS if s.short}
    assert shorts == {
        "c": "context",
        "f": "dockerfile",
        "d": "destination",
        "v": "verbosity",
        "b": "bucket",
    }
    warm_shorts = {s.short: s.name for s in WARM_FLAGS if s.short}
    assert warm_shorts == {
        "i": "image",
        "c": "cache-dir",
        "f": "force",
        "d": "dockerfile",
        "v": "verbosity",
    }


def test_help_lists_every_visible_flag_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], {}, prog="executor") == 0
    out = capsys.readouterr().out
    for spec in BUILD_FLAGS:
        if not spec.hidden:
            assert f"--{spec.name}" in out
    assert "--cache-dir string" in out
    assert '(default "/cache")' in out
    assert "(default 336h0m0s)" in out
    assert '(default "/workspace/")' in out


def _parse(argv: list[str]) -> dict[str, object]:
    return parse_flags(argv, BUILD_FLAGS, command="executor").values


def test_pflag_value_forms() -> None:
    v = _parse(["--context=/a", "-f", "D", "-dreg/x:1", "-d=reg/y:2", "--destination", "reg/z"])
    assert v["context"] == "/a"
    assert v["dockerfile"] == "D"
    assert v["destination"] == ["reg/x:1", "reg/y:2", "reg/z"]


def test_pflag_booleans() -> None:
    assert _parse(["--cache"])["cache"] is True
    assert _parse(["--cache=true"])["cache"] is True
    assert _parse(["--cache=false"])["cache"] is False
    assert _parse(["--cache-run-layers=false"])["cache_run_layers"] is False
    assert _parse(["--ignore-var-run=0"])["ignore_var_run"] is False
    with pytest.raises(UsageError, match="not a boolean"):
        _parse(["--cache=yes"])
    # a boolean never consumes the next word
    with pytest.raises(UsageError, match='unexpected argument "false"'):
        _parse(["--cache", "false"])


def test_repeatable_and_key_value_flags() -> None:
    v = _parse(
        [
            "--build-arg",
            "A=1",
            "--build-arg=B",
            "--label",
            "x=y",
            "--registry-map",
            "index.docker.io=m1;index.docker.io=m2",
            "--registry-map=gcr.io=m3",
            "--registry-certificate",
            "r.io=/ca.pem",
            "--insecure-registry",
            "a",
            "--insecure-registry",
            "b",
        ]
    )
    assert v["build_arg"] == ["A=1", "B"]
    assert v["registry_map"] == {"index.docker.io": ["m1", "m2"], "gcr.io": ["m3"]}
    assert v["registry_certificate"] == {"r.io": "/ca.pem"}
    assert v["insecure_registry"] == ["a", "b"]


def test_durations() -> None:
    assert parse_duration("336h") == timedelta(hours=336)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("0") == timedelta(0)
    assert format_duration(timedelta(hours=336)) == "336h0m0s"
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("two weeks")


def test_deprecated_aliases_map_and_warn() -> None:
    parsed = parse_flags(["--tarPath=/o.tar", "--snapshotMode=redo"], BUILD_FLAGS, command="x")
    assert parsed.values["tar_path"] == "/o.tar"
    assert parsed.values["snapshot_mode"] == "redo"
    assert any("--tarPath is deprecated" in w for w in parsed.warnings)
    assert {"tar-path", "snapshot-mode"} <= parsed.given


def test_unknown_flag_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--destinaton=x"], {}, prog="executor") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown flag: --destinaton" in err
    assert "did you mean --destination?" in err
    assert "Traceback" not in err


def test_kaniko_validation_messages(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([f"--context={ctx}"], {}, prog="executor") == EXIT_USAGE
    assert "you must provide --destination, or use --no-push" in capsys.readouterr().err
    assert run(["--context=/x", "--no-push", "--cache=true"], {}, prog="executor") == EXIT_USAGE
    assert (
        "if using cache with --no-push, specify cache repo with --cache-repo"
        in capsys.readouterr().err
    )
    argv = [f"--context={ctx}", "--no-push", "--image-name-with-digest-file=/tmp/x"]
    assert run(argv, {}, prog="executor") == EXIT_USAGE
    assert (
        "you must provide --destination if setting ImageNameDigestFile" in capsys.readouterr().err
    )
    argv = [f"--context={ctx}", "--no-push", "--dockerfile=nope"]
    assert run(argv, {}, prog="executor") == EXIT_USAGE
    assert "please provide a valid path to a Dockerfile" in capsys.readouterr().err


def test_environment_variables(ctx: Path) -> None:
    parsed = parse_flags(
        [f"-c={ctx}", "--build-arg=HOME_ARG", "--build-arg=X=1"], BUILD_FLAGS, command="executor"
    )
    env = {
        "KANIKO_NO_PUSH": "true",
        "KANIKO_REGISTRY_MIRROR": "mirror.local:5000",
        "KANIKO_REGISTRY_MAP": "gcr.io=m1;quay.io=m2",
        "HOME_ARG": "from-env",
        "KANIKO_DIR": "/tmp/kdir",
        "SOURCE_DATE_EPOCH": "1700000000",
        "UPSTREAM_CLIENT_TYPE": "gitlab",
    }
    cfg = executor_config(parsed, env)
    assert cfg.output.no_push is True
    assert cfg.registry.registry_mirrors == ("mirror.local:5000",)
    assert dict(cfg.registry.registry_maps) == {"gcr.io": ("m1",), "quay.io": ("m2",)}
    assert cfg.build.build_args == (("HOME_ARG", "from-env"), ("X", "1"))
    assert str(cfg.build.kaniko_dir) == "/tmp/kdir"
    assert cfg.build.source_date_epoch == 1700000000
    assert cfg.registry.user_agent_suffix == "gitlab"
    assert cfg.build.dockerfile == str((ctx / "Dockerfile").resolve())


def test_flag_beats_environment(ctx: Path) -> None:
    parsed = parse_flags(
        [f"-c={ctx}", "--no-push=false", "-d=r/x", "--kaniko-dir=/k"],
        BUILD_FLAGS,
        command="executor",
    )
    cfg = executor_config(parsed, {"KANIKO_NO_PUSH": "true", "KANIKO_DIR": "/env"})
    assert cfg.output.no_push is False
    assert str(cfg.build.kaniko_dir) == "/k"


def test_unimplemented_flag_is_refused(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([f"-c={ctx}", "--no-push", "--force-build-metadata"], {}, prog="executor") == 2
    err = capsys.readouterr().err
    assert "not supported yet: --force-build-metadata" in err


@pytest.mark.parametrize("flag", ["--use-new-run", "--compressed-caching=false"])
def test_ineffective_kaniko_flag_is_accepted_and_said(
    ctx: Path, flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_main = importlib.import_module("lamina.cli.main")
    seen: list[object] = []

    def fake_build(config: object, env: object) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(cli_main, "_build", fake_build)
    assert run([f"-c={ctx}", "--no-push", flag], {}, prog="executor") == 0
    assert seen
    name = flag.removeprefix("--").split("=")[0]
    assert f"--{name} has no effect" in capsys.readouterr().err


def test_bad_choice(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([f"-c={ctx}", "--no-push", "--snapshot-mode=fast"], {}, prog="executor") == 2
    err = capsys.readouterr().err
    assert 'invalid argument "fast" for --snapshot-mode' in err
    assert "full, redo, time" in err


def test_json_error_format(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(
        [f"-c={ctx}", "--no-push", "--log-format=json", "--force-build-metadata"],
        {},
        prog="executor",
    )
    assert code == 2
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[-1]["code"] == "not-supported"
    assert lines[-1]["level"] == "error"


def test_lamina_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["version"], {}) == 0
    assert capsys.readouterr().out.startswith("lamina ")
    assert run(["bogus"], {}) == EXIT_USAGE
    assert 'unknown command "bogus"' in capsys.readouterr().err
    assert run(["warm", "--help"], {}) == 0
    assert "--image" in capsys.readouterr().out


def test_warmer_requires_an_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([], {}, prog="warmer") == EXIT_USAGE
    assert "at least one image" in capsys.readouterr().err


def test_generic_parser_short_groups() -> None:
    specs = (
        FlagSpec(name="all", kind=FlagKind.BOOL, help="", default=False, short="a"),
        FlagSpec(name="bee", kind=FlagKind.BOOL, help="", default=False, short="b"),
        FlagSpec(name="out", kind=FlagKind.STRING, help="", default="", short="o"),
    )
    v = parse_flags(["-abo", "file"], specs, command="t").values
    assert v == {"all": True, "bee": True, "out": "file"}
    with pytest.raises(UsageError, match="needs an argument"):
        parse_flags(["--out"], specs, command="t")


def test_console_script_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lamina", "build", "--context", str(tmp_path), "--no-push"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr
    assert "Dockerfile" in proc.stderr


def test_bad_registry_map_entries(ctx: Path) -> None:
    with pytest.raises(UsageError, match='invalid argument "nomirror" for --registry-map'):
        parse_flags(["--registry-map=a=b;nomirror"], BUILD_FLAGS, command="executor")
    parsed = parse_flags([f"-c={ctx}", "--no-push"], BUILD_FLAGS, command="executor")
    with pytest.raises(UsageError, match='invalid KANIKO_REGISTRY_MAP entry "=x"'):
        executor_config(parsed, {"KANIKO_REGISTRY_MAP": "a=b;=x"})


def _cfg(argv: list[str], env: dict[str, str] | None = None) -> ExecutorConfig:
    return executor_config(parse_flags(argv, BUILD_FLAGS, command="executor"), env or {})


def test_bucket_flag_is_a_gcs_context() -> None:
    cfg = _cfg(["--bucket=my-bucket", "--no-push", "--context-sub-path=app"])
    assert (cfg.build.context, cfg.build.context_sub_path) == ("gs://my-bucket", "app")
    cfg = _cfg(["-b=gs://other/dir/ctx.tar.gz", "--no-push"])
    assert cfg.build.context == "gs://other/dir/ctx.tar.gz"


def test_remote_contexts_go_to_the_builder(tmp_path: Path) -> None:
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(b"")
    cfg = _cfg([f"--context=tar://{archive}", "--no-push", "--context-sub-path=app/"])
    assert (cfg.build.context, cfg.build.context_sub_path) == (f"tar://{archive}", "app")
    assert cfg.build.dockerfile == "Dockerfile"  # looked up once the context is unpacked
    env = {"GIT_PULL_METHOD": "http", "GIT_USERNAME": "u", "GIT_PASSWORD": "pw"}
    cfg = _cfg(
        ["-c=git://h/r.git#v1", "--no-push", "--git=branch=dev", "--git=single-branch=true",
         "--dockerfile=https://h/Dockerfile"],
        env,
    )  # fmt: skip
    g = cfg.build.git
    assert (g.branch, g.single_branch, g.pull_method, g.username, g.password) == (
        "dev", True, "http", "u", "pw",
    )  # fmt: skip
    assert "pw" not in repr(cfg.build)
    assert cfg.build.dockerfile == "https://h/Dockerfile"
    assert _cfg(["-c=git://h/r.git", "--no-push"], {"GIT_PULL_METHOD": "x"}).build.git.pull_method \
        == "https"  # fmt: skip


def test_context_sub_path_rules(ctx: Path) -> None:
    (ctx / "sub").mkdir()
    (ctx / "sub" / "Dockerfile").write_text("FROM scratch\n")
    cfg = _cfg([f"--context=dir://{ctx}", "--no-push", "--context-sub-path=sub"])
    assert cfg.build.context == str((ctx / "sub").resolve())
    assert cfg.build.dockerfile == str((ctx / "sub" / "Dockerfile").resolve())
    cfg = _cfg([f"--context={ctx}", "--no-push", "--context-sub-path=sub"])  # kaniko ignores it
    assert cfg.build.context == str(ctx.resolve())
    assert cfg.build.context_sub_path == ""
    assert any("--context-sub-path sub is ignored" in w for w in cfg.warnings)
    cfg = _cfg([f"--context={ctx}", "--no-push", "--git=branch=x"])
    assert any("--git is ignored" in w for w in cfg.warnings)
    with pytest.raises(UsageError, match="could leave the build context"):
        _cfg(["--context=tar://stdin", "--no-push", "--context-sub-path=../x"])


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["-c=ftp://h/x"], 2, "unknown build context prefix"),
        (["-c=tar:///nonexistent/ctx.tar.gz"], 3, "/nonexistent/ctx.tar.gz does not exist"),
    ],
)
def test_unusable_contexts_exit_codes(
    argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*argv, "--no-push"], {}, prog="executor") == code
    err = capsys.readouterr().err
    assert text in err
    assert "Traceback" not in err
