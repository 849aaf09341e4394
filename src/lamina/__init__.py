"""lamina: a daemonless, unprivileged container image builder (kaniko's successor)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lamina")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
