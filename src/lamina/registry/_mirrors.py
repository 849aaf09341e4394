"""Pull-side registry mirrors (``--registry-mirror``) and maps (``--registry-map``).

``--registry-mirror`` applies to Docker Hub only. ``--registry-map orig=m1;o2=m2``
maps any registry to one or more mirrors, each ``host[:port][/path/prefix]``.
Mirrors are tried in order, then the original registry unless
``--skip-default-registry-fallback``. Pushes never use mirrors.
"""

from __future__ import annotations

from dataclasses import replace

from lamina.oci import Reference

from ._auth import normalize_registry
from ._options import RegistryOptions

__all__ = ["mirror_reference", "pull_candidates"]


def mirror_reference(ref: Reference, mirror: str) -> Reference:
    """``ref`` rewritten to live on ``mirror`` (``host[/prefix]``, scheme ignored)."""
    for scheme in ("https://", "http://"):
        if mirror.startswith(scheme):
            mirror = mirror[len(scheme) :]
    mirror = mirror.strip("/")
    host, _, prefix = mirror.partition("/")
    repository = f"{prefix}/{ref.repository}" if prefix else ref.repository
    return replace(ref, registry=host.lower(), repository=repository)


def pull_candidates(ref: Reference, options: RegistryOptions) -> list[tuple[Reference, bool]]:
    """``(reference, is_mirror)`` to try in order for a pull of ``ref``."""
    key = normalize_registry(ref.registry)
    mirrors: list[str] = []
    for orig, targets in options.registry_maps.items():
        if normalize_registry(orig) == key:
            mirrors.extend(targets)
    if key == "index.docker.io":
        mirrors.extend(options.registry_mirrors)
    seen: set[str] = set()
    out: list[tuple[Reference, bool]] = []
    for mirror in mirrors:
        candidate = mirror_reference(ref, mirror)
        if str(candidate) not in seen and candidate != ref:
            seen.add(str(candidate))
            out.append((candidate, True))
    if not out or not options.skip_default_registry_fallback:
        out.append((ref, False))
    return out
