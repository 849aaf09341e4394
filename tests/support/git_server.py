"""Git repositories served on loopback, for ADD-of-git integration tests.

* :class:`GitHttpServer` speaks HTTP and hands every request to the real
  ``git http-backend`` CGI program (smart HTTP, protocol v2 included), from a
  thread of this process on a free loopback port. It can require an
  ``Authorization`` header (to test the ``GIT_AUTH_TOKEN`` secret) and records
  the ones it saw.
* :class:`GitDaemon` runs ``git daemon`` (the ``git://`` transport).
* :func:`make_repo` builds a small repository with branches, tags, a
  subdirectory, an executable file and a symlink, with fixed commit dates.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

#: committer/author dates of the test repository's commits (UTC seconds)
FIRST_COMMIT_TIME = 1_600_000_000
SECOND_COMMIT_TIME = 1_600_086_400
FEATURE_COMMIT_TIME = 1_600_172_800


def git(*args: str, cwd: Path | None = None, when: int | None = None) -> str:
    """Run git for a test (fixed identity, no user config); its stdout."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "LC_ALL": "C",
    }
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedRepo:
    """A bare repository under a server root, and what its refs point at."""

    bare: Path
    name: str
    first: str
    second: str
    feature: str
    #: the annotated tag v1's object (it points at ``first``)
    tag_object: str


def make_repo(
    root: Path, name: str = "repo.git", *, submodule_url: str | None = None
) -> ServedRepo:
    """``root/<name>``, a bare repository: main (2 commits), feature, tags v1 (annotated), v2.

    First commit: ``README``, ``src/app.sh`` (0755), ``src/lib/util.txt``,
    ``link -> README``. Second (main): ``README`` changed, ``NEWS`` added.
    ``feature`` (from the first): ``feature.txt``. With ``submodule_url``,
    the second commit adds it as the submodule ``vendor/sub``.
    """
    work = root / (name.removesuffix(".git") + "-work")
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("first\n")
    (work / "src" / "lib").mkdir(parents=True)
    (work / "src" / "app.sh").write_text("#!/bin/sh\necho app\n")
    os.chmod(work / "src" / "app.sh", 0o755)
    (work / "src" / "lib" / "util.txt").write_text("util\n")
    os.symlink("README", work / "link")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work, when=FIRST_COMMIT_TIME)
    first = git("rev-parse", "HEAD", cwd=work)
    git("tag", "-a", "-m", "version 1", "v1", cwd=work, when=FIRST_COMMIT_TIME)
    tag_object = git("rev-parse", "v1", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "feature.txt").write_text("feature\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "feature", cwd=work, when=FEATURE_COMMIT_TIME)
    feature = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    (work / "README").write_text("second\n")
    (work / "NEWS").write_text("news\n")
    if submodule_url is not None:
        git(
            "-c", "protocol.file.allow=always", "submodule", "add", "-q",
            submodule_url, "vendor/sub", cwd=work,
        )  # fmt: skip
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "second", cwd=work, when=SECOND_COMMIT_TIME)
    second = git("rev-parse", "HEAD", cwd=work)
    git("tag", "v2", cwd=work)
    bare = root / name
    git("clone", "-q", "--bare", str(work), str(bare))
    git("update-server-info", cwd=bare)
    return ServedRepo(
        bare=bare, name=name, first=first, second=second, feature=feature, tag_object=tag_object
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class _State:
    root: Path
    required_auth: str | None
    protocol_v2: bool = True
    seen_auth: list[str] = field(default_factory=list)


class _CgiHandler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization")
        if auth is not None:
            state.seen_auth.append(auth)
        if state.required_auth is not None and auth != state.required_auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self._body()
        parts = urlsplit(self.path)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "GIT_PROJECT_ROOT": str(state.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": "/nonexistent",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol") and state.protocol_v2:
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        # port 0: the kernel picks a free port at bind time (no window for another to take it)
        super().__init__(("127.0.0.1", 0), _CgiHandler)
        self.state = state


class GitHttpServer:
    """``git http-backend`` behind a loopback HTTP server; ``with`` starts and stops it."""

    def __init__(
        self,
        root: Path,
        *,
        required_auth: str | None = None,
        protocol_v2: bool = True,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``protocol_v2=False``: speak protocol v0 only (no fetching a commit by SHA);
        ``tls=(cert, key)``: HTTPS with that server certificate."""
        self.state = _State(root=root, required_auth=required_auth, protocol_v2=protocol_v2)
        self._server = _Server(self.state)
        self._scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    @property
    def seen_auth(self) -> list[str]:
        return self.state.seen_auth

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class GitDaemon:
    """``git daemon`` exporting every repository below ``root`` on a loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"git://127.0.0.1:{self.port}"

    def __enter__(self) -> GitDaemon:
        self._proc = subprocess.Popen(
            [
                "git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                f"--port={self.port}", f"--base-path={self.root}", str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("git daemon did not start")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


class GitSSHServer:
    """``sshd`` on a loopback port letting root in with one key, and an agent holding it.

    Repositories are reached as ``ssh://root@127.0.0.1:<port>/<absolute path>``;
    ``agent_socket`` is the ``ssh-agent`` socket to pass as ``--ssh default``.
    Needs ``/usr/sbin/sshd`` (Debian package openssh-server) and root.
    """

    SSHD = Path("/usr/sbin/sshd")

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.agent_socket = workdir / "agent.sock"
        self._procs: list[subprocess.Popen[bytes]] = []

    def base(self, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}"

    def __enter__(self) -> GitSSHServer:
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                check=True,
                capture_output=True,
            )
        (d / "authorized_keys").write_bytes((d / "client_key.pub").read_bytes())
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
            f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        try:
            self._procs.append(
                subprocess.Popen(
                    [str(self.SSHD), "-D", "-e", "-f", str(d / "sshd_config")],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self._procs.append(
                subprocess.Popen(
                    ["ssh-agent", "-D", "-a", str(self.agent_socket)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            deadline = time.monotonic() + 10
            while not self.agent_socket.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            subprocess.run(
                ["ssh-add", "-q", str(d / "client_key")],
                env={"SSH_AUTH_SOCK": str(self.agent_socket), "PATH": "/usr/bin:/bin"},
                check=True,
                capture_output=True,
            )
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1),
                ):
                    return self
                time.sleep(0.05)
            raise RuntimeError("sshd did not start")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
