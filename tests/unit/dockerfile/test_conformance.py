"""BuildKit's own parser and shell-lexer test data, run byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lamina.dockerfile import ShellLex, ShellSyntaxError, parse
from lamina.errors import DockerfileError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
DATA = SHARED / "conformance" / "buildkit"
PARSER = DATA / "parser"
SHELL = DATA / "shell"

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"BuildKit conformance data not found at {DATA.resolve()}"
)


def _cases(sub: str) -> list[str]:
    d = PARSER / sub
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


@pytest.mark.parametrize("case", _cases("testfiles"))
def test_positive_dump_matches_result(case: str) -> None:
    d = PARSER / "testfiles" / case
    result = parse((d / "Dockerfile").read_bytes(), filename=f"{case}/Dockerfile")
    assert result.dump().encode("utf-8", "surrogateescape") == (d / "result").read_bytes()


def test_corpus_sizes() -> None:
    assert len(_cases("testfiles")) == 33
    assert len(_cases("testfiles-negative")) == 4


@pytest.mark.parametrize("case", _cases("testfiles-negative"))
def test_negative_is_rejected(case: str) -> None:
    path = PARSER / "testfiles-negative" / case / "Dockerfile"
    with pytest.raises(DockerfileError) as info:
        parse(path.read_bytes(), filename="Dockerfile")
    assert info.value.location is not None
    assert info.value.location.file == "Dockerfile"
    assert info.value.hint


def test_line_numbers() -> None:
    result = parse((PARSER / "testfile-line" / "Dockerfile").read_bytes())
    assert (result.start_line, result.end_line) == (5, 31)
    spans = [(n.keyword, n.start_line, n.end_line) for n in result.nodes]
    assert spans == [("from", 5, 5), ("env", 11, 12), ("run", 17, 31)]


def _env_var_cases() -> list[tuple[str, str, str]]:
    path = SHELL / "envVarTest"
    if not path.is_file():
        return []
    out = []
    for raw in path.read_bytes().decode("utf-8").split("\n"):
        if raw.startswith("#"):
            continue
        line = raw.strip()
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, line
        tag, inp, exp = (f.strip() for f in fields)
        if tag in ("A", "U"):
            out.append((tag, inp, exp))
    return out


ENV_VAR_CASES = _env_var_cases()


@pytest.mark.parametrize(("tag", "word", "expected"), ENV_VAR_CASES)
def test_env_var(tag: str, word: str, expected: str) -> None:
    env = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}
    lex = ShellLex()
    if expected == "error":
        with pytest.raises(ShellSyntaxError):
            lex.process_word(word, env)
    else:
        assert lex.process_word(word, env) == expected


def test_env_var_case_count() -> None:
    assert len(ENV_VAR_CASES) == 228


def _words_cases() -> list[tuple[dict[str, str], str, list[str]]]:
    path = SHELL / "wordsTest"
    if not path.is_file():
        return []
    env: dict[str, str] = {}
    out = []
    for line in path.read_bytes().decode("utf-8").split("\n")[:-1]:
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, value = line[4:].lstrip(" ").split("=", 1)
            env[name] = value
            continue
        inp, exp = line.split("|")
        out.append((dict(env), inp.strip(), exp.lstrip(" ").split(",")))
    return out


WORDS_CASES = _words_cases()


@pytest.mark.parametrize(("env", "word", "expected"), WORDS_CASES)
def test_words(env: dict[str, str], word: str, expected: list[str]) -> None:
    lex = ShellLex()
    if expected == ["error"]:
        with pytest.raises(ShellSyntaxError):
            lex.process_words(word, env)
    else:
        assert lex.process_words(word, env) == expected


def test_words_case_count() -> None:
    assert len(WORDS_CASES) == 24


def test_dump_command_matches_result_bytes() -> None:
    d = PARSER / "testfiles" / "json"
    out = subprocess.run(
        [sys.executable, "-m", "lamina.dockerfile", str(d / "Dockerfile")],
        capture_output=True,
        check=True,
    )
    assert out.stdout == (d / "result").read_bytes()


def test_dump_command_error_has_no_traceback() -> None:
    path = PARSER / "testfiles-negative" / "shykes-nested-json" / "Dockerfile"
    out = subprocess.run(
        [sys.executable, "-m", "lamina.dockerfile", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert f"{path}:1:" in out.stderr
    assert "hint:" in out.stderr
