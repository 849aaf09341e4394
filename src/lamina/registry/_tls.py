"""The trusted CA certificates of every TLS client lamina makes (registries, contexts, ADD).

Trust is what OpenSSL's default paths give (``SSL_CERT_FILE``, or the system bundle;
``SSL_CERT_DIR`` looked up by hashed name) **plus every file in each ``SSL_CERT_DIR``
directory** (colon-separated), as Go and so kaniko read it: kaniko's users drop a
``my-ca.crt`` into ``/kaniko/ssl/certs/`` without running ``c_rehash``. Files that hold no
PEM certificate are skipped.

The certificates are loaded on a context's first handshake, not when it is made: loading
costs tens of milliseconds and a plain-HTTP endpoint never needs it.
:func:`write_trust_bundle` gives the same set to the ``git`` program, whose TLS library
reads neither variable.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SystemTrustContext",
    "cert_dir_files",
    "system_trust_context",
    "trust_bundle_file",
    "write_trust_bundle",
]

_log = logging.getLogger("lamina.registry")
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
#: a CA file larger than this is not a CA file (bounds what a stray file costs)
_MAX_CA_FILE = 16 * 1024 * 1024


def cert_dir_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Every regular file (symlinks followed) in each ``SSL_CERT_DIR`` directory, in order
    (directories as listed, files by name), each real file once."""
    env = os.environ if environ is None else environ
    seen: set[str] = set()
    out: list[Path] = []
    for directory in env.get("SSL_CERT_DIR", "").split(":"):
        if not directory:
            continue
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = Path(directory, name)
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            out.append(path)
    return out


def _pem_certificates(path: Path) -> bytes | None:
    """The file's bytes when it holds a PEM certificate (None: unreadable, or none)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_CA_FILE + 1)
    except OSError as exc:
        _log.debug("CA file %s skipped: %s", path, exc.strerror or exc)
        return None
    if len(data) > _MAX_CA_FILE or _PEM_CERT not in data:
        _log.debug("CA file %s skipped: no PEM certificate", path)
        return None
    return data


def load_cert_dirs(ctx: ssl.SSLContext, environ: Mapping[str, str] | None = None) -> int:
    """Add every PEM certificate file of the ``SSL_CERT_DIR`` directories; how many loaded."""
    loaded = 0
    for path in cert_dir_files(environ):
        data = _pem_certificates(path)
        if data is None:
            continue
        try:
            ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            _log.debug("CA file %s skipped: %s", path, exc)
            continue
        loaded += 1
    return loaded


class SystemTrustContext(ssl.SSLContext):
    """A client TLS context (as ``ssl.create_default_context()`` makes) that loads the
    system's CA certificates and those of the ``SSL_CERT_DIR`` directories on its first
    handshake rather than when it is made.

    Certificates given explicitly (a registry's CA, a client certificate) are loaded at
    once by the caller, so their errors still come up front.
    """

    def __new__(cls) -> SystemTrustContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        super().__init__()
        self._trust_lock = threading.Lock()
        self._trust_loaded = False
        keylog = os.environ.get("SSLKEYLOGFILE")  # as create_default_context honours it
        if keylog and not sys.flags.ignore_environment:
            self.keylog_filename = keylog

    def _load_trust(self) -> None:
        with self._trust_lock:
            if not self._trust_loaded:
                if self.verify_mode != ssl.CERT_NONE:
                    self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                    load_cert_dirs(self)
                self._trust_loaded = True

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if not self._trust_loaded:
            self._load_trust()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if not self._trust_loaded:
            self._load_trust()
        return super().wrap_bio(*args, **kwargs)


def system_trust_context() -> SystemTrustContext:
    """A new verifying client context with the system trust (see the module docstring)."""
    return SystemTrustContext()


def _bundle_parts(env: Mapping[str, str]) -> Iterator[bytes]:
    cafile = env.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile
    for path in (Path(cafile), *cert_dir_files(env)):
        data = _pem_certificates(path) if path.is_file() else None
        if data is not None:
            yield data if data.endswith(b"\n") else data + b"\n"


def write_trust_bundle(target: Path, environ: Mapping[str, str] | None = None) -> bool:
    """Write the trust as one PEM bundle to ``target`` for a program that reads neither
    ``SSL_CERT_FILE`` nor ``SSL_CERT_DIR``; False (nothing written) when neither variable
    is set, so the program keeps its own defaults."""
    env = os.environ if environ is None else environ
    if not env.get("SSL_CERT_FILE") and not env.get("SSL_CERT_DIR"):
        return False
    with open(target, "wb") as out:
        for part in _bundle_parts(env):
            out.write(part)
    return True


def trust_bundle_file(environ: Mapping[str, str] | None = None) -> str | None:
    """The trust as one PEM file, for a library that takes a CA file path and reads neither
    variable (azure-core's requests transport trusts certifi's bundle only); None when
    neither ``SSL_CERT_FILE`` nor ``SSL_CERT_DIR`` is set (the library keeps its default).

    The file is named by its content in the temporary directory and written anew each time
    (a unique file renamed over the name, so a file planted there is never trusted), so
    builds with the same trust share one file instead of leaving one each.
    """
    env = os.environ if environ is None else environ
    if not env.get("SSL_CERT_FILE") and not env.get("SSL_CERT_DIR"):
        return None
    data = b"".join(_bundle_parts(env))
    directory = tempfile.gettempdir()
    target = os.path.join(directory, f"lamina-trust-{hashlib.sha256(data).hexdigest()[:32]}.pem")
    try:
        fd, temporary = tempfile.mkstemp(prefix=".lamina-trust-", suffix=".pem", dir=directory)
    except OSError:
        return None  # no writable temporary directory: the library keeps its default
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return None
    try:
        os.replace(temporary, target)
    except OSError:
        return temporary  # the name is held by a file this user cannot replace: its own
    return target
