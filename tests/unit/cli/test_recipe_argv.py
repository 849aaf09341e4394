"""Details of kaniko users' CI recipes: the executor's own path repeated as the first
argument (Buildkite's pod spec) and the name of a ``--tar-path`` archive without
``--destination``."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from lamina.cli import run
from lamina.cli._argv import split_own_path


def test_kaniko_path_is_dropped() -> None:
    args = ["/kaniko/executor", "--dockerfile=Dockerfile", "--no-push"]
    assert split_own_path(args, "executor", "/usr/bin/executor") == (args[1:], args[0])
    warm = ["/kaniko/warmer", "--image=debian:12"]
    assert split_own_path(warm, "warmer", "x") == (warm[1:], warm[0])


def test_invoked_path_and_other_names_of_it(tmp_path: Path) -> None:
    program = tmp_path / "bin" / "executor"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    link = tmp_path / "executor-link"
    link.symlink_to(program)
    assert split_own_path([str(program), "--no-push"], "executor", str(program)) == (
        ["--no-push"],
        str(program),
    )
    assert split_own_path([str(link), "--no-push"], "executor", str(program)) == (
        ["--no-push"],
        str(link),
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--no-push"],
        ["/kaniko/warmer", "--no-push"],  # the other program's path
        ["Dockerfile", "--no-push"],
        ["--context", "/kaniko/executor"],
    ],
)
def test_anything_else_is_kept(args: list[str]) -> None:
    assert split_own_path(args, "executor", "/usr/bin/executor") == (args, None)


def test_only_the_first_argument(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["/kaniko/executor", "/kaniko/executor", "--no-push"]
    assert run(args, {}, prog="executor") == 2
    assert 'unexpected argument "/kaniko/executor"' in capsys.readouterr().err
    # lamina build is not kaniko's executor: no repeated path to accept there
    assert run(["build", "/kaniko/executor", "--no-push"], {}, prog="lamina") == 2


def test_buildkite_form_builds_a_tar_named_lamina_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``/kaniko/executor /kaniko/executor --dockerfile=… --no-push --tarPath …``."""
    ctx = tmp_path / "src"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    out = tmp_path / "image.tar"
    args = [
        "/kaniko/executor",
        f"--context={ctx}",
        f"--dockerfile={ctx / 'Dockerfile'}",
        "--no-push",
        "--tarPath",
        str(out),
        "--verbosity=debug",
        f"--kaniko-dir={tmp_path / 'k'}",
    ]
    assert run(args, {}, prog="executor") == 0
    err = capsys.readouterr().err
    assert "ignoring the first argument /kaniko/executor: it is this program's own path" in err
    with tarfile.open(out) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    assert manifest[0]["RepoTags"] == ["docker.io/library/lamina-build:latest"]
