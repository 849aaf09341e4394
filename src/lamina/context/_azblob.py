"""Azure Blob Storage contexts: ``https://<account>.blob.core.<cloud>/<container>/<blob>``.

Credentials, first match: a SAS in the URL's query; ``AZURE_STORAGE_ACCESS_KEY`` (the
account's shared key, as kaniko); the Azure identity chain of
:func:`lamina.registry._acr.aad_credential` (client secret, federated token file,
managed identity); none of these -- an anonymous read (a public container).
``AZURE_STORAGE_BLOB_ENDPOINT`` (e.g. ``http://127.0.0.1:10000/devstoreaccount1``, an
Azurite emulator) replaces ``https://<account>.blob.core.<cloud>`` for every account.
The blob is streamed by azure-storage-blob in chunks (bounded memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from lamina.context._urls import redact_url
from lamina.errors import ContextError

__all__ = ["download", "split_blob_url"]

_STORAGE_SCOPE = "https://storage.azure.com/.default"
_HINT_AUTH = (
    "set AZURE_STORAGE_ACCESS_KEY (the account key), pass a SAS URL, or give the identity "
    "(AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, a managed identity) "
    "the Storage Blob Data Reader role"
)


def split_blob_url(url: str) -> tuple[str, str, str, str]:
    """``(account, container, blob, sas)`` of a blob URL; ContextError when one is missing."""
    parts = urlsplit(url)
    account = (parts.hostname or "").split(".", 1)[0]
    container, _, blob = parts.path.lstrip("/").partition("/")
    if not account or not container or not blob:
        raise ContextError(
            f"the build context {redact_url(url.split('?', 1)[0])} names no blob",
            hint="write --context https://ACCOUNT.blob.core.windows.net/CONTAINER/ctx.tar.gz",
        )
    return account, unquote(container), unquote(blob), parts.query


def _credential(environ: Mapping[str, str], sas: str, shown: str) -> tuple[Any, str]:
    """What the client authenticates with, and a description for errors."""
    if sas:
        return None, "the SAS in the URL"
    key = environ.get("AZURE_STORAGE_ACCESS_KEY", "")
    if key:
        return key, "AZURE_STORAGE_ACCESS_KEY"
    from lamina.registry._acr import aad_credential, aad_token

    aad, source = aad_credential(environ)
    token = aad_token(aad, source, _STORAGE_SCOPE, what=f"the build context {shown}",
                      error=ContextError)  # fmt: skip
    return (None, "no credentials (anonymous)") if token is None else (aad, source)


def _code(exc: BaseException) -> str:
    """The storage service's error code (``BlobNotFound``, ``AuthenticationFailed`` ...)."""
    return str(getattr(exc, "error_code", "") or "")


def download(url: str, dest: Path, *, environ: Mapping[str, str], timeout: float) -> None:
    """Stream the blob ``url`` names into the file ``dest``."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.storage.blob import BlobClient

    account, container, blob, sas = split_blob_url(url)
    parts = urlsplit(url)
    shown = f"https://{parts.netloc}{parts.path}"  # never the SAS
    endpoint = environ.get("AZURE_STORAGE_BLOB_ENDPOINT", "").rstrip("/")
    account_url = endpoint or f"https://{parts.netloc}"
    credential, source = _credential(environ, sas, shown)
    if isinstance(credential, str):
        credential = {"account_name": account, "account_key": credential}
    if sas:
        account_url += f"?{sas}"
    options: dict[str, Any] = {"retry_total": 2, "connection_timeout": timeout}
    from lamina.registry._acr import azure_trust

    options.update(azure_trust(environ))
    client = BlobClient(account_url, container, blob, credential=credential, **options)
    try:
        with client, dest.open("wb") as out:
            client.download_blob(read_timeout=timeout).readinto(out)
    except ResourceNotFoundError as exc:
        raise ContextError(
            f"cannot download the build context {shown}: "
            f"{_code(exc) or 'not found'} (with {source})",
            hint=f"check that the container {container} and the blob {blob} exist in {account}",
        ) from None
    except ClientAuthenticationError as exc:
        raise ContextError(
            f"cannot download the build context {shown} with {source}: "
            f"{_code(exc) or 'authentication failed'}",
            hint=_HINT_AUTH,
        ) from None
    except HttpResponseError as exc:
        raise ContextError(
            f"cannot download the build context {shown} with {source}: "
            f"HTTP {exc.status_code}: {_code(exc) or exc.reason}",
            hint=_HINT_AUTH if exc.status_code in (401, 403) else "retry later",
        ) from None
    except (ServiceRequestError, OSError) as exc:
        raise ContextError(
            f"cannot download the build context {shown}: {type(exc).__name__}",
            hint="check the network (and AZURE_STORAGE_BLOB_ENDPOINT when it is set)",
        ) from None
