"""Build contexts in cloud buckets: one line per provider in :data:`_PROVIDERS`.

:func:`bucket_provider` tells (without I/O, without importing any SDK) whether
``--context`` names a bucket object; :func:`fetch_bucket` streams the object
to a file with the provider module (imported only then), which the caller
unpacks with the same safe extraction as ``tar://``.

A provider module exposes
``download(url, dest, *, environ, timeout) -> None``: it writes the object to
``dest`` in bounded memory and raises :class:`~lamina.errors.ContextError`
naming the object (never a secret) with a hint.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, cast

__all__ = ["bucket_provider", "fetch_bucket"]


class _Provider(Protocol):
    def download(
        self, url: str, dest: Path, *, environ: Mapping[str, str], timeout: float
    ) -> None: ...


def _scheme(name: str) -> Callable[[str], bool]:
    return lambda url: url.lower().startswith(name + "://")


def _azure_blob(url: str) -> bool:
    from lamina.context._remote import is_azure_blob_url  # loaded already: it imports us

    return is_azure_blob_url(url)


#: (does this provider take the URL?, provider module): one line per provider
_PROVIDERS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (_scheme("s3"), "lamina.context._s3"),
    (_scheme("gs"), "lamina.context._gcs"),
    (_azure_blob, "lamina.context._azblob"),
)


def bucket_provider(url: str) -> str | None:
    """The provider module for a bucket URL, or None when ``url`` is no bucket object."""
    for takes, module in _PROVIDERS:
        if takes(url):
            return module
    return None


def fetch_bucket(
    url: str,
    dest: Path,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> Path:
    """Download the bucket object ``url`` to the file ``dest``; returns ``dest``."""
    module = bucket_provider(url)
    if module is None:
        raise ValueError(f"not a bucket URL: {url}")
    provider = cast(_Provider, importlib.import_module(module))
    provider.download(
        url, dest, environ=os.environ if environ is None else environ, timeout=timeout
    )
    return dest
