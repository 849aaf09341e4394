"""Registry credentials from cloud providers, chosen by the registry's host name.

Asked by the :class:`~lamina.registry.Keychain` only when ``config.json`` has nothing
for the host (kaniko's order: ``auths``, ``credHelpers``, ``credsStore``, then the
built-in helpers). Each provider module is imported on first use only, so a build that
talks to no cloud registry never loads a cloud library. A provider module exposes
``credential(host, environ) -> Credential | None`` (None: no credentials found, the
registry is tried anonymously).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping

from ._auth import Credential

__all__ = ["cloud_credential", "provider_module"]

#: (host pattern, provider module) -- one line per provider; the port is not matched
_PROVIDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:[a-z0-9-]+\.)?gcr\.io$|^[a-z0-9-]+\.pkg\.dev$"), "lamina.registry._gar"),
    (re.compile(r"^[a-z0-9-]+\.azurecr\.(?:io|cn|us)$"), "lamina.registry._acr"),
)


def provider_module(host: str) -> str | None:
    """The provider module for ``host`` (``name[:port]``), or None for other registries."""
    name = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    for pattern, module in _PROVIDERS:
        if pattern.search(name):
            return module
    return None


def cloud_credential(host: str, environ: Mapping[str, str]) -> Credential | None:
    """The provider's credential for ``host``, or None (no provider, or none configured)."""
    module = provider_module(host)
    if module is None:
        return None
    found: Credential | None = importlib.import_module(module).credential(host, environ)
    return found
