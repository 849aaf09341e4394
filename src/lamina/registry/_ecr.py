"""Amazon ECR credentials: the AWS default chain, then ``GetAuthorizationToken``.

Hosts: ``<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`` (the token of
that account's registry in that region, FIPS endpoint for ``-fips``) and
``public.ecr.aws`` (ECR Public's token, from ``us-east-1``). The token is
base64 of ``AWS:<password>``; it becomes the Basic credential of the host.
The :class:`~lamina.registry._auth.Keychain` keeps it for the build (one
exchange per registry). ECR Public also serves anonymous pulls: a failed
exchange there is a warning, then anonymous access. ``AWS_ENDPOINT_URL_ECR``
/ ``AWS_ENDPOINT_URL_ECR_PUBLIC`` / ``AWS_ENDPOINT_URL`` point the exchange
elsewhere (botocore reads them).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import Any

from lamina.errors import AuthError

from ._auth import Credential
from ._aws import AwsChain, MissingSdkError, answer, chain_source

__all__ = ["SOURCE", "credential", "parse_ecr_host"]

#: where the credentials come from, for messages
SOURCE = "Amazon ECR's GetAuthorizationToken (with the AWS credential chain)"

_log = logging.getLogger("lamina.registry")
_PRIVATE = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>[a-z0-9-]+)"
    r"\.amazonaws\.com(\.cn)?$"
)
_PUBLIC_HOST = "public.ecr.aws"
_PUBLIC_REGION = "us-east-1"


def parse_ecr_host(host: str) -> tuple[str, str | None, str, bool] | None:
    """``(service, account, region, fips)`` for an ECR host name, else None."""
    name = host.lower()
    if name == _PUBLIC_HOST:
        return "ecr-public", None, _PUBLIC_REGION, False
    found = _PRIVATE.match(name)
    if found is None:
        return None
    return "ecr", found["account"], found["region"], bool(found["fips"])


def _token(service: str, reply: Mapping[str, Any]) -> str:
    data: Any = reply.get("authorizationData")
    if isinstance(data, list):
        data = data[0] if data else None
    token = data.get("authorizationToken") if isinstance(data, dict) else None
    return token if isinstance(token, str) else ""


def credential(host: str, environ: Mapping[str, str]) -> Credential | None:
    """The Basic credential for the ECR registry ``host`` (errors name the chain's source).

    ECR Public serves pulls anonymously: there a failed exchange (or no botocore) is a
    warning and anonymous access, not an error.
    """
    parsed = parse_ecr_host(host)
    if parsed is None:
        return None
    if parsed[0] != "ecr-public":
        return _exchange(host, parsed, environ)
    try:
        return _exchange(host, parsed, environ)
    except AuthError as exc:
        _log.warning("%s; going on anonymously", exc.message)
        return None


def _exchange(
    host: str, parsed: tuple[str, str | None, str, bool], environ: Mapping[str, str]
) -> Credential | None:
    provider = "Amazon ECR Public" if parsed[0] == "ecr-public" else "Amazon ECR"
    try:
        chain = AwsChain(environ)
    except MissingSdkError as exc:
        raise AuthError(
            f"{provider} credentials for {host}: {exc.message}", hint=exc.hint
        ) from None
    with chain:
        return _ask(chain, host, parsed, provider, environ)


def _ask(
    chain: AwsChain,
    host: str,
    parsed: tuple[str, str | None, str, bool],
    provider: str,
    environ: Mapping[str, str],
) -> Credential | None:
    import botocore.exceptions as bce

    service, account, region, fips = parsed
    try:
        creds = chain.credentials()
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise AuthError(
            f"{provider} credentials for {host}: the AWS credential chain failed reading "
            f"{chain_source(environ)}: {answer(exc)}",
            hint="check the AWS variables and files named; 'aws sts get-caller-identity' "
            "with the same environment shows what AWS makes of them",
        ) from None
    if creds is None:
        _log.debug("%s: no AWS credentials found for %s: anonymous access", provider, host)
        return None
    source = chain_source(environ, creds.method)
    try:
        client = chain.client(service, region, fips=fips)
        if service == "ecr":
            reply = client.get_authorization_token(registryIds=[account])
        else:
            reply = client.get_authorization_token()
    except (bce.BotoCoreError, bce.ClientError) as exc:
        refused = isinstance(exc, bce.ClientError)
        raise AuthError(
            f"{provider} GetAuthorizationToken for {host} (credentials from {source}) "
            f"failed: {answer(exc)}",
            hint="the identity needs ecr:GetAuthorizationToken "
            "(ecr-public:GetAuthorizationToken and sts:GetServiceBearerToken for ECR Public)"
            if refused
            else "check the network and AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL if set",
        ) from None
    try:
        decoded = base64.b64decode(_token(service, reply), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    username, sep, password = decoded.partition(":")
    if not sep or not username or not password:
        raise AuthError(
            f"{provider} GetAuthorizationToken for {host} answered without a "
            "base64 'user:password' token",
            hint="check AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL: they may point at "
            "something that is not ECR",
        )
    _log.debug("%s: a registry token for %s (credentials from %s)", provider, host, source)
    return Credential(username=username, password=password)
