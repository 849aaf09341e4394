"""`.dockerignore` with moby's patternmatcher semantics."""

from __future__ import annotations

import pytest

from lamina.dockerfile import (
    dockerignore_candidates,
    files_read_despite_ignore,
    parse_dockerignore,
)
from lamina.errors import DockerfileError


def rules(text: str) -> list[str]:
    return [p.pattern for p in parse_dockerignore(text).patterns]


def test_line_processing() -> None:
    text = "\ufeff# comment\n  # not a comment\n\n/abs/path\n./rel/../x\n!  /keep\n  spaced  \r\n"
    assert rules(text) == ["# not a comment", "abs/path", "x", "keep", "spaced"]
    assert [p.exclusion for p in parse_dockerignore(text).patterns][3] is True


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("foo", "foo", True),
        ("foo", "a/foo", False),  # anchored at the root, unlike gitignore
        ("foo", "foo/bar/baz", True),  # a matching parent excludes what is below
        ("**/foo", "a/b/foo", True),
        ("**/foo", "foo", True),
        ("**/foo", "afoo", False),
        ("*.go", "a.go", True),
        ("*.go", "dir/a.go", False),
        ("**/*.go", "dir/sub/a.go", True),
        ("dir/**", "dir/x/y", True),
        ("dir/**", "dir", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab].txt", "b.txt", True),
        ("a.b", "axb", False),
        ("**", "anything/at/all", True),
        ("dir\n!dir/keep", "dir/keep", False),
        ("dir\n!dir/keep", "dir/other", True),
        ("*.md\n!README.md\nREADME.md", "README.md", True),  # the last match wins
        ("!x\nx", "x", True),
        ("docs/**/*.md", "docs/a.md", True),
        ("docs/**/*.md", "docs/x/y/a.md", True),
    ],
)
def test_matches(patterns: str, path: str, ignored: bool) -> None:
    assert parse_dockerignore(patterns).matches(path) is ignored


def test_can_skip_dir() -> None:
    r = parse_dockerignore("node_modules\nbuild\n!build/keep.txt\n")
    assert r.can_skip_dir("node_modules")
    assert not r.can_skip_dir("build")
    assert not r.can_skip_dir("src")  # not ignored at all
    r2 = parse_dockerignore("vendor\n!**/LICENSE\n")
    assert not r2.can_skip_dir("vendor")


def test_errors_have_location() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerignore("ok\n!\n", filename="ctx/.dockerignore")
    loc = info.value.location
    assert loc is not None
    assert (loc.file, loc.line) == ("ctx/.dockerignore", 2)
    assert info.value.hint
    with pytest.raises(DockerfileError, match="syntax error in pattern"):
        parse_dockerignore("a[\n")


def test_candidates() -> None:
    assert dockerignore_candidates("build/app.Dockerfile") == [
        "build/app.Dockerfile.dockerignore",
        ".dockerignore",
    ]
    assert "Dockerfile" in files_read_despite_ignore("Dockerfile")
    assert ".dockerignore" in files_read_despite_ignore("./Dockerfile")


def test_wildcard_inside_a_class_reads_as_moby_does() -> None:
    # moby turns "[*]" into the Go regexp "^[[^/]*]$": a class of '[', '^', '/'
    # repeated, then a literal ']' -- odd, but that is what docker build matches
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rules = parse_dockerignore("[*]\n", filename=".dockerignore")
        assert rules.matches("]")
        assert rules.matches("[]")
        assert rules.matches("^/]")
        assert not rules.matches("*")
