"""The TLS trust: ``SSL_CERT_DIR`` read as Go reads it (every file), lazily; the git bundle."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lamina.registry._acr import azure_trust
from lamina.registry._tls import (
    SystemTrustContext,
    cert_dir_files,
    system_trust_context,
    trust_bundle_file,
    write_trust_bundle,
)

HOST = "reg.test"


@dataclass(frozen=True, slots=True)
class _Pki:
    ca_pem: bytes
    server_cert: Path
    server_key: Path


def _pki(tmp_path: Path, label: str = "test") -> _Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{label} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = tmp_path / f"{label}-server.pem"
    key_path = tmp_path / f"{label}-server.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return _Pki(ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path)


def _handshake(client_ctx: ssl.SSLContext, pki: _Pki) -> None:
    """A full TLS handshake in memory between ``client_ctx`` and a server with ``pki``'s
    certificate; raises ``ssl.SSLCertVerificationError`` when the client does not trust it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                obj.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SSL_CERT_DIR", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_an_unhashed_ca_file_in_ssl_cert_dir_is_trusted(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """kaniko's way: a CA file dropped into ``/kaniko/ssl/certs`` (no ``c_rehash``)."""
    pki = _pki(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "my-registry-ca.crt").write_bytes(pki.ca_pem)
    (certs / "README").write_text("not a certificate\n")  # skipped, no error
    (certs / "sub").mkdir()  # a directory: skipped
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(system_trust_context(), pki)  # SSL_CERT_DIR not set: not trusted
    clean_env.setenv("SSL_CERT_DIR", f"{tmp_path / 'missing'}:{certs}")
    ctx = system_trust_context()
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing loaded before the handshake
    _handshake(ctx, pki)


def test_every_dir_of_ssl_cert_dir_and_ssl_cert_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    one, two = _pki(tmp_path, "one"), _pki(tmp_path, "two")
    three = _pki(tmp_path, "three")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "one.pem").write_bytes(one.ca_pem)
    (b / "two.pem").write_bytes(two.ca_pem)
    (b / "link.pem").symlink_to(b / "two.pem")  # the same file: listed once
    (tmp_path / "three.pem").write_bytes(three.ca_pem)
    clean_env.setenv("SSL_CERT_DIR", f"{a}:{b}")
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "three.pem"))
    assert cert_dir_files() == [a / "one.pem", b / "link.pem"]
    for pki in (one, two, three):
        _handshake(system_trust_context(), pki)


def test_not_verifying_never_loads(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    pki = _pki(tmp_path)
    (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path))
    ctx = SystemTrustContext()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _handshake(ctx, pki)
    assert ctx.cert_store_stats()["x509_ca"] == 0


def test_trust_bundle_for_git(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    target = tmp_path / "bundle.pem"
    assert not write_trust_bundle(target)  # neither variable: git keeps its defaults
    assert not target.exists()
    one, two = _pki(tmp_path, "one"), _pki(tmp_path, "two")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "one.crt").write_bytes(one.ca_pem)
    (certs / "junk").write_bytes(b"\x00\x01binary")
    (tmp_path / "file.pem").write_bytes(two.ca_pem.rstrip(b"\n"))
    clean_env.setenv("SSL_CERT_DIR", str(certs))
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "file.pem"))
    assert write_trust_bundle(target)
    data = target.read_bytes()
    assert data == two.ca_pem.rstrip(b"\n") + b"\n" + one.ca_pem
    ctx = ssl.create_default_context(cafile=str(target))
    _handshake(ctx, one)
    _handshake(ctx, two)


def test_trust_bundle_file_for_azure(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """azure-core's requests transport gets a CA file path: content-named, written anew."""
    clean_env.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    clean_env.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert trust_bundle_file() is None  # neither variable: the library's own default
    one = _pki(tmp_path, "one")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "kaniko-style.crt").write_bytes(one.ca_pem)
    clean_env.setenv("SSL_CERT_DIR", str(certs))
    first = trust_bundle_file()
    assert first is not None
    assert Path(first).parent == tmp_path / "tmp"
    _handshake(ssl.create_default_context(cafile=first), one)
    Path(first).write_bytes(b"planted\n")  # a file planted at the name is replaced
    assert trust_bundle_file() == first
    _handshake(ssl.create_default_context(cafile=first), one)
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [Path(first).name]
    assert azure_trust({"SSL_CERT_DIR": str(certs)}) == {"connection_verify": first}
    assert azure_trust({"SSL_CERT_DIR": str(certs), "REQUESTS_CA_BUNDLE": "/x.pem"}) == {}
