"""Unit tests of builder/_git.py: git source parsing, auth header, redaction (no network)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lamina.builder._git import (
    GitSource,
    git_auth_header,
    git_secrets,
    parse_git_source,
    redact_url,
)
from lamina.builder.options import SecretSource
from lamina.errors import BuildStepError, DockerfileError, NotSupportedError, SourceLocation

LOC = SourceLocation(file="Dockerfile", line=4)


def _parse(src: str, keep: bool | None = None, checksum: str | None = None) -> GitSource:
    return parse_git_source(src, keep_git_dir=keep, checksum=checksum, location=LOC)


@pytest.mark.parametrize(
    ("src", "remote", "ref", "subdir"),
    [
        ("https://h/o/r.git", "https://h/o/r.git", None, ""),
        ("https://h/o/r.git#v1", "https://h/o/r.git", "v1", ""),
        ("https://h/o/r.git#HEAD:x", "https://h/o/r.git", None, "x"),
        ("https://h/o/r.git#main:docs/x", "https://h/o/r.git", "main", "docs/x"),
        ("https://h/o/r.git#:docs/", "https://h/o/r.git", None, "docs"),
        ("git://h/r.git#refs/pull/1/head", "git://h/r.git", "refs/pull/1/head", ""),
        ("https://h/r.git?branch=dev&subdir=a", "https://h/r.git", "dev", "a"),
        ("https://h/r.git?tag=v2#v2", "https://h/r.git", "v2", ""),
    ],
)
def test_parse_forms(src: str, remote: str, ref: str | None, subdir: str) -> None:
    parsed = _parse(src)
    assert (parsed.remote, parsed.ref, parsed.subdir) == (remote, ref, subdir)
    assert parsed.keep_git_dir is False
    assert parsed.submodules is True


def test_parse_flags_and_query_options() -> None:
    p = _parse("https://h/r.git?keep-git-dir=true&submodules=false&mtime=commit&commit=ABCDEF1")
    assert (p.keep_git_dir, p.submodules, p.mtime, p.checksum) == (True, False, "commit", "abcdef1")
    assert _parse("https://h/r.git", keep=True, checksum="abcdef1").checksum == "abcdef1"
    with pytest.raises(DockerfileError, match="conflicting keep-git-dir"):
        _parse("https://h/r.git?keep-git-dir=false", keep=True)
    with pytest.raises(DockerfileError, match="conflicting checksum"):
        _parse("https://h/r.git?checksum=abcdef1", checksum="1234567")
    with pytest.raises(DockerfileError, match="conflicting ref") as info:
        _parse("https://h/r.git?branch=a&tag=b")
    assert info.value.location == LOC
    for bad, match in [
        ("https://h/r.git?submodules=maybe", "for submodules"),
        ("https://h/r.git?mtime=now", "mtime"),
    ]:
        with pytest.raises(DockerfileError, match=match):
            _parse(bad)
    with pytest.raises(DockerfileError, match="checksum"):
        _parse("https://h/r.git", checksum="sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("src", "remote", "ref", "subdir"),
    [
        ("git@h:o/r.git", "git@h:o/r.git", None, ""),
        ("git@h:o/r.git#v1:docs", "git@h:o/r.git", "v1", "docs"),
        ("git@h:o/r.git?branch=dev#:sub", "git@h:o/r.git", "dev", "sub"),
        ("ssh://git@h:2222/r.git#main", "ssh://git@h:2222/r.git", "main", ""),
        ("git+ssh://h/r.git", "git+ssh://h/r.git", None, ""),
    ],
)
def test_ssh_forms(src: str, remote: str, ref: str | None, subdir: str) -> None:
    parsed = _parse(src)
    assert (parsed.remote, parsed.ref, parsed.subdir, parsed.ssh) == (remote, ref, subdir, True)


def test_other_transports_are_refused() -> None:
    with pytest.raises(NotSupportedError, match="ftp:// transport") as info:
        _parse("ftp://h/r.git")
    assert info.value.location == LOC
    assert _parse("https://h/r.git").ssh is False


def test_redaction() -> None:
    assert redact_url("https://u:p@h/r.git#v1") == "https://***@h/r.git#v1"
    assert (
        redact_url("fatal: git://tok@h/x and http://h/y") == "fatal: git://***@h/x and http://h/y"
    )
    assert _parse("https://u:secret@h/r.git#v1:sub").display == "https://***@h/r.git#v1:sub"
    with pytest.raises(DockerfileError) as info:
        _parse("https://u:secret@h/r.git#-bad")
    assert "secret" not in info.value.message


def test_auth_header_from_secrets(tmp_path: Path) -> None:
    token = "basic " + base64.b64encode(b"x-access-token:tok").decode()
    assert git_auth_header("https://h/r.git", {"GIT_AUTH_TOKEN": b"tok\n"}) == token
    both = {"GIT_AUTH_TOKEN": b"a", "GIT_AUTH_TOKEN.h": b"tok"}
    assert git_auth_header("https://h/r.git", both) == token
    assert git_auth_header("https://other/r.git", {"GIT_AUTH_TOKEN.h": b"tok"}) is None
    header = {"GIT_AUTH_HEADER": b"bearer xyz", "GIT_AUTH_TOKEN": b"tok"}
    assert git_auth_header("https://h/r.git", header) == "bearer xyz"
    f = tmp_path / "tok"
    f.write_bytes(b"from-file")
    secrets = [
        SecretSource(id="GIT_AUTH_TOKEN", path=f),
        SecretSource(id="OTHER", value=b"x"),
        SecretSource(id="GIT_AUTH_HEADER.h", value=b"v"),
    ]
    assert git_secrets(secrets, LOC) == {"GIT_AUTH_TOKEN": b"from-file", "GIT_AUTH_HEADER.h": b"v"}
    with pytest.raises(BuildStepError, match="cannot read the secret"):
        git_secrets([SecretSource(id="GIT_AUTH_TOKEN", path=tmp_path / "missing")], LOC)
