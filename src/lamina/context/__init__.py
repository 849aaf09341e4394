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

from lamina.context._local import ContextSource, LocalContext, SourceKind, TreeEntry
from lamina.context._match import glob_regex, has_glob
from lamina.context._remote import (
    ContextSpec,
    GitContextOptions,
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
    "context_subdir",
    "download_dockerfile",
    "fetch_context",
    "glob_regex",
    "has_glob",
    "is_azure_blob_url",
    "is_dockerfile_url",
    "parse_context",
    "parse_git_context",
    "redact_url",
]
