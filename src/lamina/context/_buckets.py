"""Bucket contexts: an object store's tarball, downloaded to a file, then unpacked.

:func:`fetch_bucket` picks the backend by scheme or host -- one line per provider, each
module imported on first use only (a plain build never loads a cloud library). A backend
module exposes ``download(url, out, *, environ, timeout)``: it streams the object into
the open file ``out`` (bounded memory) or raises :class:`ContextError` naming the object.
The file is then unpacked with the same safe extraction as ``tar://`` contexts.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from lamina.context._remote import _unpack, is_azure_blob_url
from lamina.errors import ContextError

__all__ = ["bucket_backend", "fetch_bucket"]

#: (does the URL belong to it, backend module) -- one line per provider
_BACKENDS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda url: url.lower().startswith("gs://"), "lamina.context._gcs"),
    (is_azure_blob_url, "lamina.context._azblob"),
)


def bucket_backend(url: str) -> str | None:
    """The backend module for ``url``, or None when it names no bucket object."""
    for matches, module in _BACKENDS:
        if matches(url):
            return module
    return None


def fetch_bucket(
    url: str,
    into: Path,
    *,
    display: str,
    on_warning: Callable[[str], None],
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Download the object ``url`` next to ``into`` and unpack it into ``into``."""
    module = bucket_backend(url)
    if module is None:
        raise ValueError(f"not a bucket context: {display}")
    env = dict(os.environ if environ is None else environ)
    try:
        fd, name = tempfile.mkstemp(prefix=".bucket-", suffix=".tar.gz", dir=into.parent)
    except OSError as exc:
        raise ContextError(
            f"cannot create a file for the build context {display} in {into.parent}: "
            f"{exc.strerror or exc}",
            hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
        ) from None
    scratch = Path(name)
    try:
        with os.fdopen(fd, "w+b") as out:
            importlib.import_module(module).download(url, out, environ=env, timeout=timeout)
            out.flush()
            out.seek(0)
            _unpack(out, into, display, on_warning)  # the same extraction as tar://
    finally:
        scratch.unlink(missing_ok=True)
