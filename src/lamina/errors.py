"""The one exception tree of lamina.

Every error a user can meet is a :class:`LaminaError`. Each carries

* a stable ``code`` (a short kebab-case word, part of the public interface: it
  appears in JSON logs and may be matched by scripts),
* an ``exit_code`` the CLI returns for it,
* a one-paragraph ``message`` naming the file, line or reference at fault,
* an optional ``hint`` telling the user what to do about it.

Library code raises these and never prints or exits; ``lamina.cli`` renders
them. Foreign exceptions are translated where they enter (``raise
RegistryError(...) from exc``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_BUILD_STEP",
    "EXIT_DOCKERFILE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_REGISTRY",
    "EXIT_USAGE",
    "AuthError",
    "BuildStepError",
    "ContextError",
    "DockerfileError",
    "FilesystemError",
    "ImageFormatError",
    "LaminaError",
    "NotSupportedError",
    "RegistryError",
    "SourceLocation",
    "UsageError",
]

#: generic failure (anything without a more specific code)
EXIT_FAILURE = 1
#: bad command line / unsupported flag
EXIT_USAGE = 2
#: the Dockerfile (or .dockerignore / build context content) is wrong
EXIT_DOCKERFILE = 3
#: registry, auth, TLS or image-format problem
EXIT_REGISTRY = 4
#: a build step (RUN, COPY, ...) failed while executing
EXIT_BUILD_STEP = 5
#: interrupted by SIGINT / SIGTERM (shell convention 128 + SIGINT)
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceLocation:
    """Where in a source file (usually a Dockerfile) something is.

    ``line``/``end_line`` are 1-based physical line numbers; ``column`` is the
    0-based offset in ``text`` of the offending token, when known; ``text`` is
    the offending physical line as written (without its line ending).
    """

    file: str
    line: int
    end_line: int | None = None
    column: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class LaminaError(Exception):
    """Base of every error lamina reports to a user."""

    code: str = "error"
    exit_code: int = EXIT_FAILURE

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: SourceLocation | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location

    def __str__(self) -> str:
        if self.location is not None:
            return f"{self.location}: {self.message}"
        return self.message

    def render(self) -> str:
        """The short human form: message, offending line with a caret, hint."""
        lines = [f"error: {self}"]
        loc = self.location
        if loc is not None and loc.text is not None:
            lines.append(f"  {loc.line:>4} | {loc.text}")
            if loc.column is not None:
                lines.append("       | " + " " * loc.column + "^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UsageError(LaminaError):
    """The command line is wrong (unknown flag, bad value, missing option)."""

    code = "usage"
    exit_code = EXIT_USAGE


class NotSupportedError(UsageError):
    """A known flag or feature whose behaviour is not implemented yet.

    Raised instead of silently ignoring it. The message always starts with
    ``not supported yet:``.
    """

    code = "not-supported"

    def __init__(
        self, what: str, *, hint: str | None = None, location: SourceLocation | None = None
    ) -> None:
        super().__init__(f"not supported yet: {what}", hint=hint, location=location)
        self.what = what


class DockerfileError(LaminaError):
    """A syntax or semantic error in a Dockerfile (or .dockerignore)."""

    code = "dockerfile"
    exit_code = EXIT_DOCKERFILE


class ContextError(LaminaError):
    """The build context is missing, unreadable, or lacks a file a step needs."""

    code = "context"
    exit_code = EXIT_DOCKERFILE


class RegistryError(LaminaError):
    """Talking to a registry failed (network, TLS, HTTP status, protocol)."""

    code = "registry"
    exit_code = EXIT_REGISTRY


class AuthError(RegistryError):
    """Credentials are missing, wrong, or insufficient (401/403)."""

    code = "auth"


class ImageFormatError(LaminaError):
    """An image, manifest, config, layer or reference is malformed or unsupported."""

    code = "image-format"
    exit_code = EXIT_REGISTRY


class FilesystemError(LaminaError):
    """A filesystem operation on the build root failed, or was refused as unsafe."""

    code = "filesystem"
    exit_code = EXIT_FAILURE


class BuildStepError(LaminaError):
    """A build step failed while executing (RUN exit status, COPY of a missing file...).

    ``status`` is the failed RUN's own exit status when a RUN failed (1-255;
    ``128 + N`` when signal N killed it; 126/127 when it could not be started),
    else ``None``. ``executor`` exits with it, as kaniko's executor does.
    """

    code = "build-step"
    exit_code = EXIT_BUILD_STEP

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: SourceLocation | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint, location=location)
        self.status = status if status is not None and 0 < status < 256 else None
