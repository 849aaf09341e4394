"""Image locations given to ``lamina copy`` / ``lamina inspect``.

The syntax is skopeo's, so that users can switch between the two tools:

* ``docker://REGISTRY/REPO[:TAG|@DIGEST]`` — a registry;
* ``oci:DIR[:TAG]`` — an OCI image layout directory (``TAG`` is the
  ``org.opencontainers.image.ref.name`` annotation; default ``latest``);
* ``docker-archive:FILE[:REF]`` — a ``docker save`` tarball (``REF`` selects one
  of its ``RepoTags`` when reading and names the image when writing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lamina.errors import UsageError
from lamina.oci.docker_archive import split_archive_reference
from lamina.oci.oci_layout import split_layout_reference

__all__ = ["Location", "parse_location"]

Kind = Literal["docker", "oci", "docker-archive"]

_HINT = "write docker://REGISTRY/REPO:TAG, oci:DIR[:TAG] or docker-archive:FILE[:REF]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    kind: Kind
    #: the image reference (docker), or the tag/ref inside a layout/archive ("" if none)
    ref: str
    #: the layout directory or archive file (oci, docker-archive)
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "docker":
            return f"docker://{self.ref}"
        suffix = f":{self.ref}" if self.ref else ""
        return f"{self.kind}:{self.path}{suffix}"


def parse_location(text: str) -> Location:
    if text.startswith("docker://"):
        ref = text[len("docker://") :]
        if not ref:
            raise UsageError(f'"{text}" names no image', hint=_HINT)
        return Location(kind="docker", ref=ref)
    for kind in ("oci", "docker-archive"):
        prefix = kind + ":"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if not rest or rest.startswith(":"):
                raise UsageError(f'"{text}" names no {kind} path', hint=_HINT)
            if kind == "oci":
                layout_dir, layout_ref = split_layout_reference(rest)
                return Location(kind="oci", ref=layout_ref or "", path=layout_dir)
            archive, archive_ref = split_archive_reference(rest)
            return Location(kind="docker-archive", ref=archive_ref or "", path=archive)
    raise UsageError(f'"{text}": unknown image location (no transport prefix)', hint=_HINT)
