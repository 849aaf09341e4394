"""Expansion modifiers, per-instruction expansion rules and ARG scoping."""

from __future__ import annotations

import pytest

from lamina.dockerfile import (
    ArgInstruction as Arg,
)
from lamina.dockerfile import (
    BuildArgs,
    CopyInstruction,
    EnvInstruction,
    ExposeInstruction,
    RunInstruction,
    ShellLex,
    ShellSyntaxError,
    StageScope,
    expand_heredoc,
    expand_instruction,
    expand_word,
    expand_words,
    parse_dockerfile,
)
from lamina.errors import DockerfileError

ENV = {"v": "foo.tar.gz", "p": "/usr/local/bin", "e": "", "s": "a b  c"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${v#*.}", "tar.gz"),
        ("${v##*.}", "gz"),
        ("${v%.*}", "foo.tar"),
        ("${v%%.*}", "foo"),
        ("${v/o/0}", "f0o.tar.gz"),
        ("${v//o/0}", "f00.tar.gz"),
        ("${v/.*/}", "foo"),
        ("${p#/usr}", "/local/bin"),
        ("${p%/*}", "/usr/local"),
        ("${v#x}", "foo.tar.gz"),
        ("${v/#f/X}", "foo.tar.gz"),
        ("${v#\\*}", "foo.tar.gz"),
        ("${v?}", "foo.tar.gz"),
        ("${e-def}", ""),
        ("${e:-def}", "def"),
        ("${e+alt}", "alt"),
        ("${e:+alt}", ""),
        ("${unset-x}", "x"),
        ("\\$v", "$v"),
        ("'$v'", "$v"),
        ('"$s"', "a b  c"),
    ],
)
def test_modifiers(word: str, expected: str) -> None:
    assert expand_word(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${unset:?must be set}", "unset: must be set"),
        ("${unset?}", "unset: is not allowed to be unset"),
        ("${e:?}", "e: is not allowed to be empty"),
        ("${v:#x}", "unsupported modifier"),
        ("${v:%x}", "unsupported modifier"),
        ("${v:=x}", "unsupported modifier"),
        ("${v/x}", "missing '/'"),
    ],
)
def test_modifier_errors(word: str, message: str) -> None:
    with pytest.raises(ShellSyntaxError, match="failed to process") as info:
        expand_word(word, ENV)
    assert message in info.value.message


def test_words_and_escape_token() -> None:
    assert expand_words("$s d", ENV) == ["a", "b", "c", "d"]
    assert expand_word("a`$v", ENV, escape="`") == "a$v"
    assert expand_word("a\\b", ENV, escape="`") == "a\\b"


def test_matched_and_unmatched() -> None:
    res = ShellLex().process("$v ${nope:-x} ${e}", ENV)
    assert res.matched == {"v", "e"}
    assert res.unmatched == {"nope"}


def _instr(text: str) -> object:
    return parse_dockerfile("FROM x\n" + text).stages[0].instructions[0]


def test_env_snapshot_semantics_and_quotes() -> None:
    i = _instr('ENV a=1 b=$a c="x y" $k=v\n')
    assert isinstance(i, EnvInstruction)
    ex = expand_instruction(i, {"a": "old", "k": "key"})
    out = ex.instruction
    assert isinstance(out, EnvInstruction)
    assert [(p.key, p.value) for p in out.pairs] == [
        ("a", "1"), ("b", "old"), ("c", "x y"), ("key", "v"),
    ]  # fmt: skip
    assert ex.matched == {"a", "k"}


def test_env_blank_key_error() -> None:
    i = _instr("ENV $nothing=1\n")
    assert isinstance(i, EnvInstruction)
    with pytest.raises(DockerfileError, match="names can not be blank"):
        expand_instruction(i, {})


def test_run_text_not_expanded_but_mounts_are() -> None:
    i = _instr("RUN --mount=type=cache,target=$C,mode=$M echo $C\n")
    assert isinstance(i, RunInstruction)
    assert i.mounts[0].mode is None
    out = expand_instruction(i, {"C": "/cache", "M": "0700"}).instruction
    assert isinstance(out, RunInstruction)
    assert out.mounts[0].target == "/cache"
    assert out.mounts[0].mode == 0o700
    assert out.mounts[0].id == "/cache"
    assert out.command == i.command


def test_copy_expansion_and_heredoc_bodies() -> None:
    i = _instr(
        "COPY --from=b --chown=$U --exclude=$X <<one <<'two' $SRC /$D/\n"
        "a=$A '${A}' \\$A \\n\none\nraw $A\ntwo\n"
    )
    assert isinstance(i, CopyInstruction)
    env = {"U": "app", "X": "x", "SRC": "s", "D": "d", "A": "1"}
    out = expand_instruction(i, env).instruction
    assert isinstance(out, CopyInstruction)
    assert (out.chown, out.excludes, out.sources, out.dest, out.from_) == (
        "app", ("$X",), ("s",), "/d/", "b",
    )  # fmt: skip
    one, two = out.heredocs
    assert one.content == "a=1 '1' $A n\n"
    assert two.content == "raw $A\n"
    assert expand_heredoc(i.heredocs[0], env) == "a=1 '1' $A n\n"


def test_expose_word_split() -> None:
    i = _instr("EXPOSE $PORTS 9000/udp\n")
    assert isinstance(i, ExposeInstruction)
    out = expand_instruction(i, {"PORTS": "80 443"}).instruction
    assert isinstance(out, ExposeInstruction)
    assert out.ports == ("80", "443", "9000/udp")


def test_expansion_error_has_location() -> None:
    i = _instr("WORKDIR ${x\n")
    with pytest.raises(DockerfileError) as info:
        expand_instruction(i, {})  # type: ignore[arg-type]
    assert info.value.location is not None
    assert info.value.location.line == 2


# ------------------------------------------------------------------ ARG scoping

DF = parse_dockerfile(
    "ARG VERSION=1.0\nARG IMG=alpine:$VERSION\nARG NOVAL\n"
    "FROM $IMG\nARG VERSION\nARG NOVAL\nARG D=${VERSION}-x\nENV D=env\nARG TARGETARCH\n"
)


def test_meta_scope_for_from() -> None:
    meta = BuildArgs(values={}, build_platform="linux/amd64", target_platform="linux/arm64/v8")
    scope = meta.meta_scope(DF.meta_args)
    assert scope.env["IMG"] == "alpine:1.0"
    assert scope.env["TARGETARCH"] == "arm64"
    assert scope.env["TARGETVARIANT"] == "v8"
    assert scope.env["BUILDPLATFORM"] == "linux/amd64"
    assert "NOVAL" not in scope.env
    overridden = BuildArgs(values={"VERSION": "2.0", "TARGETOS": "windows"}).meta_scope(
        DF.meta_args
    )
    assert overridden.env["IMG"] == "alpine:2.0"
    assert overridden.env["TARGETOS"] == "windows"


def _walk(build_args: BuildArgs) -> StageScope:
    meta = build_args.meta_scope(DF.meta_args)
    scope = StageScope.start(build_args, meta, base_env=[("PATH", "/bin")])
    assert "VERSION" not in scope.env  # globals are invisible until re-declared
    for instr in DF.stages[0].instructions:
        if isinstance(instr, Arg):
            scope = scope.with_arg(instr)
        elif isinstance(instr, EnvInstruction):
            ex = expand_instruction(instr, scope.env).instruction
            assert isinstance(ex, EnvInstruction)
            scope = scope.with_env([(p.key, p.value or "") for p in ex.pairs])
    return scope


def test_stage_scope() -> None:
    scope = _walk(BuildArgs(values={"HTTP_PROXY": "http://p", "UNUSED": "1"}))
    assert scope.env["VERSION"] == "1.0"
    assert "NOVAL" not in scope.env
    assert scope.env["D"] == "env"  # ENV after ARG wins
    assert scope.env["TARGETARCH"] == "amd64"
    assert scope.config_env == (("PATH", "/bin"), ("D", "env"))
    assert scope.run_env["HTTP_PROXY"] == "http://p"
    assert "UNUSED" not in scope.run_env
    assert scope.arg_values == {"VERSION": "1.0", "D": "1.0-x", "TARGETARCH": "amd64"}
    assert [k for k, _ in scope.args] == ["VERSION", "NOVAL", "D", "TARGETARCH"]


def test_build_arg_beats_default_and_arg_after_env_wins() -> None:
    scope = _walk(BuildArgs(values={"D": "cli", "VERSION": "9"}))
    assert scope.env["VERSION"] == "9"
    assert scope.env["D"] == "env"
    df = parse_dockerfile("FROM x\nENV X=env\nARG X=arg\n")
    s = StageScope.start(BuildArgs(), BuildArgs().meta_scope(()))
    for instr in df.stages[0].instructions:
        if isinstance(instr, EnvInstruction):
            s = s.with_env([(p.key, p.value or "") for p in instr.pairs])
        elif isinstance(instr, Arg):
            s = s.with_arg(instr)
    assert s.env["X"] == "arg"
    assert s.config_env == (("X", "env"),)


def test_bad_platform() -> None:
    with pytest.raises(DockerfileError, match="invalid platform"):
        BuildArgs(target_platform="amd64").meta_scope(())
