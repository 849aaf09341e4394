"""``ADD <git repository> <dest>``: the git machinery lives in :mod:`lamina.context._git`
(git build contexts use it too); this module adds the build secrets it reads."""

from __future__ import annotations

from collections.abc import Sequence

from lamina.builder.options import SecretSource
from lamina.context._git import (
    GitCheckout,
    GitSource,
    fetch_git,
    git_auth_header,
    parse_git_source,
)
from lamina.context._urls import redact_url
from lamina.errors import BuildStepError, SourceLocation

__all__ = [
    "GitCheckout",
    "GitSource",
    "fetch_git",
    "git_auth_header",
    "git_secrets",
    "parse_git_source",
    "redact_url",
]


def git_secrets(
    secrets: Sequence[SecretSource], location: SourceLocation | None
) -> dict[str, bytes]:
    """The values of the ``GIT_AUTH_TOKEN*`` and ``GIT_AUTH_HEADER*`` build secrets."""
    out: dict[str, bytes] = {}
    for secret in secrets:
        if not secret.id.startswith(("GIT_AUTH_TOKEN", "GIT_AUTH_HEADER")):
            continue
        if secret.value is not None:
            out[secret.id] = secret.value
        elif secret.path is not None:
            try:
                out[secret.id] = secret.path.read_bytes()
            except OSError as exc:
                raise BuildStepError(
                    f"cannot read the secret {secret.id!r} from {secret.path}: "
                    f"{exc.strerror or exc}",
                    hint="check the src= path of --secret",
                    location=location,
                ) from None
    return out
