"""GitLab CI's registry variables, asked when ``config.json`` has no entry for a host.

* ``DOCKER_AUTH_CONFIG``: a docker config as JSON in a variable (GitLab
  runner's way to hand jobs registry credentials); its ``auths`` entries only
  (``auth`` = base64 of ``user:password``, or ``username``/``password``,
  ``identitytoken``); ``credHelpers``/``credsStore`` in it are not run.
* ``CI_REGISTRY`` / ``CI_REGISTRY_USER`` / ``CI_REGISTRY_PASSWORD``: the
  project's own registry, with the job token GitLab sets for every job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lamina.errors import AuthError

from ._auth import Credential, _auth_key_host, credential_from_entry, normalize_registry

__all__ = ["gitlab_credential"]

_VAR = "DOCKER_AUTH_CONFIG"


def _auth_config_entry(host: str, text: str) -> Mapping[str, Any] | None:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthError(
            f"the variable {_VAR} is not valid JSON (line {exc.lineno}, column {exc.colno})",
            hint=f'{_VAR} must hold a docker config: {{"auths": {{"host": {{"auth": "..."}}}}}}',
        ) from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _auth_key_host(str(key)) == host and isinstance(entry, dict):
            return entry
    return None


def gitlab_credential(host: str, environ: Mapping[str, str]) -> tuple[Credential, str] | None:
    """Credentials for ``host`` from ``DOCKER_AUTH_CONFIG`` or ``CI_REGISTRY_*`` and the
    variable they came from, or None."""
    host = normalize_registry(host)
    text = environ.get(_VAR, "")
    if text.strip():
        entry = _auth_config_entry(host, text)
        if entry is not None:
            found = credential_from_entry(entry, host, where=f"the variable {_VAR}")
            if found is not None:
                return found, f"the variable {_VAR}"
    registry = environ.get("CI_REGISTRY", "")
    user = environ.get("CI_REGISTRY_USER", "")
    password = environ.get("CI_REGISTRY_PASSWORD", "")
    if registry and user and password and _auth_key_host(registry) == host:
        return Credential(username=user, password=password), "CI_REGISTRY_USER/_PASSWORD"
    return None
