"""The AWS default credential chain through botocore, shared by ECR and ``s3://`` contexts.

botocore resolves credentials as the AWS SDKs do: ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` in
``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_CONFIG_FILE`` (``~/.aws/...``), IRSA
web identity (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``, exchanged at
STS), container credentials (``AWS_CONTAINER_CREDENTIALS_*``), instance
metadata. ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` (``_ECR``,
``_STS``, ``_S3``) and ``AWS_CA_BUNDLE`` are botocore's own. Without
``AWS_CA_BUNDLE`` but with ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` set, lamina's
trust (the system bundle or ``SSL_CERT_FILE``, plus every ``SSL_CERT_DIR`` file)
is written to a temporary PEM bundle for botocore (it reads neither variable),
removed on :meth:`AwsChain.close`; otherwise botocore keeps its default bundle.

botocore is imported only by the functions here, which only ECR hosts and
``s3://`` contexts reach. Every botocore error is turned into a short text
(:func:`answer`) naming what the service said, never a key or a token.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lamina.errors import LaminaError

if TYPE_CHECKING:
    import botocore.client
    import botocore.credentials
    import botocore.session

__all__ = [
    "AwsChain",
    "MissingSdkError",
    "answer",
    "chain_source",
]


class MissingSdkError(LaminaError):
    """botocore is not installed (``pip install 'lamina[aws]'``); callers re-raise in kind."""


_METHODS = {
    "env": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
    "assume-role-with-web-identity": "AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE (STS)",
    "container-role": "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*)",
    "iam-role": "the instance metadata service",
    "sso": "AWS SSO (the profile's sso_* settings)",
    "custom-process": "the profile's credential_process",
    "assume-role": "the profile's role_arn (STS AssumeRole)",
}


def _files(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    creds = environ.get("AWS_SHARED_CREDENTIALS_FILE") or f"{home}/.aws/credentials"
    config = environ.get("AWS_CONFIG_FILE") or f"{home}/.aws/config"
    profile = environ.get("AWS_PROFILE") or environ.get("AWS_DEFAULT_PROFILE") or "default"
    return f"profile {profile!r} of {creds} / {config}"


def chain_source(environ: Mapping[str, str], method: str | None = None) -> str:
    """Which link of the chain gave (``method``: botocore's) or should give credentials."""
    if method in ("shared-credentials-file", "config-file"):
        return _files(environ)
    if method:
        return _METHODS.get(method, method)
    if environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_SECRET_ACCESS_KEY"):
        return _METHODS["env"]
    if environ.get("AWS_PROFILE") or environ.get("AWS_SHARED_CREDENTIALS_FILE"):
        return _files(environ)
    if environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") or environ.get("AWS_ROLE_ARN"):
        token = environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
        return f"AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE={token} (STS)"
    if any(k.startswith("AWS_CONTAINER_CREDENTIALS_") for k in environ):
        return _METHODS["container-role"]
    return f"{_files(environ)}, then the instance metadata service"


def answer(exc: BaseException) -> str:
    """What botocore or the service said, without secrets."""
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = error.get("Code") or ""
        message = error.get("Message") or ""
        text = " ".join(str(x) for x in (status, code) if x)
        return f"{text}: {message}" if message else text or type(exc).__name__
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class AwsChain:
    """One botocore session for the process environment: credentials, then clients."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        try:
            import botocore.session
        except ImportError:
            raise MissingSdkError(
                "botocore is not installed",
                hint="install lamina with the AWS extra: pip install 'lamina[aws]'",
            ) from None
        self._session: botocore.session.Session = botocore.session.Session()
        self._trust_dir: str | None = None
        if not self.environ.get("AWS_CA_BUNDLE"):
            self._use_lamina_trust()

    def _use_lamina_trust(self) -> None:
        from ._tls import write_trust_bundle

        self._trust_dir = tempfile.mkdtemp(prefix="lamina-aws-trust-")
        bundle = Path(self._trust_dir) / "ca.pem"
        try:
            written = write_trust_bundle(bundle, self.environ)
        except OSError:
            written = False
        if written:  # every client of the session, STS's for web identity included
            self._session.set_config_variable("ca_bundle", str(bundle))
        else:
            self.close()

    def close(self) -> None:
        if self._trust_dir is not None:
            shutil.rmtree(self._trust_dir, ignore_errors=True)
            self._trust_dir = None

    def __enter__(self) -> AwsChain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def credentials(self) -> botocore.credentials.Credentials | None:
        """Resolved (and fetched: STS and metadata calls happen here) credentials, or None.

        botocore errors propagate; callers phrase them with :func:`chain_source`.
        """
        creds = self._session.get_credentials()
        if creds is None:
            return None
        creds.get_frozen_credentials()  # a deferred provider (web identity) calls STS now
        return creds

    def client(
        self,
        service: str,
        region: str | None,
        *,
        endpoint_url: str | None = None,
        fips: bool = False,
        path_style: bool = False,
        unsigned: bool = False,
        timeout: float = 60.0,
    ) -> botocore.client.BaseClient:
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            use_fips_endpoint=fips or None,
            s3={"addressing_style": "path"} if path_style else None,
            signature_version=UNSIGNED if unsigned else None,
        )
        return self._session.create_client(
            service,
            region_name=region or self._session.get_config_variable("region") or "us-east-1",
            endpoint_url=endpoint_url,
            config=config,
        )
