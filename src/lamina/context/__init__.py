"""Build contexts (local directories, remote ones unpacked) with .dockerignore applied.

* :class:`LocalContext` resolves COPY/ADD sources inside a directory (the build
  context, or a stage's rootfs for ``COPY --from``): Go ``filepath.Match``
  globs, ``.dockerignore`` applied, ``..`` refused, symlinks followed inside
  the root only, a symlink source returned as a link.
* :class:`IgnoreRules` (re-exported from :mod:`lamina.dockerfile`) is ``.dockerignore``.
"""

from lamina.context._local import ContextSource, LocalContext, SourceKind, TreeEntry
from lamina.context._match import glob_regex, has_glob
from lamina.context._urls import redact_url
from lamina.dockerfile import IgnoreRules

__all__ = [
    "ContextSource",
    "IgnoreRules",
    "LocalContext",
    "SourceKind",
    "TreeEntry",
    "glob_regex",
    "has_glob",
    "redact_url",
]
