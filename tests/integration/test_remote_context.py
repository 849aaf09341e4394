"""Real builds from remote contexts: ``tar://`` files and stdin, ``https://`` tarballs
and Dockerfiles (a loopback HTTPS server with a test CA), ``git://`` repositories
(``git http-backend``), run through ``python -m lamina build`` as kaniko users do."""

from __future__ import annotations

import base64
import gzip
import io
import os
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lamina.oci.oci_layout import OCILayout
from tests.support.git_server import GitHttpServer, ServedRepo, make_repo
from tests.support.registry import make_tls_material

SRC = Path(__file__).resolve().parents[2] / "src"
DOCKERFILE = "FROM scratch\nCOPY . /app/\n"


def lamina_build(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    expect: int = 0,
) -> subprocess.CompletedProcess[bytes]:
    """``python -m lamina build ARGS --no-push --oci-layout-path tmp/out`` with its own
    ``--kaniko-dir``; asserts the exit code and that no traceback was printed."""
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "HOME": str(tmp_path),
        **(env or {}),
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "lamina", "build", *args, "--no-push",
            f"--oci-layout-path={tmp_path / 'out'}", f"--kaniko-dir={tmp_path / 'kaniko'}",
        ],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=180,
        check=False,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == expect, err
    assert "Traceback" not in err
    return proc


def image_files(layout: Path) -> dict[str, bytes | None]:
    """Every entry of the built image's layers: file contents, None for the rest."""
    image = OCILayout.open(layout).image()
    out: dict[str, bytes | None] = {}
    for layer in image.layers():
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                name = m.name.removeprefix("./").rstrip("/")
                data = tar.extractfile(m) if m.isfile() else None
                out[name] = data.read() if data is not None else None
    return out


def targz(entries: Mapping[str, bytes | str]) -> bytes:
    """A gzip tarball: ``bytes`` values are files, ``str`` values symlink targets."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if isinstance(value, str):
                info.type = tarfile.SYMTYPE
                info.linkname = value
                tar.addfile(info)
            else:
                info.size = len(value)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(value))
    return gzip.compress(raw.getvalue())


CONTEXT = {
    "Dockerfile": DOCKERFILE.encode(),
    ".dockerignore": b"secret.txt\n",
    "hello.txt": b"hello\n",
    "secret.txt": b"do not copy\n",
    "sub/Dockerfile": b"FROM scratch\nCOPY . /s/\n",
    "sub/inner.txt": b"inner\n",
}


def test_tar_file_context(tmp_path: Path) -> None:
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(targz(CONTEXT))
    lamina_build(tmp_path, f"--context=tar://{archive}")
    files = image_files(tmp_path / "out")
    assert files["app/hello.txt"] == b"hello\n"
    assert files["app/sub/inner.txt"] == b"inner\n"
    assert "app/secret.txt" not in files  # <context>/.dockerignore applies
    # unpacked into <kaniko-dir>/buildcontext, removed with the build directory
    assert not (tmp_path / "kaniko" / "buildcontext").exists()
    assert list((tmp_path / "kaniko").iterdir()) == []


def test_tar_stdin_context_with_sub_path(tmp_path: Path) -> None:
    proc = lamina_build(
        tmp_path, "--context=tar://stdin", "--context-sub-path=sub", stdin=targz(CONTEXT)
    )
    assert b"buildcontext" in proc.stderr
    files = image_files(tmp_path / "out")
    assert files["s/inner.txt"] == b"inner\n"
    assert "s/hello.txt" not in files


def test_sub_path_leaving_the_context_is_refused(tmp_path: Path) -> None:
    proc = lamina_build(
        tmp_path,
        "--context=tar://stdin",
        "--context-sub-path=../..",
        stdin=targz(CONTEXT),
        expect=2,
    )
    assert b"--context-sub-path '../..' could leave the build context" in proc.stderr


def test_hostile_tarball_context_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    entries: dict[str, bytes | str] = {
        "Dockerfile": DOCKERFILE.encode(),
        "../escaped.txt": b"up\n",
        "/abs.txt": b"absolute\n",
        "esc": str(outside),
        "esc/pwned": b"pwned\n",
        "rel": "../../../..",
        "rel/pwned2": b"pwned\n",
    }
    proc = lamina_build(tmp_path, "--context=tar://stdin", stdin=targz(entries))
    err = proc.stderr.decode()
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "kaniko" / "escaped.txt").exists()
    assert not list(tmp_path.glob("**/pwned*"))  # the context is gone, nothing escaped
    assert "../escaped.txt" in err
    assert "refused" in err
    files = image_files(tmp_path / "out")
    assert files["app/abs.txt"] == b"absolute\n"  # an absolute name is taken inside
    assert "app/escaped.txt" not in files
    assert not any(name.endswith("escaped.txt") for name in files)


def test_missing_tar_context(tmp_path: Path) -> None:
    proc = lamina_build(tmp_path, "--context=tar:///nonexistent/ctx.tar.gz", expect=3)
    assert b"/nonexistent/ctx.tar.gz does not exist" in proc.stderr


# -- https -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpsServer:
    root: Path
    base: str
    ca: Path


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    tls = tmp_path_factory.mktemp("https-tls")
    ca, cert, key = make_tls_material(tls)
    root = tmp_path_factory.mktemp("https-root")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsServer(root, f"https://127.0.0.1:{server.server_address[1]}", ca)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_https_context_and_dockerfile_url(tmp_path: Path, https_server: HttpsServer) -> None:
    (https_server.root / "ctx.tar.gz").write_bytes(targz(CONTEXT))
    (https_server.root / "Remote.Dockerfile").write_text("FROM scratch\nCOPY hello.txt /r/\n")
    trust = {"SSL_CERT_FILE": str(https_server.ca)}
    lamina_build(tmp_path, f"--context={https_server.base}/ctx.tar.gz", env=trust)
    files = image_files(tmp_path / "out")
    assert files["app/hello.txt"] == b"hello\n"
    assert "app/secret.txt" not in files
    # --dockerfile URL with a local context; <context>/.dockerignore is the one used
    local = tmp_path / "local"
    local.mkdir()
    (local / "hello.txt").write_text("local hello\n")
    (local / ".dockerignore").write_text("hello.txt\n")
    df = f"{https_server.base}/Remote.Dockerfile"
    proc = lamina_build(tmp_path, f"--context={local}", f"--dockerfile={df}", env=trust, expect=3)
    assert b"'hello.txt' is excluded from the build context by .dockerignore" in proc.stderr
    (local / ".dockerignore").unlink()
    lamina_build(tmp_path, f"--context={local}", f"--dockerfile={df}", env=trust)
    assert image_files(tmp_path / "out")["r/hello.txt"] == b"local hello\n"
    assert list((tmp_path / "kaniko").iterdir()) == []  # the downloaded Dockerfile is gone


def test_https_errors(tmp_path: Path, https_server: HttpsServer) -> None:
    trust = {"SSL_CERT_FILE": str(https_server.ca)}
    url = f"{https_server.base}/missing.tar.gz"
    proc = lamina_build(tmp_path, f"--context={url}", env=trust, expect=3)
    err = proc.stderr.decode()
    assert f"cannot download the build context {url}: HTTP status 404" in err
    proc = lamina_build(
        tmp_path, f"--context={tmp_path}", f"--dockerfile={https_server.base}/nope", env=trust,
        expect=3,
    )  # fmt: skip
    assert f"the Dockerfile {https_server.base}/nope: HTTP status 404" in proc.stderr.decode()
    # without the test CA the certificate is not trusted
    (https_server.root / "ok.tar.gz").write_bytes(targz(CONTEXT))
    proc = lamina_build(tmp_path, f"--context={https_server.base}/ok.tar.gz", expect=3)
    assert b"CERTIFICATE_VERIFY_FAILED" in proc.stderr or b"certificate" in proc.stderr


# -- git ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServedGit:
    repo: ServedRepo
    http: GitHttpServer

    def url(self, fragment: str = "") -> str:
        return f"git://{self.http.base.removeprefix('http://')}/{self.repo.name}{fragment}"


@pytest.fixture(scope="module")
def served_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGit]:
    root = tmp_path_factory.mktemp("git-ctx")
    repo = make_repo(root)
    with GitHttpServer(root) as http:
        yield ServedGit(repo, http)


@pytest.fixture
def copy_all(tmp_path: Path) -> Path:
    dockerfile = tmp_path / "df" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text("FROM scratch\nCOPY . /ctx/\n")
    return dockerfile


HTTP = {"GIT_PULL_METHOD": "http"}


def test_git_context_default_branch_tag_and_branch(
    tmp_path: Path, served_git: ServedGit, copy_all: Path
) -> None:
    lamina_build(tmp_path, f"--context={served_git.url()}", f"--dockerfile={copy_all}", env=HTTP)
    files = image_files(tmp_path / "out")
    assert files["ctx/README"] == b"second\n"
    assert files["ctx/src/lib/util.txt"] == b"util\n"
    assert "ctx/NEWS" in files
    assert "ctx/.git/HEAD" in files  # kaniko's clone keeps .git in the context
    lamina_build(tmp_path, f"-c={served_git.url('#v1')}", f"-f={copy_all}", env=HTTP)
    files = image_files(tmp_path / "out")
    assert (files["ctx/README"], "ctx/NEWS" in files) == (b"first\n", False)
    lamina_build(tmp_path, f"-c={served_git.url('#refs/heads/feature')}", f"-f={copy_all}",
                 env=HTTP)  # fmt: skip
    assert image_files(tmp_path / "out")["ctx/feature.txt"] == b"feature\n"
    lamina_build(tmp_path, f"-c={served_git.url()}", "--git=branch=feature",
                 "--git=single-branch=true", f"-f={copy_all}", env=HTTP)  # fmt: skip
    assert image_files(tmp_path / "out")["ctx/feature.txt"] == b"feature\n"
    assert list((tmp_path / "kaniko").iterdir()) == []


def test_git_context_ref_commit_and_sub_path(
    tmp_path: Path, served_git: ServedGit, copy_all: Path
) -> None:
    first = served_git.repo.first
    lamina_build(tmp_path, f"-c={served_git.url('#main#' + first)}", f"-f={copy_all}", env=HTTP)
    files = image_files(tmp_path / "out")
    assert (files["ctx/README"], "ctx/NEWS" in files) == (b"first\n", False)
    lamina_build(tmp_path, f"-c={served_git.url('#' + first)}", f"-f={copy_all}", env=HTTP)
    assert image_files(tmp_path / "out")["ctx/README"] == b"first\n"
    # a relative --dockerfile is looked up in the unpacked context (here: none there)
    proc = lamina_build(tmp_path, f"-c={served_git.url()}", "--context-sub-path=src", env=HTTP,
                        expect=3)  # fmt: skip
    assert b"the Dockerfile Dockerfile is not in the build context" in proc.stderr
    lamina_build(tmp_path, f"-c={served_git.url('#v2')}", "--context-sub-path=src",
                 f"-f={copy_all}", env=HTTP)  # fmt: skip
    files = image_files(tmp_path / "out")
    assert files["ctx/lib/util.txt"] == b"util\n"
    assert "ctx/README" not in files
    proc = lamina_build(tmp_path, f"-c={served_git.url('#nope')}", f"-f={copy_all}", env=HTTP,
                        expect=3)  # fmt: skip
    assert b"build context" in proc.stderr
    assert b"no branch or tag named 'nope'" in proc.stderr


def test_private_git_context(tmp_path: Path, copy_all: Path) -> None:
    root = tmp_path / "private"
    repo = make_repo(root, "private.git")
    auth = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()
    with GitHttpServer(root, required_auth=auth) as http:
        url = f"git://{http.base.removeprefix('http://')}/{repo.name}#v1"
        creds = {**HTTP, "GIT_USERNAME": "alice", "GIT_PASSWORD": "s3cret-pw"}
        proc = lamina_build(tmp_path, f"-c={url}", f"-f={copy_all}", env=creds)
        assert b"s3cret-pw" not in proc.stderr + proc.stdout
        assert image_files(tmp_path / "out")["ctx/README"] == b"first\n"
        proc = lamina_build(tmp_path, f"-c={url}", f"-f={copy_all}", env=HTTP, expect=3)
        assert b"build context" in proc.stderr
        wrong = {**HTTP, "GIT_TOKEN": "not-the-password"}
        proc = lamina_build(tmp_path, f"-c={url}", f"-f={copy_all}", env=wrong, expect=3)
        assert b"not-the-password" not in proc.stderr
        assert auth in http.seen_auth


def test_git_context_recurse_submodules(tmp_path: Path, copy_all: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    with GitHttpServer(root) as http:
        make_repo(root, "sub.git")
        repo = make_repo(root, "top.git", submodule_url=f"{http.base}/sub.git")
        url = f"git://{http.base.removeprefix('http://')}/{repo.name}"
        lamina_build(tmp_path, f"-c={url}", f"-f={copy_all}", env=HTTP)
        files = image_files(tmp_path / "out")
        assert "ctx/.gitmodules" in files
        assert "ctx/vendor/sub/README" not in files  # kaniko's default: no submodules
        lamina_build(
            tmp_path, f"-c={url}", "--git=recurse-submodules=true", f"-f={copy_all}", env=HTTP
        )
        assert image_files(tmp_path / "out")["ctx/vendor/sub/README"] == b"second\n"
