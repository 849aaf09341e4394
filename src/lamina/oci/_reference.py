"""Image references (``registry/repository[:tag][@digest]``) with Docker's normalisation."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lamina.errors import ImageFormatError
from lamina.oci._digest import Digest

__all__ = ["DOCKER_HUB", "DOCKER_HUB_ALIASES", "Reference"]

#: the canonical name lamina uses for Docker Hub (as go-containerregistry does)
DOCKER_HUB = "index.docker.io"
#: host names that all mean Docker Hub
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_MAX_NAME = 255
_HINT = (
    "write an image reference as [registry[:port]/]repository[:tag][@sha256:<digest>], "
    "e.g. 'busybox:1.36', 'ghcr.io/org/app:v1' or 'localhost:5000/app@sha256:...'"
)


def _error(ref: str, why: str, hint: str = _HINT) -> ImageFormatError:
    return ImageFormatError(f"invalid image reference {ref!r}: {why}", hint=hint)


def _normalise_registry(host: str) -> str:
    low = host.lower()
    if low in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return low


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A parsed, normalised image reference.

    ``registry`` is ``host[:port]`` (``index.docker.io`` for Docker Hub),
    ``repository`` the path (``library/busybox``), and at most one of ``tag`` and
    ``digest`` may be None (a bare name gets the tag ``latest``).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, s: str, *, default_tag: str | None = "latest") -> Reference:
        """Parse with Docker's rules; errors are ImageFormatError naming ``s``."""
        if not isinstance(s, str) or not s:
            raise _error(str(s), "it is empty")
        if s != s.strip() or any(c.isspace() for c in s):
            raise _error(s, "it contains whitespace")
        rest = s
        digest: Digest | None = None
        if "@" in rest:
            rest, _, dg = rest.partition("@")
            try:
                digest = Digest.parse(dg)
            except ImageFormatError as exc:
                raise _error(s, exc.message, exc.hint or _HINT) from None
        tag: str | None = None
        last = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise _error(
                    s,
                    f"invalid tag {tag!r}",
                    "a tag is 1 to 128 characters of letters, digits, '_', '.' and '-', "
                    "not starting with '.' or '-'",
                )
        if not rest:
            raise _error(s, "the repository name is empty")
        if len(rest) > _MAX_NAME:
            raise _error(s, f"the name is longer than {_MAX_NAME} characters")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            host, path = first, remainder
            if not _DOMAIN_RE.match(host):
                raise _error(s, f"invalid registry host {host!r}")
            registry = _normalise_registry(host)
        else:
            registry, path = DOCKER_HUB, rest
        if not path:
            raise _error(s, "the repository name is empty")
        for component in path.split("/"):
            if not component:
                raise _error(s, "the repository path has an empty component")
            if not _PATH_COMPONENT_RE.match(component):
                if _PATH_COMPONENT_RE.match(component.lower()):
                    raise _error(
                        s,
                        "repository name must be lowercase",
                        f"use {component.lower()!r} instead of {component!r}",
                    )
                raise _error(
                    s,
                    f"invalid repository path component {component!r}",
                    "repository components are lowercase letters and digits, separated "
                    "by '.', '_', '__' or '-'",
                )
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if tag is None and digest is None:
            tag = default_tag
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` (``index.docker.io/library/busybox``)."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """The digest if any, else the tag (what goes after ``/manifests/``)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB

    @property
    def repository_ref(self) -> Reference:
        """The same repository without tag or digest."""
        return replace(self, tag=None, digest=None)

    @property
    def familiar(self) -> str:
        """The short form Docker prints: ``busybox:latest``, ``user/app:v1``, ``ghcr.io/x/y:z``."""
        base = self.repository.removeprefix("library/") if self.is_docker_hub else self.name
        return base + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise _error(f"{self.name}:{tag}", f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: Digest | str) -> Reference:
        d = digest if isinstance(digest, Digest) else Digest.parse(digest)
        return replace(self, digest=d)

    def _suffix(self) -> str:
        out = ""
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()
