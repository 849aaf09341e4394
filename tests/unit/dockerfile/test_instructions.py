"""Typed instructions: flags, mounts, validation errors with file/line/hint, stages."""

from __future__ import annotations

import pytest

from lamina.dockerfile import (
    AddInstruction,
    CmdInstruction,
    CopyInstruction,
    EnvInstruction,
    ExecCommand,
    HealthcheckInstruction,
    OnbuildInstruction,
    RunInstruction,
    ShellCommand,
    parse_dockerfile,
    parse_duration,
    parse_mount,
)
from lamina.errors import DockerfileError


def one(text: str) -> object:
    df = parse_dockerfile("FROM scratch\n" + text)
    return df.stages[0].instructions[0]


def err(text: str, filename: str = "Dockerfile") -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(text, filename=filename)
    return info.value


def test_stages_meta_args_and_lookup() -> None:
    df = parse_dockerfile(
        "ARG BASE=alpine\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN make\n"
        "from scratch\ncopy --from=build /out /\n"
    )
    assert [a.args[0].key for a in df.meta_args] == ["BASE"]
    b, final = df.stages
    assert (b.index, b.name, b.base, b.platform) == (0, "build", "${BASE}", "$BUILDPLATFORM")
    assert (final.name, final.base) == (None, "scratch")
    assert df.stage("BUILD") is b
    assert df.stage("0") is b
    assert df.stage(1) is final
    assert df.stage("nope") is None
    assert df.stage_before("build", 1) is b
    with pytest.raises(DockerfileError, match="defined before"):
        df.stage_before("1", 1)


def test_run_forms_and_flags() -> None:
    run = one('RUN --network=none --security=insecure ["echo", "hi"]\n')
    assert isinstance(run, RunInstruction)
    assert run.command == ExecCommand(argv=("echo", "hi"))
    assert (run.network, run.security) == ("none", "insecure")
    run2 = one("RUN echo $HOME  'x'\n")
    assert isinstance(run2, RunInstruction)
    assert run2.command == ShellCommand(text="echo $HOME  'x'")
    assert run2.original == "RUN echo $HOME  'x'"
    assert run2.location.line == 2


def test_mount_defaults() -> None:
    run = one(
        "RUN --mount=type=cache,target=/root/.cache "
        "--mount=type=secret,id=tok --mount=type=ssh --mount=target=/src,rw "
        "--mount=type=tmpfs,dst=/t,size=64m make\n"
    )
    assert isinstance(run, RunInstruction)
    cache, secret, ssh, bind, tmpfs = run.mounts
    assert (cache.type, cache.sharing, cache.mode, cache.uid, cache.gid, cache.readonly) == (
        "cache", "shared", 0o755, 0, 0, False,
    )  # fmt: skip
    assert cache.id == "/root/.cache"
    assert (secret.id, secret.target, secret.mode, secret.required) == (
        "tok", "/run/secrets/tok", 0o400, False,
    )  # fmt: skip
    assert (ssh.id, ssh.mode, ssh.target) == ("default", 0o600, None)
    assert (bind.type, bind.target, bind.readonly) == ("bind", "/src", False)
    assert (tmpfs.size, tmpfs.readonly) == (64 << 20, False)


def test_mount_options() -> None:
    m = parse_mount("type=secret,src=aws,env=AWS,required")
    assert (m.id, m.env, m.target, m.required) == ("aws", "AWS", None, True)
    m = parse_mount("type=secret,target=/x/key")
    assert (m.id, m.target) == ("key", "/x/key")
    m = parse_mount("type=cache,target=cache,sharing=LOCKED,mode=0700,uid=1000,ro")
    assert (m.id, m.sharing, m.mode, m.uid, m.readonly) == ("cache", "locked", 0o700, 1000, True)
    m = parse_mount("type=bind,from=builder,source=/out,target=/in")
    assert (m.from_, m.source, m.readonly) == ("builder", "/out", True)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("type=cahce,target=/x", "did you mean type=cache"),
        ("type=bind,target=/x,mode=0755", "mode not allowed"),
        ("type=bind,target=/x,sharing=shared", "sharing"),
        ("type=cache,target=/x,sharing=wild", "sharing value"),
        ("type=secret,id=a,source=b", "both source and id"),
        ("type=secret,id=a,from=x", "should not have a from"),
        ("type=ssh,source=x", "should not have a source"),
        ("type=bind,target=/x,required", "required"),
        ("type=bind,targt=/x", "did you mean target"),
        ("type=cache,target=/x,mode=999", "invalid mode"),
        ("type=tmpfs,target=/x,size=lots", "invalid size"),
        ("type=bind,from=$X,target=/x", "variable expansion"),
        ("type=bind,target", "key=value"),
    ],
)
def test_mount_errors(spec: str, needle: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse_mount(spec)
    assert needle in str(info.value) + (info.value.hint or "")
    assert info.value.hint


def test_copy_flags_and_heredoc_sources() -> None:
    c = one(
        "COPY --from=build --chown=app:app --chmod=0644 --link --parents "
        "--exclude=*.tmp --exclude=.git a b/ /dest/\n"
    )
    assert isinstance(c, CopyInstruction)
    assert (c.from_, c.chown, c.chmod, c.link, c.parents) == (
        "build", "app:app", "0644", True, True,
    )  # fmt: skip
    assert c.excludes == ("*.tmp", ".git")
    assert (c.sources, c.dest) == (("a", "b/"), "/dest/")
    h = one("COPY <<one.txt <<'two' /dest/\nhello $X\none.txt\nraw $X\ntwo\n")
    assert isinstance(h, CopyInstruction)
    assert h.sources == ()
    assert [(d.name, d.expand, d.content) for d in h.heredocs] == [
        ("one.txt", True, "hello $X\n"),
        ("two", False, "raw $X\n"),
    ]
    j = one('COPY ["a b", "/c d/"]\n')
    assert isinstance(j, CopyInstruction)
    assert (j.sources, j.dest) == (("a b",), "/c d/")


def test_add_flags() -> None:
    a = one("ADD --checksum=sha256:abc --keep-git-dir=false --unpack=true http://x/y.tgz /y\n")
    assert isinstance(a, AddInstruction)
    assert (a.checksum, a.keep_git_dir, a.unpack, a.link) == ("sha256:abc", False, True, False)


def test_env_forms_and_warnings() -> None:
    df = parse_dockerfile('FROM x\nENV a=1 b="2 3"\nENV PATH /usr/bin:/bin\nMAINTAINER me\n')
    e1, e2, _ = df.stages[0].instructions
    assert isinstance(e1, EnvInstruction)
    assert isinstance(e2, EnvInstruction)
    assert [(p.key, p.value) for p in e1.pairs] == [("a", "1"), ("b", '"2 3"')]
    assert e2.legacy
    assert [(p.key, p.value) for p in e2.pairs] == [("PATH", "/usr/bin:/bin")]
    rules = [w.rule for w in df.warnings]
    assert rules == ["LegacyKeyValueFormat", "MaintainerDeprecated"]
    assert df.warnings[0].location is not None
    assert df.warnings[0].location.line == 3


def test_healthcheck() -> None:
    h = one("HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl -f http://x/\n")
    assert isinstance(h, HealthcheckInstruction)
    assert h.test == ("CMD-SHELL", "curl -f http://x/")
    assert (h.interval, h.timeout, h.start_period, h.retries) == (90 * 10**9, 5 * 10**8, 0, 3)
    h2 = one('HEALTHCHECK cmd ["a", "b"]\n')
    assert isinstance(h2, HealthcheckInstruction)
    assert h2.test == ("CMD", "a", "b")
    h3 = one("HEALTHCHECK --interval=5s NONE\n")
    assert isinstance(h3, HealthcheckInstruction)
    assert h3.test == ("NONE",)


def test_parse_duration() -> None:
    assert parse_duration("0") == 0
    assert parse_duration("1.5h") == 5400 * 10**9
    assert parse_duration("2m3s4ms") == 123_004_000_000
    for bad in ("", "5", "1x", "s", "1.s.", "--1s"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(bad)


def test_onbuild_trigger() -> None:
    o = one("ONBUILD COPY --chown=1 . /app\n")
    assert isinstance(o, OnbuildInstruction)
    assert isinstance(o.trigger, CopyInstruction)
    assert o.expression == "COPY --chown=1 . /app"
    o2 = one("ONBUILD RUN <<EOF\necho hi\nEOF\n")
    assert isinstance(o2, OnbuildInstruction)
    assert o2.expression == "RUN <<EOF\necho hi\nEOF"


def test_cmd_exec_and_empty() -> None:
    c = one("CMD []\n")
    assert isinstance(c, CmdInstruction)
    assert c.command == ExecCommand(argv=())


@pytest.mark.parametrize(
    ("text", "line", "message", "hint"),
    [
        ("FROM x\nCOPY onlyone\n", 2, "COPY requires at least two arguments", "<dest>"),
        ("FROM x\nRUNN echo\n", 2, "unknown instruction: RUNN", "did you mean RUN?"),
        ("FROM x\nCOPY --chwon=1 a b\n", 2, "unknown flag: --chwon", "did you mean --chown?"),
        ("FROM x\nCOPY --link=maybe a b\n", 2, "expecting boolean value", "true"),
        ("FROM x\nCOPY --link= a b\n", 2, "missing a value", "--link"),
        ("FROM x\nCOPY --from a b\n", 2, "missing a value on flag: --from", "--from=<value>"),
        ("FROM x\nCOPY --from=a --from=b a b\n", 2, "duplicate flag", "once"),
        ("FROM x\nCOPY --from=$X a b\n", 2, "variable expansion", "stage"),
        ("FROM x\nCOPY a <<EOF\nx\nEOF\n", 2, "heredoc as a destination", "destination"),
        ('FROM x\nCMD --doit ["a"]\n', 2, "unknown flag: --doit", "no flags"),
        ("FROM x\nRUN --network=wifi true\n", 2, "unsupported network mode", "host"),
        ("FROM x\nSHELL /bin/bash -c\n", 2, "JSON form", "SHELL"),
        ("FROM x\nUSER\n", 2, "USER requires exactly one argument", "USER"),
        ("FROM x\nHEALTHCHECK --interval=5 CMD true\n", 2, "invalid duration", "30s"),
        ("FROM x\nHEALTHCHECK --interval=10us CMD true\n", 2, "less than 1ms", "1ms"),
        ("FROM x\nHEALTHCHECK --retries=-1 CMD true\n", 2, "negative", "0"),
        ("FROM x\nHEALTHCHECK NONE x\n", 2, "takes no arguments", "NONE"),
        ("FROM x\nHEALTHCHECK CONNECT x\n", 2, "Unknown type", "CMD"),
        ("FROM x\nHEALTHCHECK CMD\n", 2, "Missing command", "CMD"),
        ("FROM x\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD ONBUILD", "trigger"),
        ("FROM x\nONBUILD FROM y\n", 2, "isn't allowed as an ONBUILD trigger", "FROM"),
        ("FROM x AS 1st\n", 1, "invalid name for build stage", "[a-z]"),
        ("FROM x y z\n", 1, "must be 'AS'", "AS"),
        ("FROM\n", 1, "FROM requires either one or three arguments", "FROM"),
        ("RUN x\nFROM y\n", 1, "before the first FROM", "FROM"),
        ("ARG x\n", 1, "no FROM", "FROM"),
        ('FROM x\nVOLUME [""]\n', 2, "empty string", "empty"),
        ("FROM x\nRUN\n", 2, "RUN requires at least one argument", "RUN"),
    ],
)
def test_validation_errors(text: str, line: int, message: str, hint: str) -> None:
    e = err(text, filename="ctx/Dockerfile.dev")
    assert message in e.message
    assert e.hint is not None
    assert hint in e.hint
    assert e.location is not None
    assert (e.location.file, e.location.line) == ("ctx/Dockerfile.dev", line)
    assert e.location.text == text.split("\n")[line - 1]
    assert str(e).startswith(f"ctx/Dockerfile.dev:{line}: ")
    assert "hint: " in e.render()
