"""ADD <url>: odd redirects are clear errors, and a URL's user-info reaches no message
(issue 12, items 12 and 15). A real loopback HTTP server."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lamina.builder._fetch import MAX_REDIRECTS, fetch_url
from lamina.errors import BuildStepError, SourceLocation

BODY = b"the body\n"
SHA = hashlib.sha256(BODY).hexdigest()
SECRET = "pw-s3cret"
LOC = SourceLocation(file="Dockerfile", line=7)


class Server:
    """Answers from a ``path -> (status, headers)`` table; ``/ok`` serves BODY."""

    def __init__(self, routes: Mapping[str, tuple[int, Mapping[str, str]]]) -> None:
        self.seen: list[tuple[str, str | None]] = []
        table, seen = dict(routes), self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization")))
                status, headers = table.get(self.path, (404, {}))
                body = BODY if self.path == "/ok" else b""
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def creds_base(self) -> str:
        return f"http://user:{SECRET}@127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def loc(status: int, where: str) -> tuple[int, Mapping[str, str]]:
    return (status, {"Location": where})


@pytest.fixture
def other() -> Iterator[Server]:
    s = Server({"/ok": (200, {})})
    yield s
    s.close()


@pytest.fixture
def server(other: Server) -> Iterator[Server]:
    s = Server(
        {
            "/ok": (200, {}),
            "/data": loc(302, "data:text/plain,hello"),
            "/file": loc(301, "file:///etc/passwd"),
            "/ftp": loc(307, "ftp://127.0.0.1/x"),
            "/loop": loc(302, "/loop"),
            "/creds": loc(302, f"http://eve:{SECRET}@127.0.0.1/x"),
            "/nolocation": (302, {}),
            "/same": loc(308, "/ok"),
            "/away": loc(302, f"{other.base}/ok"),
        }
    )
    yield s
    s.close()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/data", "redirects to 'data:text/plain,hello', not an http(s) URL"),
        ("/file", "redirects to 'file:///etc/passwd', not an http(s) URL"),
        ("/ftp", "not an http(s) URL"),
        ("/loop", f"more than {MAX_REDIRECTS} redirects"),
        ("/creds", "redirects to a URL with credentials"),
        ("/nolocation", "a redirect without a Location"),
    ],
)
def test_odd_redirects_are_clear_errors(
    server: Server, tmp_path: Path, path: str, message: str
) -> None:
    with pytest.raises(BuildStepError) as info:
        fetch_url(f"{server.creds_base}{path}", tmp_path, location=LOC)
    assert message in info.value.message
    assert info.value.location == LOC
    assert SECRET not in info.value.message
    assert list(tmp_path.iterdir()) == []  # the partial file is gone
    if path == "/loop":
        assert len(server.seen) == MAX_REDIRECTS + 1


def test_user_info_authenticates_its_own_origin_only(
    server: Server, other: Server, tmp_path: Path
) -> None:
    expected = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    got = fetch_url(f"{server.creds_base}/same", tmp_path, checksum=f"sha256:{SHA}")
    assert got.host.read_bytes() == BODY
    assert got.name == "same"
    assert SECRET not in got.url
    assert got.url.endswith("/same")
    assert server.seen == [("/same", expected), ("/ok", expected)]
    fetch_url(f"{server.creds_base}/away", tmp_path)
    assert server.seen[-1] == ("/away", expected)
    assert other.seen == [("/ok", None)]  # never sent to another host


def test_download_errors_never_show_the_password(server: Server, tmp_path: Path) -> None:
    with pytest.raises(BuildStepError) as info:
        fetch_url(f"{server.creds_base}/missing", tmp_path, location=LOC)
    assert "HTTP 404" in info.value.message
    with pytest.raises(BuildStepError) as mismatch:
        fetch_url(f"{server.creds_base}/ok", tmp_path, checksum="sha256:" + "0" * 64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BuildStepError) as refused:
        fetch_url(f"http://user:{SECRET}@127.0.0.1:{port}/x", tmp_path, timeout=5)
    for exc in (info.value, mismatch.value, refused.value):
        assert SECRET not in exc.message
        assert SECRET not in str(exc)
        assert "user:***@" not in exc.message
        assert "***@127.0.0.1" in exc.message
        assert exc.__cause__ is None or SECRET not in str(exc.__cause__)
