"""Registry credentials from the environment when ``config.json`` has none (kaniko's order).

The :class:`~lamina.registry._auth.Keychain` asks :func:`cloud_credential` only
after ``auths``, ``credHelpers`` and ``credsStore`` found nothing for a host:

1. GitLab CI (:mod:`._gitlab`): ``DOCKER_AUTH_CONFIG`` (a docker config in a
   variable), then ``CI_REGISTRY`` / ``CI_REGISTRY_USER`` / ``CI_REGISTRY_PASSWORD``;
2. the cloud provider whose registry host pattern matches (one line each in
   :data:`_PROVIDERS`), imported only then, so a plain build never loads a
   cloud SDK.

A provider module exposes ``credential(host, environ) -> Credential | None``
(and ``SOURCE``, naming it in messages) and raises
:class:`~lamina.errors.AuthError` naming the provider, the variable or file it
read and what the service answered, never a secret.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from ._auth import Credential

__all__ = ["cloud_credential", "provider_for"]


class _Provider(Protocol):
    def credential(self, host: str, environ: Mapping[str, str]) -> Credential | None: ...


#: (host pattern, provider module): one line per provider
_PROVIDERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$|^public\.ecr\.aws$"
        ),
        "lamina.registry._ecr",
    ),
    (re.compile(r"^(?:[a-z0-9-]+\.)?gcr\.io$|^[a-z0-9-]+\.pkg\.dev$"), "lamina.registry._gar"),
    (re.compile(r"^[a-z0-9-]+\.azurecr\.(?:io|cn|us)$"), "lamina.registry._acr"),
)


def provider_for(host: str) -> str | None:
    """The provider module for ``host`` (``host[:port]``, lower case), or None."""
    name = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    for pattern, module in _PROVIDERS:
        if pattern.match(name):
            return module
    return None


def cloud_credential(host: str, environ: Mapping[str, str]) -> tuple[Credential, str] | None:
    """Credentials for ``host`` from GitLab CI variables or its cloud provider, with where
    they came from (for messages: the provider module's ``SOURCE``), or None."""
    from ._gitlab import gitlab_credential

    found = gitlab_credential(host, environ)
    if found is not None:
        return found
    module = provider_for(host)
    if module is None:
        return None
    provider = cast(_Provider, importlib.import_module(module))
    credential = provider.credential(host, environ)
    if credential is None:
        return None
    return credential, str(getattr(provider, "SOURCE", module))
