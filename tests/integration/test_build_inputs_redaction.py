"""Secrets in a build's inputs stay out of its outputs (issue 12, item 15): an ADD URL's
user-info reaches no blob, config, history, cache entry, report, log or error (a cache hit
gives the same history, hence the same digest, as the miss), and build argument values
are stored in cache entries as digests only. Real builds through ``python -m lamina``
with a base image from the real registry and an OCI-layout cache repository."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lamina.oci.oci_layout import OCILayout
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

if os.geteuid() != 0:  # pragma: no cover
    pytest.skip("RUN needs root here", allow_module_level=True)

SRC = Path(__file__).resolve().parents[2] / "src"
PASSWORD = "pw-Zq8s3cret"
TOKEN = "tok-Xv7s3cret"
BODY = b"downloaded with credentials\n"
SHA = hashlib.sha256(BODY).hexdigest()


class AuthServer:
    """Serves ``/f`` to Basic ``user:PASSWORD`` only (401 otherwise)."""

    def __init__(self) -> None:
        expected = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path == "/f" and self.headers.get("Authorization") == expected
                body = BODY if ok else b"no"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    s = AuthServer()
    yield s
    s.close()


def build(
    tmp_path: Path, ctx: Path, registry: RegistryServer, name: str, expect: int = 0
) -> tuple[str, str]:
    """One CLI build with the cache; returns (stderr, the image digest or "")."""
    out = tmp_path / "out" / name
    proc = subprocess.run(
        [
            sys.executable, "-m", "lamina", "build", f"--context={ctx}", "--no-push",
            f"--oci-layout-path={out}", f"--kaniko-dir={tmp_path / 'kaniko'}",
            f"--insecure-registry={registry.host}", "--cache=true",
            f"--cache-repo=oci:{tmp_path / 'cacherepo'}", "--reproducible",
            f"--build-arg=TOKEN={TOKEN}", f"--cache-report={tmp_path / 'reports' / name}",
            "--verbosity=debug",
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC),
             "HOME": str(tmp_path)},
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == expect, proc.stderr
    if expect == 0:  # a failure's traceback is printed at --verbosity=debug, by design
        assert "Traceback" not in proc.stderr
    digest = str(OCILayout.open(out).image().digest()) if expect == 0 else ""
    return proc.stderr, digest


def leaks(root: Path, secret: bytes) -> list[str]:
    """Files below ``root`` holding ``secret`` (gzip blobs decompressed)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if secret in data:
            found.append(str(path.relative_to(root)))
    return found


def test_add_url_credentials_and_build_args_never_reach_outputs(
    tmp_path: Path, busybox_image: str, registry_plain: RegistryServer, auth_server: AuthServer
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    url = f"http://user:{PASSWORD}@127.0.0.1:{auth_server.port}/f"
    (ctx / "Dockerfile").write_text(
        f'FROM {busybox_image}\nARG TOKEN\nRUN test -n "$TOKEN" && echo ok > /ok\n'
        f"ADD --checksum=sha256:{SHA} {url} /f\n"
    )
    cold_log, cold = build(tmp_path, ctx, registry_plain, "cold")
    warm_log, warm = build(tmp_path, ctx, registry_plain, "warm")
    report = json.loads((tmp_path / "reports" / "warm").read_text())["steps"]
    assert [r["status"] for r in report if r["step"] in (2, 3)] == ["hit", "hit"]
    assert cold == warm  # the hit's history entry is the miss's, redacted alike
    image = OCILayout.open(tmp_path / "out" / "warm").image()
    history = [h.created_by for h in image.config().history]
    assert any(f"***@127.0.0.1:{auth_server.port}/f" in (h or "") for h in history)
    for log in (cold_log, warm_log):
        assert PASSWORD not in log
        assert TOKEN not in log
    secret = PASSWORD.encode()
    for where in ("out", "cacherepo", "reports"):
        assert leaks(tmp_path / where, secret) == [], where
    # build argument values: digests only in the cache entries and the report
    assert leaks(tmp_path / "cacherepo", TOKEN.encode()) == []
    assert leaks(tmp_path / "reports", TOKEN.encode()) == []
    token_digest = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    labels = [
        p.read_text()
        for p in (tmp_path / "cacherepo" / "blobs" / "sha256").iterdir()
        if b"dev.lamina.cache.inputs" in p.read_bytes()
    ]
    assert any(token_digest in text for text in labels)
    assert not (tmp_path / "kaniko").exists() or list((tmp_path / "kaniko").iterdir()) == []

    # a failed download names the URL without the password
    (ctx / "Dockerfile").write_text(f"FROM scratch\nADD --checksum=sha256:{'0' * 64} {url} /f\n")
    err, _ = build(tmp_path, ctx, registry_plain, "bad", expect=5)
    assert "checksum mismatch" in err
    assert PASSWORD not in err
    assert f"***@127.0.0.1:{auth_server.port}/f" in err
