"""Details of kaniko users' CI recipes: the executor's own path repeated as the first
argument (Buildkite's pod spec), the name of a ``--tar-path`` archive without
``--destination``, and ``--context=dir://workspace`` (kaniko's own pod example)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from lamina.cli import run
from lamina.cli._argv import split_own_path
from lamina.cli._flags import parse_flags
from lamina.cli._options import executor_config
from lamina.cli._specs import BUILD_FLAGS
from lamina.errors import UsageError


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


def _context(args: list[str]) -> tuple[str, list[str]]:
    config = executor_config(parse_flags(args, BUILD_FLAGS, command="executor"), {})
    return config.build.context, list(config.warnings)


def test_dir_url_as_kaniko_examples_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kaniko's examples/pod.yaml: ``--context=dir://workspace`` with /workspace mounted
    (and the working directory /workspace): the relative directory does not exist, the
    absolute one does."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dockerfile").write_text("FROM scratch\n")
    df = f"--dockerfile={tmp_path / 'dockerfile'}"
    context, warnings = _context(["--context=dir://tmp", df, "--no-push"])
    assert context == str(Path("/tmp").resolve())
    assert warnings == [
        f"--context dir://tmp: there is no directory tmp in {tmp_path}; using /tmp "
        "(write dir:///tmp to say so)"
    ]
    # kaniko's rule first: relative to the working directory when that exists
    (tmp_path / "tmp").mkdir()
    assert _context(["--context=dir://tmp", df, "--no-push"]) == (str(tmp_path / "tmp"), [])
    with pytest.raises(UsageError, match="no-such-dir-here is not a directory"):
        _context(["--context=dir://no-such-dir-here", df, "--no-push"])
