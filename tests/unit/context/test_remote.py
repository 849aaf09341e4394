"""Unit tests of context/_remote.py: context URL parsing, git fragments, Azure hosts,
sub-paths, Dockerfile downloads (httpx mock transport, no network)."""

from __future__ import annotations

import base64
import gzip
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from lamina.context import (
    GitContextOptions,
    check_sub_path,
    context_subdir,
    download_dockerfile,
    fetch_context,
    is_azure_blob_url,
    is_dockerfile_url,
    parse_context,
    parse_git_context,
)
from lamina.errors import EXIT_DOCKERFILE, ContextError, NotSupportedError, UsageError


@pytest.mark.parametrize(
    ("context", "kind", "location"),
    [
        ("/workspace", "dir", "/workspace"),
        ("dir:///w/ctx", "dir", "/w/ctx"),
        ("tar:///ctx/context.tar.gz", "tar", "/ctx/context.tar.gz"),
        ("tar://stdin", "stdin", "stdin"),
        ("https://example.com/ctx.tar.gz", "https", "https://example.com/ctx.tar.gz"),
        ("git://github.com/acme/p.git#main", "git", "github.com/acme/p.git#main"),
    ],
)
def test_parse_context_kinds(context: str, kind: str, location: str) -> None:
    spec = parse_context(context)
    assert (spec.kind, spec.location) == (kind, location)
    assert spec.remote == (kind != "dir")


def test_parse_context_redacts_credentials() -> None:
    spec = parse_context("https://user:s3cret@example.com/ctx.tar.gz")
    assert "s3cret" not in spec.display
    assert spec.location == "https://user:s3cret@example.com/ctx.tar.gz"


@pytest.mark.parametrize(
    "url",
    [
        "https://acct.blob.core.windows.net/c/ctx.tar.gz",
        "https://acct.blob.core.chinacloudapi.cn/c/ctx.tar.gz",
        "https://acct.blob.core.cloudapi.de/c/ctx.tar.gz",
        "https://ACCT.blob.core.usgovcloudapi.net/c/ctx.tar.gz",
    ],
)
def test_azure_blob_hosts_are_bucket_contexts(url: str) -> None:
    assert is_azure_blob_url(url)
    assert parse_context(url).kind == "bucket"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/ctx.tar.gz",
        "https://blob.core.windows.net.evil.example/ctx.tar.gz",
        "https://example.com/acct.blob.core.windows.net/ctx.tar.gz",
        "http://acct.blob.core.windows.net/c/ctx.tar.gz",
    ],
)
def test_other_hosts_are_not_azure(url: str) -> None:
    assert not is_azure_blob_url(url)


@pytest.mark.parametrize(
    "context",
    ["s3://bucket/ctx.tar.gz", "S3://bucket", "s3://b/a/b.tgz", "gs://bucket/ctx.tar.gz", "GS://b"],
)
def test_bucket_contexts(context: str) -> None:
    spec = parse_context(context)
    assert (spec.kind, spec.location, spec.remote) == ("bucket", context, True)


@pytest.mark.parametrize("context", ["http://example.com/c.tar.gz", "ftp://x/y", "tar://"])
def test_unknown_or_empty_contexts_are_usage_errors(context: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_context(context)
    assert not isinstance(info.value, NotSupportedError)


def test_dockerfile_url() -> None:
    assert is_dockerfile_url("https://h/Dockerfile")
    assert is_dockerfile_url("HTTP://h/Dockerfile")
    assert not is_dockerfile_url("/ctx/https/Dockerfile")


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("location", "opts", "url", "ref", "commit"),
    [
        ("h/o/r.git", GitContextOptions(), "https://h/o/r.git", None, None),
        ("h/o/r.git#main", GitContextOptions(), "https://h/o/r.git", "main", None),
        ("h/o/r.git#refs/pull/7/head", GitContextOptions(), "https://h/o/r.git",
         "refs/pull/7/head", None),
        (f"h/o/r.git#refs/heads/dev#{SHA}", GitContextOptions(), "https://h/o/r.git",
         "refs/heads/dev", SHA),
        (f"h/o/r.git#{SHA}", GitContextOptions(), "https://h/o/r.git", SHA, None),
        ("h/o/r.git", GitContextOptions(branch="dev"), "https://h/o/r.git", "dev", None),
        (f"h/o/r.git#{SHA[:9]}", GitContextOptions(branch="dev"), "https://h/o/r.git", "dev",
         SHA[:9]),
        ("h/o/r.git#dev", GitContextOptions(branch="dev"), "https://h/o/r.git", "dev", None),
        ("h:8080/r.git#v1", GitContextOptions(pull_method="http"), "http://h:8080/r.git", "v1",
         None),
        ("h/r.git", GitContextOptions(pull_method="ssh"), "https://h/r.git", None, None),
    ],
)  # fmt: skip
def test_git_fragments(
    location: str, opts: GitContextOptions, url: str, ref: str | None, commit: str | None
) -> None:
    parsed = parse_git_context(location, opts)
    assert (parsed.url, parsed.ref, parsed.commit) == (url, ref, commit)


@pytest.mark.parametrize(
    ("location", "opts", "match"),
    [
        ("h/r.git#main", GitContextOptions(branch="dev"), "conflicts"),
        ("h/r.git#main#notasha", GitContextOptions(), "commit SHA"),
        ("h/r.git#a#b#c", GitContextOptions(), "more than two"),
        ("h/r.git#--upload-pack=x", GitContextOptions(), "invalid git ref"),
        ("h/r.git#main#..", GitContextOptions(), "invalid git commit"),
    ],
)
def test_bad_git_fragments(location: str, opts: GitContextOptions, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_git_context(location, opts)


def test_git_auth_header_as_kaniko() -> None:
    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert GitContextOptions().auth_header() is None
    assert GitContextOptions(username="u", password="p").auth_header() == basic("u", "p")
    token = GitContextOptions(username="u", password="p", token="tok")
    assert token.auth_header() == basic("tok", "")  # the token wins, as the user name
    assert "tok" not in repr(token)
    assert "p'" not in repr(token)


def test_sub_path(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "esc").symlink_to("/etc")
    assert context_subdir(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    assert context_subdir(tmp_path, "a/./b/") == (tmp_path / "a" / "b").resolve()
    assert context_subdir(tmp_path, "") == tmp_path
    for bad in ("../x", "/abs", "a/../../x", ".."):
        with pytest.raises(UsageError, match="leave the build context"):
            check_sub_path(bad)
    with pytest.raises(ContextError, match="no such directory"):
        context_subdir(tmp_path, "missing")
    with pytest.raises(ContextError, match="not a directory inside"):
        context_subdir(tmp_path, "esc")


def _mock(status: int, body: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


def test_download_dockerfile(tmp_path: Path) -> None:
    dest = download_dockerfile(
        "https://h/df", tmp_path / "d" / "Dockerfile", transport=_mock(200, b"FROM scratch\n")
    )
    assert dest.read_bytes() == b"FROM scratch\n"


def test_download_dockerfile_errors_name_the_url_and_status(tmp_path: Path) -> None:
    with pytest.raises(ContextError) as info:
        download_dockerfile(
            "https://user:pw@h/missing/Dockerfile", tmp_path / "D", transport=_mock(404, b"")
        )
    assert "https://***@h/missing/Dockerfile" in info.value.message
    assert "404" in info.value.message
    assert "pw" not in info.value.message
    assert info.value.exit_code == EXIT_DOCKERFILE
    with pytest.raises(ContextError, match="larger than 10 bytes"):
        download_dockerfile(
            "https://h/big", tmp_path / "D", transport=_mock(200, b"x" * 11), max_bytes=10
        )
    assert not (tmp_path / "D").exists()


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def test_fetch_https_context_with_a_transport(tmp_path: Path) -> None:
    into = tmp_path / "buildcontext"
    (into / "stale").mkdir(parents=True)  # created fresh
    body = _targz({"Dockerfile": b"FROM scratch\n", "d/f": b"f"})
    fetch_context(
        parse_context("https://h/ctx.tar.gz"),
        into,
        git=GitContextOptions(),
        stdin=None,
        on_warning=lambda _: None,
        transport=_mock(200, body),
    )
    assert sorted(p.name for p in into.iterdir()) == ["Dockerfile", "d"]
    assert (into / "d" / "f").read_bytes() == b"f"
    with pytest.raises(ContextError, match="HTTP status 404"):
        fetch_context(
            parse_context("https://h/ctx.tar.gz"),
            into,
            git=GitContextOptions(),
            stdin=None,
            on_warning=lambda _: None,
            transport=_mock(404, b"no"),
        )


def test_stdin_context_refuses_a_terminal_and_no_stdin(tmp_path: Path) -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    spec = parse_context("tar://stdin")
    with pytest.raises(ContextError, match="terminal"):
        fetch_context(spec, tmp_path / "c", git=GitContextOptions(), stdin=Tty(),
                      on_warning=print)  # fmt: skip
    with pytest.raises(ContextError, match="no standard input"):
        fetch_context(spec, tmp_path / "c", git=GitContextOptions(), stdin=None,
                      on_warning=print)  # fmt: skip


def test_corrupt_archive_is_a_context_error(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(gzip.compress(b"not a tar at all" * 100)[:50])
    with pytest.raises(ContextError, match="cannot unpack the build context"):
        fetch_context(parse_context(f"tar://{archive}"), tmp_path / "c",
                      git=GitContextOptions(), stdin=None, on_warning=print)  # fmt: skip


def test_insecure_skip_tls_turns_off_git_certificate_checks(tmp_path: Path) -> None:
    from lamina.context._git import GitSource, _Git

    source = GitSource(
        remote="https://h/r.git", ref=None, subdir="", keep_git_dir=True, checksum=None,
        submodules=False, mtime=None,
    )  # fmt: skip

    def config(insecure: bool) -> dict[str, str]:
        git = _Git(
            source, home=tmp_path, auth_header=None, ssh_socket=None, location=None,
            timeout=1, label="build context", error_type=ContextError,
            insecure_skip_tls=insecure,
        )  # fmt: skip
        n = int(git.env["GIT_CONFIG_COUNT"])
        return {git.env[f"GIT_CONFIG_KEY_{i}"]: git.env[f"GIT_CONFIG_VALUE_{i}"] for i in range(n)}

    assert config(True)["http.sslVerify"] == "false"
    assert "http.sslVerify" not in config(False)


def test_azure_sas_is_not_shown() -> None:
    spec = parse_context("https://acct.blob.core.windows.net/c/x.tar.gz?sv=1&sig=SECRET")
    assert spec.location.endswith("sig=SECRET")
    assert "SECRET" not in spec.display
    assert spec.display == "https://acct.blob.core.windows.net/c/x.tar.gz?<SAS>"
