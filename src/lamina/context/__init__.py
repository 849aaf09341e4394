"""Build contexts (local directories, remote ones unpacked) with .dockerignore applied.

* :class:`LocalContext` resolves COPY/ADD sources inside a directory (the build
  context, or a stage's rootfs for ``COPY --from``): Go ``filepath.Match``
  globs, ``.dockerignore`` applied, ``..`` refused, symlinks followed inside
  the root only, a symlink source returned as a link.
* :func:`parse_context` classifies ``--context``; :func:`fetch_context` unpacks
  a remote one (``tar://``, ``tar://stdin``, ``https://``, ``git://``) into a
  directory that is then built like a local context; :func:`download_dockerfile`
  fetches ``--dockerfile http(s)://…``.
* :class:`IgnoreRules` (re-exported from :mod:`lamina.dockerfile`) is ``.dockerignore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamina._lazy import lazy_exports

if TYPE_CHECKING:
    from lamina.context._files import context_path, read_context_text
    from lamina.context._gitopts import GitContextOptions
    from lamina.context._local import ContextSource, LocalContext, SourceKind, TreeEntry
    from lamina.context._match import glob_regex, has_glob
    from lamina.context._remote import (
        ContextSpec,
        check_sub_path,
        context_subdir,
        download_dockerfile,
        fetch_context,
        is_azure_blob_url,
        is_dockerfile_url,
        parse_context,
        parse_git_context,
    )
    from lamina.context._urls import redact_url
    from lamina.dockerfile import IgnoreRules

__all__ = [
    "ContextSource",
    "ContextSpec",
    "GitContextOptions",
    "IgnoreRules",
    "LocalContext",
    "SourceKind",
    "TreeEntry",
    "check_sub_path",
    "context_path",
    "context_subdir",
    "download_dockerfile",
    "fetch_context",
    "glob_regex",
    "has_glob",
    "is_azure_blob_url",
    "is_dockerfile_url",
    "parse_context",
    "parse_git_context",
    "read_context_text",
    "redact_url",
]

#: what each name is imported from, on first use (the CLI's option records need
#: GitContextOptions without the Dockerfile code behind IgnoreRules)
_EXPORTS = {
    "ContextSource": "lamina.context._local",
    "ContextSpec": "lamina.context._remote",
    "GitContextOptions": "lamina.context._gitopts",
    "IgnoreRules": "lamina.dockerfile",
    "LocalContext": "lamina.context._local",
    "SourceKind": "lamina.context._local",
    "TreeEntry": "lamina.context._local",
    "check_sub_path": "lamina.context._remote",
    "context_path": "lamina.context._files",
    "context_subdir": "lamina.context._remote",
    "download_dockerfile": "lamina.context._remote",
    "fetch_context": "lamina.context._remote",
    "glob_regex": "lamina.context._match",
    "has_glob": "lamina.context._match",
    "is_azure_blob_url": "lamina.context._remote",
    "is_dockerfile_url": "lamina.context._remote",
    "parse_context": "lamina.context._remote",
    "parse_git_context": "lamina.context._remote",
    "read_context_text": "lamina.context._files",
    "redact_url": "lamina.context._urls",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)
