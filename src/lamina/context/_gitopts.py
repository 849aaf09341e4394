"""The ``--git`` options record of a ``git://`` build context (light: the CLI builds it)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

__all__ = ["GitContextOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GitContextOptions:
    """kaniko's ``--git`` keys and ``GIT_*`` variables, read by the CLI."""

    branch: str = ""
    #: accepted for kaniko compatibility: lamina always fetches only the ref it builds
    single_branch: bool = False
    recurse_submodules: bool = False
    insecure_skip_tls: bool = False
    #: ``GIT_PULL_METHOD``: "https" (default) or "http"
    pull_method: str = "https"
    #: ``GIT_USERNAME`` / ``GIT_PASSWORD`` / ``GIT_TOKEN`` (never logged)
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def auth_header(self) -> str | None:
        """kaniko's ``getGitAuth``: the token wins, as the user name with no password."""
        user, password = self.username, self.password
        if self.token:
            user, password = self.token, ""
        if not user and not password:
            return None
        raw = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return f"Basic {raw}"
