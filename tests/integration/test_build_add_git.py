"""Real builds: ``ADD`` of git repositories served by ``git http-backend`` and ``git daemon``."""

from __future__ import annotations

import base64
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.builder.options import SecretSource, SSHSource
from lamina.errors import BuildStepError, DockerfileError, NotSupportedError
from tests.integration.test_build_engine import make_context, run_build
from tests.support.git_server import (
    FIRST_COMMIT_TIME,
    SECOND_COMMIT_TIME,
    GitDaemon,
    GitHttpServer,
    GitSSHServer,
    ServedRepo,
    free_port,
    make_repo,
)

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

EPOCH = 1_700_000_000


@dataclass(frozen=True, slots=True)
class Served:
    repo: ServedRepo
    http: GitHttpServer
    daemon: GitDaemon

    @property
    def url(self) -> str:
        return f"{self.http.base}/{self.repo.name}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("git-served")
    repo = make_repo(root)
    with GitHttpServer(root) as http, GitDaemon(root) as daemon:
        yield Served(repo, http, daemon)


def _names(files: dict[str, tarfile.TarInfo], top: str) -> set[str]:
    return {n.removeprefix(top + "/") for n in files if n.startswith(top + "/")}


def test_add_git_branch_tag_commit_and_subdir(tmp_path: Path, served: Served) -> None:
    url, repo = served.url, served.repo
    dockerfile = f"""\
FROM scratch
ADD {url} /default
ADD {url}#v1 /tag/
ADD {url}#feature /branch
ADD {url}#{repo.first}:src /sub
ADD {url}?ref=v2&subdir=src/lib /q
"""
    built = run_build(tmp_path, make_context(tmp_path / "ctx", dockerfile))
    default = built.layer_files(0)
    assert _names(default, "default") == {"NEWS", "README", "link", "src", "src/app.sh",
                                          "src/lib", "src/lib/util.txt"}  # fmt: skip
    assert built.read_file(0, "default/README") == b"second\n"
    assert built.read_file(1, "tag/README") == b"first\n"
    assert "tag/NEWS" not in built.layer_files(1)
    assert built.read_file(2, "branch/feature.txt") == b"feature\n"
    sub = built.layer_files(3)
    assert _names(sub, "sub") == {"app.sh", "lib", "lib/util.txt"}
    app, util, lib = sub["sub/app.sh"], sub["sub/lib/util.txt"], sub["sub/lib"]
    assert (app.mode, app.uid, app.gid) == (0o755, 0, 0)
    assert (util.mode, util.uid, util.gid) == (0o644, 0, 0)
    assert (lib.mode, lib.uid) == (0o755, 0)
    link = default["default/link"]
    assert link.issym()
    assert link.linkname == "README"
    assert _names(built.layer_files(4), "q") == {"util.txt"}
    # BuildKit's default: files carry the checkout time, not the commit's
    assert int(default["default/README"].mtime) > SECOND_COMMIT_TIME
    history = [h.created_by for h in built.config.history]
    assert history[3] == f"ADD {url}#{repo.first}:src /sub # buildkit"
    assert not any((tmp_path / "kaniko").iterdir())  # checkouts cleaned up


def test_add_git_keep_git_dir_chown_exclude_link_over_git_daemon(
    tmp_path: Path, served: Served
) -> None:
    url = f"{served.daemon.base}/{served.repo.name}"
    dockerfile = f"""\
FROM scratch
ADD --keep-git-dir=true {url}#feature /k
ADD --chown=7:8 --exclude=src/*.sh --link {url}#v1 /c/
ADD {served.url}?keep-git-dir=true /kq
"""
    built = run_build(tmp_path, make_context(tmp_path / "ctx", dockerfile))
    kept = built.layer_files(0)
    assert "k/.git/HEAD" in kept
    assert built.read_file(0, "k/.git/HEAD") == b"ref: refs/heads/feature\n"
    config = built.read_file(0, "k/.git/config").decode()
    assert f"url = {url}" in config
    assert "k/.git/FETCH_HEAD" not in kept
    c = built.layer_files(1)
    assert "c/.git" not in c
    assert "c/src/app.sh" not in c  # --exclude
    readme = c["c/README"]
    assert (readme.uid, readme.gid) == (7, 8)
    assert "kq/.git/HEAD" in built.layer_files(2)
    assert built.read_file(2, "kq/.git/HEAD") == b"ref: refs/heads/main\n"


def test_add_git_commit_mtimes_with_source_date_epoch(tmp_path: Path, served: Served) -> None:
    text = f"FROM scratch\nADD {served.url} /r\nADD {served.url}?tag=v1&mtime=checkout /c\n"
    ctx = make_context(tmp_path / "ctx", text)
    built = run_build(tmp_path / "a", ctx, source_date_epoch=EPOCH)
    files = built.layer_files(0)
    below = [n for n in files if n.startswith("r/")]
    assert {"r/README", "r/src", "r/src/app.sh", "r/link"} <= set(below)
    for name in below:
        assert int(files[name].mtime) == SECOND_COMMIT_TIME, name
    assert int(built.layer_files(1)["c/README"].mtime) > FIRST_COMMIT_TIME  # mtime=checkout


def test_add_git_commit_sha_from_a_protocol_v0_server(tmp_path: Path, served: Served) -> None:
    # protocol v0 refuses a want of a commit that is no branch tip: lamina fetches everything
    with GitHttpServer(served.repo.bare.parent, protocol_v2=False) as http:
        text = f"FROM scratch\nADD {http.base}/{served.repo.name}#{served.repo.first} /r\n"
        built = run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert built.read_file(0, "r/README") == b"first\n"
    assert "r/NEWS" not in built.layer_files(0)


def test_add_git_checksum(tmp_path: Path, served: Served) -> None:
    repo = served.repo
    ok = f"FROM scratch\nADD --checksum={repo.second[:10]} {served.url}#main /m\n"
    built = run_build(tmp_path / "ok", make_context(tmp_path / "ok-ctx", ok))
    assert built.read_file(0, "m/README") == b"second\n"
    tag = f"FROM scratch\nADD --checksum={repo.tag_object} {served.url}#v1 /t\n"
    run_build(tmp_path / "tag", make_context(tmp_path / "tag-ctx", tag))
    bad = f"FROM scratch\nENV A=1\nADD --checksum={repo.first} {served.url}#main /m\n"
    with pytest.raises(BuildStepError, match="checksum mismatch") as info:
        run_build(tmp_path / "bad", make_context(tmp_path / "bad-ctx", bad))
    assert repo.second in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 3


@pytest.mark.parametrize(
    ("fragment", "match"),
    [
        ("#no-such-branch", "no branch or tag named 'no-such-branch'"),
        ("#main:missing/dir", "no directory 'missing/dir'"),
        ("#abcdef1234", "no branch, tag or commit 'abcdef1234'"),
    ],
)
def test_add_git_missing_ref_names_url_and_line(
    tmp_path: Path, served: Served, fragment: str, match: str
) -> None:
    text = f"FROM scratch\nENV A=1\nADD {served.url}{fragment} /x\n"
    with pytest.raises(BuildStepError, match=match) as info:
        run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert served.url in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 3
    assert not any((tmp_path / "kaniko").iterdir())


def test_add_git_unreachable_host(tmp_path: Path, served: Served) -> None:
    url = f"http://127.0.0.1:{free_port()}/repo.git"
    text = f"FROM scratch\nADD {url}#main /x\n"
    with pytest.raises(BuildStepError, match="failed") as info:
        run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert url in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 2


def test_add_git_auth_token_secret_and_url_credentials(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    repo = make_repo(root)
    token_header = "basic " + base64.b64encode(b"x-access-token:s3cret-token").decode()
    with GitHttpServer(root, required_auth=token_header) as http:
        url = f"{http.base}/{repo.name}"
        text = f"FROM scratch\nADD {url} /r\n"
        with pytest.raises(BuildStepError) as info:
            run_build(tmp_path / "noauth", make_context(tmp_path / "c1", text))
        assert info.value.location is not None
        assert info.value.location.line == 2
        secret = SecretSource(id="GIT_AUTH_TOKEN", value=b"s3cret-token\n")
        built = run_build(tmp_path / "auth", make_context(tmp_path / "c2", text), secrets=(secret,))
        assert built.read_file(0, "r/README") == b"second\n"
        assert token_header in http.seen_auth
    basic = "Basic " + base64.b64encode(b"user:pa55word").decode()
    with GitHttpServer(root, required_auth=basic) as http:
        host = http.base.removeprefix("http://")
        url = f"http://user:pa55word@{host}/{repo.name}"
        text = f"FROM scratch\nADD --keep-git-dir=true {url}#v1 /r\n"
        built = run_build(tmp_path / "creds", make_context(tmp_path / "c3", text))
        assert built.read_file(0, "r/README") == b"first\n"
        history = built.config.history[0].created_by or ""
        assert "pa55word" not in history
        assert "***@" in history
        assert b"pa55word" not in built.read_file(0, "r/.git/config")
        bad = text.replace("pa55word", "wrong")
        with pytest.raises(BuildStepError) as failed:
            run_build(tmp_path / "bad", make_context(tmp_path / "c4", bad))
        assert "wrong" not in failed.value.message


def test_add_git_submodules(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    with GitHttpServer(root) as http:
        make_repo(root, "sub.git")
        repo = make_repo(root, "top.git", submodule_url=f"{http.base}/sub.git")
        text = f"FROM scratch\nADD {http.base}/{repo.name} /top\n"
        text += f"ADD {http.base}/{repo.name}?submodules=false /nosub\n"
        built = run_build(tmp_path, make_context(tmp_path / "ctx", text))
        files = built.layer_files(0)
        assert built.read_file(0, "top/vendor/sub/README") == b"second\n"
        assert "top/vendor/sub/.git" not in files
        assert "top/.gitmodules" in files
        assert _names(built.layer_files(1), "nosub/vendor/sub") == set()


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("git@github.com:o/r.git", BuildStepError, "over SSH needs an SSH agent"),
        ("ssh://git@host/r.git", BuildStepError, "over SSH needs an SSH agent"),
        ("svn+ssh://h/r.git", NotSupportedError, "svn\\+ssh://h/r.git"),
        ("https://h/r.git?depth=1", NotSupportedError, "'depth'"),
        ("https://h/r.git?ref=dev#main", DockerfileError, "conflicting ref"),
        ("https://h/r.git#-x", DockerfileError, "invalid git ref"),
        ("https://h/r.git#main:../up", DockerfileError, "leaves the repository"),
    ],
)
def test_add_git_refusals(tmp_path: Path, source: str, error: type[Exception], match: str) -> None:
    text = f"FROM scratch\nADD {source} /x\n"
    with pytest.raises(error, match=match):
        run_build(tmp_path, make_context(tmp_path / "ctx", text))


def test_add_git_token_goes_to_the_repository_host_only(tmp_path: Path) -> None:
    token_header = "basic " + base64.b64encode(b"x-access-token:tok").decode()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        GitHttpServer(tmp_path / "b") as other,
        GitHttpServer(tmp_path / "a", required_auth=token_header) as private,
    ):
        make_repo(tmp_path / "b", "sub.git")
        repo = make_repo(tmp_path / "a", "top.git", submodule_url=f"{other.base}/sub.git")
        text = f"FROM scratch\nADD {private.base}/{repo.name} /top\n"
        secret = SecretSource(id="GIT_AUTH_TOKEN", value=b"tok")
        built = run_build(tmp_path, make_context(tmp_path / "ctx", text), secrets=(secret,))
        assert built.read_file(0, "top/vendor/sub/README") == b"second\n"
        assert token_header in private.seen_auth
        assert other.seen_auth == []  # the submodule's server never saw the token


def test_add_git_url_credentials_stay_out_of_the_log(
    tmp_path: Path, served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    host = served.http.base.removeprefix("http://")
    text = f"FROM scratch\nADD http://someone:hunter2@{host}/{served.repo.name}#v1 /r\n"
    with caplog.at_level(logging.DEBUG):
        built = run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert built.read_file(0, "r/README") == b"first\n"
    assert "someone:***@" not in caplog.text
    assert "***@" in caplog.text
    assert "hunter2" not in caplog.text


@pytest.mark.skipif(not GitSSHServer.SSHD.exists(), reason="needs sshd (openssh-server)")
def test_add_git_over_ssh_with_the_default_agent(tmp_path: Path, served: Served) -> None:
    with GitSSHServer(tmp_path / "ssh") as sshd:
        url = f"{sshd.base()}{served.repo.bare}"
        text = f"FROM scratch\nADD --keep-git-dir=true {url}#feature:src /s\n"
        agent = SSHSource(id="default", socket=sshd.agent_socket)
        built = run_build(tmp_path / "ok", make_context(tmp_path / "c1", text), ssh=(agent,))
        assert _names(built.layer_files(0), "s") >= {"app.sh", "lib", "lib/util.txt"}
        other = SSHSource(id="other", socket=sshd.agent_socket)
        with pytest.raises(BuildStepError, match="needs an SSH agent") as info:
            run_build(tmp_path / "no", make_context(tmp_path / "c2", text), ssh=(other,))
        assert "--ssh default" in (info.value.hint or "")
        assert info.value.location is not None
        assert info.value.location.line == 2
