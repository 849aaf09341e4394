"""AWS recipes end to end against moto in server mode on loopback: an ``s3://`` build
context, a push to an ECR-named registry (the AWS chain, then ``GetAuthorizationToken``),
static keys, a shared credentials file and IRSA web identity, and the bad inputs.

The ECR host name reaches a loopback htpasswd registry that accepts moto's token pair
through a forward proxy (``HTTP_PROXY``, plain HTTP with ``--insecure-registry``):
lamina looks credentials up for the host it talks to, as kaniko does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.cloud import BUCKET, S3_CONTEXT, targz
from tests.support.forward_proxy import ForwardProxy
from tests.support.moto import ECR_HOST, MotoServer, ecr_password, start_moto
from tests.support.registry import (
    RegistryServer,
    free_port,
    make_tls_material,
    push_oci_image,
    skopeo,
)

pytest.importorskip("botocore")
pytest.importorskip("moto")

SRC = Path(__file__).resolve().parents[2] / "src"
CONTEXT = S3_CONTEXT
SECRETS = ("testing", ecr_password())


def run_lamina(
    tmp_path: Path, *args: str, env: Mapping[str, str], expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """``python -m lamina build ARGS`` with an empty docker config; asserts the exit code,
    that no traceback was printed and that no secret appears in the output."""
    docker_config = tmp_path / "docker"
    docker_config.mkdir(exist_ok=True)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": str(docker_config),
        **env,
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "lamina", "build", *args,
            # debug for a build that works (every log line checked for secrets); an error
            # at debug verbosity prints its traceback by design
            f"--verbosity={'debug' if expect == 0 else 'info'}",
            f"--kaniko-dir={tmp_path / 'kaniko'}",
        ],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, output
    assert "Traceback" not in output
    for secret in SECRETS:
        assert secret not in output
    return proc


def pushed_files(registry: RegistryServer, repo: str, tmp_path: Path) -> dict[str, bytes]:
    """The files of the image ``repo`` in ``registry``, read with skopeo."""
    layout = tmp_path / "pulled"
    skopeo(
        "copy", *registry.skopeo_src_args(), f"docker://{registry.host}/{repo}", f"oci:{layout}:x"
    )
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / index["manifests"][0]["digest"][7:]).read_text())
    out: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blob / layer["digest"][7:], mode="r:*") as tar:
            for m in tar:
                data = tar.extractfile(m) if m.isfile() else None
                if data is not None:
                    out[m.name.removeprefix("./")] = data.read()
    return out


def push_args(tag: str) -> list[str]:
    return [f"--destination={ECR_HOST}/{tag}", f"--insecure-registry={ECR_HOST}"]


def proxy_env(proxy: ForwardProxy) -> dict[str, str]:
    return {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url}


# -- the recipes -------------------------------------------------------------------------


def test_s3_context_pushed_to_ecr_with_static_keys(
    tmp_path: Path, moto: MotoServer, ecr_registry: RegistryServer, ecr_proxy: ForwardProxy
) -> None:
    run_lamina(
        tmp_path,
        f"--context=s3://{BUCKET}/ctx.tar.gz",
        *push_args("app:keys"),
        env={**moto.environ(), **proxy_env(ecr_proxy)},
    )
    files = pushed_files(ecr_registry, "app:keys", tmp_path)
    assert files["app/hello.txt"] == b"hello from s3\n"
    assert files["app/sub/inner.txt"] == b"inner\n"
    hosts = {host for _, host, _ in ecr_proxy.requests}
    assert hosts == {ECR_HOST}  # lamina talked to the ECR name, through the proxy only
    assert ("PUT", ECR_HOST, "/v2/app/manifests/keys") in ecr_proxy.requests
    assert not (tmp_path / "kaniko" / "buildcontext").exists()


def test_default_key_sub_path_and_a_shared_credentials_file(
    tmp_path: Path, moto: MotoServer, ecr_registry: RegistryServer, ecr_proxy: ForwardProxy
) -> None:
    creds = tmp_path / "aws-credentials"
    creds.write_text("[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = moto.environ(AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_PROFILE="ci")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    run_lamina(
        tmp_path,
        f"--context=s3://{BUCKET}",  # kaniko's default object: context.tar.gz
        "--context-sub-path=sub",
        *push_args("app:profile"),
        env={**env, **proxy_env(ecr_proxy)},
    )
    files = pushed_files(ecr_registry, "app:profile", tmp_path)
    assert files == {"s/inner.txt": b"inner\n"}


def test_irsa_web_identity_through_sts(
    tmp_path: Path, moto: MotoServer, ecr_registry: RegistryServer, ecr_proxy: ForwardProxy
) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl")
    env = moto.environ(
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/ci-builder",
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_ROLE_SESSION_NAME="lamina-test",
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    proc = run_lamina(
        tmp_path,
        f"--context=s3://{BUCKET}/ctx.tar.gz",
        *push_args("app:irsa"),
        env={**env, **proxy_env(ecr_proxy)},
    )
    assert "credentials from AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (STS)" in proc.stderr
    assert pushed_files(ecr_registry, "app:irsa", tmp_path)["app/hello.txt"] == b"hello from s3\n"


def test_registry_map_to_an_ecr_mirror_uses_ecr_credentials(
    tmp_path: Path, moto: MotoServer, ecr_registry: RegistryServer, ecr_proxy: ForwardProxy
) -> None:
    """A pull-through cache in ECR as a --registry-map target: credentials are those of
    the host lamina talks to, the mirror (kaniko's behaviour)."""
    push_oci_image(
        ecr_registry, "hub/base:1", tmp_path / "base", layer_files=({"base.txt": b"base\n"},)
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM upstream.example/base:1\nCOPY hello.txt /\n")
    (ctx / "hello.txt").write_text("hello\n")
    ecr_proxy.requests.clear()
    run_lamina(
        tmp_path,
        f"--context={ctx}",
        f"--registry-map=upstream.example={ECR_HOST}/hub",
        f"--insecure-registry={ECR_HOST}",
        "--no-push",
        f"--oci-layout-path={tmp_path / 'out'}",
        env={**moto.environ(), **proxy_env(ecr_proxy)},
    )
    assert ("GET", ECR_HOST, "/v2/hub/base/manifests/1") in ecr_proxy.requests
    out = tmp_path / "out"
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    assert len(manifest["layers"]) == 2  # the base's layer came from the mirror


class _ContainerCredentials(BaseHTTPRequestHandler):
    """ECS/EKS Pod Identity's container credentials endpoint, checking its token header."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "pod-identity-token":
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {
                "AccessKeyId": "ASIACONTAINER",
                "SecretAccessKey": "testing",
                "Token": "container-session-token",
                "Expiration": "2999-01-01T00:00:00Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_container_credentials(
    tmp_path: Path, moto: MotoServer, ecr_registry: RegistryServer, ecr_proxy: ForwardProxy
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ContainerCredentials)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = moto.environ(
            AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{server.server_address[1]}/c",
            AWS_CONTAINER_AUTHORIZATION_TOKEN="pod-identity-token",
        )
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        proc = run_lamina(
            tmp_path,
            f"--context=s3://{BUCKET}/ctx.tar.gz",
            *push_args("app:container"),
            env={**env, **proxy_env(ecr_proxy)},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "credentials from the container credentials endpoint" in proc.stderr
    for secret in ("pod-identity-token", "container-session-token"):
        assert secret not in proc.stderr
    files = pushed_files(ecr_registry, "app:container", tmp_path)
    assert files["app/hello.txt"] == b"hello from s3\n"


def test_s3_endpoint_over_https_trusts_ssl_cert_dir(tmp_path: Path) -> None:
    """botocore reads neither SSL_CERT_FILE nor SSL_CERT_DIR: lamina hands it its trust."""
    ca, cert, key = make_tls_material(tmp_path / "tls")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "test-ca.pem").write_bytes(ca.read_bytes())
    with start_moto(tls=(cert, key)) as server:
        s3 = server.client("s3", verify=str(ca))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="ctx.tar.gz", Body=targz(CONTEXT))
        tmp = tmp_path / "tmp"
        tmp.mkdir()
        env = server.environ(S3_ENDPOINT=server.endpoint, TMPDIR=str(tmp))
        run_lamina(
            tmp_path,
            f"--context=s3://{BUCKET}/ctx.tar.gz",
            "--no-push",
            env={**env, "SSL_CERT_DIR": str(certs)},
        )
        proc = run_lamina(
            tmp_path, f"--context=s3://{BUCKET}/ctx.tar.gz", "--no-push", env=env, expect=3
        )
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr
    assert list(tmp.iterdir()) == []  # the bundle written for botocore is gone


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "hint"),
    [
        ("missing.tar.gz", f"s3://{BUCKET}/missing.tar.gz: 404 NoSuchKey", "object key"),
        ("plain.txt", f"cannot unpack the build context s3://{BUCKET}/plain.txt", "gzip"),
    ],
)
def test_bad_objects_are_context_errors(
    tmp_path: Path, moto: MotoServer, key: str, text: str, hint: str
) -> None:
    proc = run_lamina(
        tmp_path, f"--context=s3://{BUCKET}/{key}", "--no-push", env=moto.environ(), expect=3
    )
    assert text in proc.stderr
    assert "hint:" in proc.stderr
    assert hint in proc.stderr.rsplit("hint:", 1)[1]


def test_missing_bucket_and_no_bucket(tmp_path: Path, moto: MotoServer) -> None:
    proc = run_lamina(
        tmp_path, "--context=s3://no-such-bucket/ctx.tar.gz", "--no-push",
        env=moto.environ(), expect=3,
    )  # fmt: skip
    assert "s3://no-such-bucket/ctx.tar.gz: 404 NoSuchBucket" in proc.stderr
    assert "check the bucket name" in proc.stderr
    proc = run_lamina(tmp_path, "--context=s3:///ctx.tar.gz", "--no-push", env={}, expect=3)
    assert "names no bucket" in proc.stderr


def test_hostile_tarball_stays_inside(tmp_path: Path, moto: MotoServer) -> None:
    proc = run_lamina(
        tmp_path,
        f"--context=s3://{BUCKET}/hostile.tar.gz",
        "--no-push",
        f"--oci-layout-path={tmp_path / 'out'}",
        env=moto.environ(),
    )
    assert "../escaped.txt" in proc.stderr
    assert not list(tmp_path.glob("**/escaped.txt"))


def test_malformed_credentials_file(
    tmp_path: Path, moto: MotoServer, ecr_proxy: ForwardProxy
) -> None:
    creds = tmp_path / "aws-credentials"
    creds.write_text("this is [not an ini file\n  = testing\n")
    env = moto.environ(AWS_SHARED_CREDENTIALS_FILE=str(creds))
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(targz(CONTEXT))
    proc = run_lamina(
        tmp_path,
        f"--context=tar://{archive}",
        *push_args("app:bad"),
        env={**env, **proxy_env(ecr_proxy)},
        expect=4,
    )
    assert str(creds) in proc.stderr
    assert "AWS credential chain failed" in proc.stderr


class _Sts403(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            b"<Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
            b"</Error><RequestId>1</RequestId></ErrorResponse>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def sts_403() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sts403)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sts_refusing_the_web_identity_is_an_auth_error(
    tmp_path: Path, moto: MotoServer, ecr_proxy: ForwardProxy, sts_403: str
) -> None:
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtand0In0.c2ln")
    env = moto.environ(
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/ci-builder",
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_ENDPOINT_URL_STS=sts_403,
    )
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(targz(CONTEXT))
    proc = run_lamina(
        tmp_path,
        f"--context=tar://{archive}",
        *push_args("app:sts"),
        env={**env, **proxy_env(ecr_proxy)},
        expect=4,
    )
    err = proc.stderr
    assert f"Amazon ECR credentials for {ECR_HOST}" in err
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in err
    assert "AccessDenied" in err
    assert "Not authorized" in err
    assert token.read_text() not in err


def test_ecr_token_service_down(tmp_path: Path, moto: MotoServer, ecr_proxy: ForwardProxy) -> None:
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(targz(CONTEXT))
    down = f"http://127.0.0.1:{free_port()}"
    proc = run_lamina(
        tmp_path,
        f"--context=tar://{archive}",
        *push_args("app:down"),
        env={**moto.environ(AWS_ENDPOINT_URL_ECR=down), **proxy_env(ecr_proxy)},
        expect=4,
    )
    assert f"Amazon ECR GetAuthorizationToken for {ECR_HOST}" in proc.stderr
    assert "AWS_ACCESS_KEY_ID" in proc.stderr  # where the credentials came from
    assert down in proc.stderr
