"""``s3://bucket/key`` build contexts (kaniko's S3 context), through botocore.

The key defaults to ``context.tar.gz`` (``s3://bucket`` or ``s3://bucket/``),
as kaniko's. ``S3_ENDPOINT`` replaces the endpoint (MinIO and the like) and
``S3_FORCE_PATH_STYLE=true`` asks for path-style addressing, as kaniko; the
credentials and the region come from the AWS default chain
(:mod:`lamina.registry._aws`). Without any credentials the request is sent
unsigned (a public bucket); kaniko's SDK would fail instead.

The object is streamed to a file in 1 MiB chunks; the caller unpacks it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lamina.errors import ContextError
from lamina.registry._aws import AwsChain, MissingSdkError, answer, chain_source

__all__ = ["download", "parse_s3_url"]

_log = logging.getLogger("lamina.context")
_DEFAULT_KEY = "context.tar.gz"
_CHUNK = 1024 * 1024
_TRUE = frozenset({"1", "t", "true"})
_HINTS = {
    "NoSuchBucket": "check the bucket name (and S3_ENDPOINT / AWS_ENDPOINT_URL_S3)",
    "NoSuchKey": "check the object key after the bucket: s3://bucket/path/to/context.tar.gz",
    "404": "check the bucket and the object key: s3://bucket/path/to/context.tar.gz",
    "AccessDenied": "the AWS identity needs s3:GetObject on the object",
    "403": "the AWS identity needs s3:GetObject on the object",
}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket[/key]``."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ContextError(
            f"the build context {url} names no bucket",
            hint="write --context s3://bucket/path/to/context.tar.gz",
        )
    return bucket, key or _DEFAULT_KEY


def download(url: str, dest: Path, *, environ: Mapping[str, str], timeout: float) -> None:
    """Write the object ``url`` names to ``dest``."""
    bucket, key = parse_s3_url(url)
    shown = f"s3://{bucket}/{key}"
    try:
        chain = AwsChain(environ)
    except MissingSdkError as exc:
        raise ContextError(f"the build context {shown}: {exc.message}", hint=exc.hint) from None
    with chain:
        _download(chain, bucket, key, dest, environ=environ, timeout=timeout)


def _download(
    chain: AwsChain,
    bucket: str,
    key: str,
    dest: Path,
    *,
    environ: Mapping[str, str],
    timeout: float,
) -> None:
    import botocore.exceptions as bce

    shown = f"s3://{bucket}/{key}"
    try:
        creds = chain.credentials()
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise ContextError(
            f"the build context {shown}: the AWS credential chain failed reading "
            f"{chain_source(environ)}: {answer(exc)}",
            hint="check the AWS variables and files named; 'aws sts get-caller-identity' "
            "with the same environment shows what AWS makes of them",
        ) from None
    if creds is None:
        _log.debug("no AWS credentials: reading %s unsigned", shown)
    endpoint = environ.get("S3_ENDPOINT") or None
    try:
        client = chain.client(
            "s3",
            None,
            endpoint_url=endpoint,
            path_style=environ.get("S3_FORCE_PATH_STYLE", "").lower() in _TRUE,
            unsigned=creds is None,
            timeout=timeout,
        )
        reply: dict[str, Any] = client.get_object(Bucket=bucket, Key=key)
        body = reply["Body"]
        with body, dest.open("wb") as out:
            for chunk in body.iter_chunks(_CHUNK):
                out.write(chunk)
    except bce.ClientError as exc:
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        raise ContextError(
            f"cannot download the build context {shown}: {answer(exc)}",
            hint=_HINTS.get(code, "check the bucket, the key and the AWS identity's access"),
        ) from None
    except bce.BotoCoreError as exc:
        where = f" at S3_ENDPOINT={endpoint}" if endpoint else ""
        raise ContextError(
            f"cannot download the build context {shown}{where}: {answer(exc)}",
            hint="check the network, the region (AWS_REGION) and S3_ENDPOINT / AWS_ENDPOINT_URL_S3",
        ) from None
    except OSError as exc:
        raise ContextError(
            f"cannot write the build context {shown} to {dest}: {exc.strerror or exc}",
            hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
        ) from None
