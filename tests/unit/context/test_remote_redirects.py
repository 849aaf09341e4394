"""Dockerfile URLs and https contexts follow only checked redirects (issue 12, item 12):
a redirect to ``data:``, ``file:`` or ``ftp:``, a loop, or one handing out credentials is
a ContextError naming the URL without credentials. A real loopback HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lamina.context import ContextSpec, download_dockerfile, fetch_context
from lamina.context._gitopts import GitContextOptions
from lamina.errors import ContextError

ROUTES = {
    "/data": "data:text/plain,FROM%20scratch",
    "/file": "file:///etc/passwd",
    "/ftp": "ftp://127.0.0.1/Dockerfile",
    "/loop": "/loop",
    "/creds": "http://eve:s3cret-pw@127.0.0.1/x",
    "/ok": None,
}


@pytest.fixture
def base() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            target = ROUTES.get(self.path)
            if self.path == "/ok" or self.path not in ROUTES:
                body = b"FROM scratch\n"
                self.send_response(200 if self.path == "/ok" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(302)
            self.send_header("Location", str(target))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://user:pw-secret@127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/data", "not an http(s) URL"),
        ("/file", "not an http(s) URL"),
        ("/ftp", "not an http(s) URL"),
        ("/loop", "more than 10 redirects"),
        ("/creds", "redirects to a URL with credentials"),
    ],
)
def test_dockerfile_url_redirects_are_checked(
    base: str, tmp_path: Path, path: str, message: str
) -> None:
    with pytest.raises(ContextError) as info:
        download_dockerfile(f"{base}{path}", tmp_path / "Dockerfile", timeout=10)
    assert message in info.value.message
    assert "pw-secret" not in info.value.message
    assert "s3cret-pw" not in info.value.message
    assert not (tmp_path / "Dockerfile").exists()


def test_dockerfile_url_is_downloaded(base: str, tmp_path: Path) -> None:
    got = download_dockerfile(f"{base}/ok", tmp_path / "Dockerfile", timeout=10)
    assert got.read_bytes() == b"FROM scratch\n"


@pytest.mark.parametrize("path", ["/data", "/file", "/loop", "/creds"])
def test_https_context_redirects_are_checked(base: str, tmp_path: Path, path: str) -> None:
    # the https:// context's download, aimed at the plain-http test server
    spec = ContextSpec(kind="https", location=f"{base}{path}", display="the test context")
    with pytest.raises(ContextError) as info:
        fetch_context(
            spec, tmp_path / "ctx", git=GitContextOptions(), stdin=None, on_warning=print,
            timeout=10,
        )  # fmt: skip
    assert "cannot download" in info.value.message
    assert "secret" not in info.value.message
