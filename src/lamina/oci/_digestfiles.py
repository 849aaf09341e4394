"""Contents of kaniko's ``--digest-file`` family (the CLI writes them)."""

from __future__ import annotations

from collections.abc import Iterable

from lamina.oci._digest import Digest
from lamina.oci._reference import Reference

__all__ = ["digest_file_text", "image_name_tag_with_digest_text", "image_name_with_digest_text"]


def digest_file_text(digest: Digest) -> str:
    """``--digest-file``: ``sha256:…`` with no trailing newline."""
    return str(digest)


def image_name_with_digest_text(destinations: Iterable[Reference], digest: Digest) -> str:
    """``--image-name-with-digest-file``: ``<registry/repo>@<digest>\\n`` per destination."""
    return "".join(f"{ref.name}@{digest}\n" for ref in destinations)


def image_name_tag_with_digest_text(destinations: Iterable[Reference], digest: Digest) -> str:
    """``--image-name-tag-with-digest-file``: ``<registry/repo:tag>@<digest>\\n`` lines."""
    return "".join(f"{ref.name}:{ref.tag or 'latest'}@{digest}\n" for ref in destinations)
