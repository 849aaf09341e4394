"""Platforms (``os/architecture[/variant]``) and Docker/containerd matching rules."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from lamina.errors import ImageFormatError

__all__ = ["Platform"]

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
_OS_ALIASES = {"macos": "darwin"}
_AMD64_LEVELS = ("v1", "v2", "v3", "v4")


def _normalise(os_: str, arch: str, variant: str | None) -> tuple[str, str, str | None]:
    os_ = _OS_ALIASES.get(os_.lower(), os_.lower())
    arch = arch.lower()
    variant = variant.lower() if variant else None
    if arch == "aarch64":
        arch = "arm64"
    elif arch in ("armhf",):
        arch, variant = "arm", variant or "v7"
    elif arch == "armel":
        arch, variant = "arm", variant or "v6"
    else:
        arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "arm64" and variant == "8":
        variant = "v8"
    if arch == "arm" and variant in ("5", "6", "7", "8"):
        variant = f"v{variant}"
    return os_, arch, variant


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """An image platform as in OCI index entries and image configs."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, s: str) -> Platform:
        """Parse ``os/arch[/variant]`` (e.g. ``linux/arm64/v8``), as ``--custom-platform``."""
        parts = s.strip().split("/") if isinstance(s, str) else []
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ImageFormatError(
                f"invalid platform {s!r}: expected 'os/architecture[/variant]'",
                hint="for example 'linux/amd64', 'linux/arm64' or 'linux/arm/v7'",
            )
        os_, arch, variant = _normalise(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
        return cls(os=os_, architecture=arch, variant=variant)

    @classmethod
    def host(cls) -> Platform:
        """The platform of the running machine, named as Docker names it."""
        os_ = "linux" if sys.platform.startswith("linux") else sys.platform
        machine = os.uname().machine or "amd64"
        variant: str | None = None
        m = machine.lower()
        if m.startswith("armv"):
            variant = "v" + m[4]
            m = "arm"
        os_, arch, variant = _normalise(os_, m, variant)
        if arch == "arm64":
            variant = "v8"
        return cls(os=os_, architecture=arch, variant=variant)

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "platform") -> Platform:
        if not isinstance(d, dict):
            raise ImageFormatError(f"{where}: 'platform' must be a JSON object")
        os_, arch = d.get("os"), d.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise ImageFormatError(f"{where}: platform needs string 'os' and 'architecture'")
        variant = d.get("variant")
        os_version = d.get("os.version")
        features = d.get("os.features") or []
        if (
            (variant is not None and not isinstance(variant, str))
            or (os_version is not None and not isinstance(os_version, str))
            or not isinstance(features, list)
            or not all(isinstance(f, str) for f in features)
        ):
            raise ImageFormatError(f"{where}: malformed platform {d!r}")
        return cls(
            os=os_,
            architecture=arch,
            variant=variant or None,
            os_version=os_version or None,
            os_features=tuple(features),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def normalised(self) -> Platform:
        """Same platform with aliases resolved and default variants filled in."""
        os_, arch, variant = _normalise(self.os, self.architecture, self.variant)
        if variant is None:
            if arch == "arm64":
                variant = "v8"
            elif arch == "arm":
                variant = "v7"
        return Platform(
            os=os_,
            architecture=arch,
            variant=variant,
            os_version=self.os_version,
            os_features=self.os_features,
        )

    def matches(self, other: Platform) -> bool:
        """Whether an image for ``other`` satisfies a request for ``self``.

        ``self`` is the wanted platform (e.g. from ``--custom-platform``); OS and
        architecture must agree after normalisation; the variant must agree with
        defaults applied (arm64 → v8, arm → v7); a wanted amd64 variant ``vN``
        accepts images for any lower level, and a wanted platform without variant
        accepts any variant for amd64. ``os_version`` is compared only when both set.
        """
        a, b = self.normalised(), other.normalised()
        if a.os != b.os or a.architecture != b.architecture:
            return False
        if a.os_version and b.os_version and a.os_version != b.os_version:
            return False
        if a.architecture == "amd64":
            if a.variant is None or b.variant is None:
                return a.variant is None or b.variant in (None, "v1")
            if a.variant in _AMD64_LEVELS and b.variant in _AMD64_LEVELS:
                return _AMD64_LEVELS.index(b.variant) <= _AMD64_LEVELS.index(a.variant)
        if self.variant is None and a.architecture not in ("arm", "arm64"):
            return True
        return a.variant == b.variant

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s
