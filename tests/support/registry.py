"""Real Docker distribution registries on loopback, for integration tests.

``start_registry(kind, workdir)`` starts the Debian ``docker-registry`` binary
(distribution 2.8) in one of three variants:

* ``plain``    -- HTTP, no auth;
* ``htpasswd`` -- HTTP with basic auth from a bcrypt htpasswd file;
* ``tls``      -- HTTPS with a server certificate signed by a throw-away CA.

The returned :class:`RunningRegistry` owns the process; :class:`RegistryServer`
is the immutable description tests use (host, credentials, CA, skopeo args).

``write_oci_layout`` / ``push_oci_image`` build a small image by hand (an OCI
layout written with plain JSON) and push it with ``skopeo copy``, so tests have
something to pull without any base-image fixture.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RegistryKind = Literal["plain", "htpasswd", "tls", "mtls"]

REGISTRY_BINARY = "docker-registry"
TEST_USERNAME = "lamina"
TEST_PASSWORD = "lamina-secret-pw"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class RegistryFixtureError(RuntimeError):
    """The test registry could not be started (missing binary, no answer...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryServer:
    """A running test registry, as tests see it."""

    kind: RegistryKind
    host: str
    data_dir: Path
    log_file: Path
    username: str | None = None
    password: str | None = None
    ca_cert: Path | None = None
    cert_dir: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.kind in ("tls", "mtls") else "http"

    @property
    def client_cert(self) -> tuple[Path, Path] | None:
        """(cert, key) the ``mtls`` registry requires; None for the others."""
        if self.kind != "mtls" or self.ca_cert is None:
            return None
        return self.ca_cert.parent / "client.crt", self.ca_cert.parent / "client.key"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _args(self, prefix: str) -> list[str]:
        args: list[str] = []
        if self.kind in ("tls", "mtls"):
            assert self.cert_dir is not None
            args.append(f"--{prefix}cert-dir={self.cert_dir}")
        else:
            args.append(f"--{prefix}tls-verify=false")
        if self.username is not None:
            args.append(f"--{prefix}creds={self.username}:{self.password}")
        return args

    def skopeo_dest_args(self) -> list[str]:
        return self._args("dest-")

    def skopeo_src_args(self) -> list[str]:
        return self._args("src-")

    def skopeo_args(self) -> list[str]:
        """Args for single-image commands (``skopeo inspect``)."""
        return self._args("")

    def write_docker_config(self, directory: Path) -> Path:
        """Write ``directory/config.json`` with an ``auths`` entry for this registry."""
        directory.mkdir(parents=True, exist_ok=True)
        auths: dict[str, Any] = {}
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            auths[self.host] = {"auth": token}
        path = directory / "config.json"
        path.write_text(json.dumps({"auths": auths}), encoding="utf-8")
        return path

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_cert is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        if self.client_cert is not None:
            ctx.load_cert_chain(*map(str, self.client_cert))
        return ctx

    def url_status(self, path: str, *, auth: bool = True) -> int:
        """HTTP status of ``GET base_url + path`` (for fixtures and sanity checks)."""
        req = urllib.request.Request(self.base_url + path)
        if auth and self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl_context()) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@dataclass(slots=True)
class RunningRegistry:
    """The process behind a :class:`RegistryServer`."""

    server: RegistryServer
    process: subprocess.Popen[bytes]
    _log: io.BufferedWriter | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_tls_material(
    directory: Path, *, common_name: str = "lamina test CA", dns_names: Sequence[str] = ()
) -> tuple[Path, Path, Path]:
    """A CA, a server cert (SAN IP:127.0.0.1, DNS:localhost and ``dns_names``) and a client
    cert (``client.crt``/``client.key``, for mTLS). Returns (ca, server cert, server key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    *(x509.DNSName(name) for name in ("localhost", *dns_names)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina test client")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "client.crt").write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "client.key").write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_path = directory / "ca.crt"
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def _htpasswd_line(username: str, password: str) -> str:
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryFixtureError(
            "htpasswd not found: install the Debian package 'apache2-utils' "
            "(the registry only accepts bcrypt htpasswd files)"
        )
    out = subprocess.run(
        [tool, "-Bbn", username, password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip() + "\n"


def _config_yaml(kind: RegistryKind, port: int, data_dir: Path, workdir: Path) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  fields:",
        f"    service: lamina-test-{kind}",
        "storage:",
        "  cache:",
        "    blobdescriptor: inmemory",
        "  filesystem:",
        f"    rootdirectory: {data_dir}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if kind in ("tls", "mtls"):
        lines += [
            "  tls:",
            f"    certificate: {workdir / 'tls' / 'server.crt'}",
            f"    key: {workdir / 'tls' / 'server.key'}",
        ]
    if kind == "mtls":
        lines += ["    clientcas:", f"      - {workdir / 'tls' / 'ca.crt'}"]
    if kind == "htpasswd":
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: lamina-test",
            f"    path: {workdir / 'htpasswd'}",
        ]
    return "\n".join(lines) + "\n"


def start_registry(
    kind: RegistryKind,
    workdir: Path,
    *,
    timeout: float = 20.0,
    credentials: tuple[str, str] | None = None,
) -> RunningRegistry:
    """Start a real registry of ``kind`` in ``workdir`` on a free loopback port
    (``htpasswd``: accepting ``credentials``, by default the TEST_ pair)."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RegistryFixtureError(
            f"{REGISTRY_BINARY!r} not found on PATH: install the Debian package "
            "'docker-registry' (Docker distribution 2.8) to run the registry tests"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    data_dir.mkdir(exist_ok=True)
    username = password = None
    ca_cert = cert_dir = None
    if kind == "htpasswd":
        username, password = credentials or (TEST_USERNAME, TEST_PASSWORD)
        (workdir / "htpasswd").write_text(_htpasswd_line(username, password), encoding="utf-8")
    port = free_port()
    host = f"127.0.0.1:{port}"
    if kind in ("tls", "mtls"):
        ca_cert, _, _ = make_tls_material(workdir / "tls")
        cert_dir = workdir / "certs.d" / host
        cert_dir.mkdir(parents=True)
        shutil.copy(ca_cert, cert_dir / "ca.crt")
        if kind == "mtls":  # containers-image cert dirs: NAME.cert + NAME.key
            shutil.copy(workdir / "tls" / "client.crt", cert_dir / "client.cert")
            shutil.copy(workdir / "tls" / "client.key", cert_dir / "client.key")
    config = workdir / "config.yml"
    config.write_text(_config_yaml(kind, port, data_dir, workdir), encoding="utf-8")
    log_file = workdir / "registry.log"
    server = RegistryServer(
        kind=kind,
        host=host,
        data_dir=data_dir,
        log_file=log_file,
        username=username,
        password=password,
        ca_cert=ca_cert,
        cert_dir=cert_dir,
    )
    log = log_file.open("ab")
    proc = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    running = RunningRegistry(server=server, process=proc, _log=log)
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if server.url_status("/v2/") == 200:
                return running
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.05)
    running.stop()
    tail = log_file.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise RegistryFixtureError(
        f"the {kind} registry on {host} did not answer /v2/ within {timeout}s "
        f"(exit status {proc.returncode}, last error {last_error!r}); registry log:\n{tail}"
    )


# --------------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutImage:
    """An image written to an OCI layout by :func:`write_oci_layout`."""

    layout: Path
    tag: str
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layers: tuple[bytes, ...]  # compressed blobs
    layer_digests: tuple[str, ...]
    diff_ids: tuple[str, ...]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer_tar(files: Mapping[str, bytes]) -> bytes:
    """A reproducible uncompressed tar holding ``files`` (name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1735689600
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_oci_layout(
    layout: Path,
    tag: str,
    layer_tars: Sequence[bytes],
    *,
    architecture: str = "amd64",
    os_name: str = "linux",
    labels: Mapping[str, str] | None = None,
) -> LayoutImage:
    """Write (or add to) an OCI layout with one image tagged ``tag``."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}', encoding="utf-8")

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    compressed = tuple(gzip.compress(t, mtime=0) for t in layer_tars)
    layer_digests = tuple(put(c) for c in compressed)
    diff_ids = tuple(sha256(t) for t in layer_tars)
    config_obj: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": dict(labels or {})},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": f"test layer {i}"} for i in range(len(compressed))],
    }
    config = json.dumps(config_obj, sort_keys=True).encode()
    config_digest = put(config)
    manifest_obj = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": d, "size": len(c)}
            for d, c in zip(layer_digests, compressed, strict=True)
        ],
    }
    manifest = json.dumps(manifest_obj, sort_keys=True).encode()
    manifest_digest = put(manifest)
    index_path = layout / "index.json"
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text(encoding="utf-8"))
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ]
    index["manifests"].append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(json.dumps(index), encoding="utf-8")
    return LayoutImage(
        layout=layout,
        tag=tag,
        manifest=manifest,
        manifest_digest=manifest_digest,
        config=config,
        config_digest=config_digest,
        layers=compressed,
        layer_digests=layer_digests,
        diff_ids=diff_ids,
    )


def skopeo(*args: str, timeout: float = 60) -> str:
    tool = shutil.which("skopeo")
    if tool is None:
        raise RegistryFixtureError("skopeo not found: install the Debian package 'skopeo'")
    proc = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RegistryFixtureError(f"skopeo {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def push_oci_image(
    server: RegistryServer,
    repo_tag: str,
    workdir: Path,
    *,
    layer_files: Sequence[Mapping[str, bytes]] = ({"hello.txt": b"hello\n"},),
    architecture: str = "amd64",
    labels: Mapping[str, str] | None = None,
) -> LayoutImage:
    """Generate a small image and push it to ``server`` as ``repo_tag`` with skopeo."""
    tag = repo_tag.rsplit(":", 1)[-1] if ":" in repo_tag else "latest"
    image = write_oci_layout(
        workdir / "layout",
        tag,
        [make_layer_tar(f) for f in layer_files],
        architecture=architecture,
        labels=labels,
    )
    skopeo(
        "copy",
        "--quiet",
        "--preserve-digests",
        *server.skopeo_dest_args(),
        f"oci:{image.layout}:{tag}",
        f"docker://{server.host}/{repo_tag}",
    )
    return image


def put_manifest(
    server: RegistryServer, repo: str, reference: str, body: bytes, media_type: str
) -> int:
    """PUT a raw manifest (e.g. an index, or a malformed one) straight to the registry."""
    req = urllib.request.Request(
        f"{server.base_url}/v2/{repo}/manifests/{reference}",
        data=body,
        method="PUT",
        headers={"Content-Type": media_type},
    )
    if server.username is not None:
        token = base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=server.ssl_context()) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
