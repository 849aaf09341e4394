"""lamina: a daemonless, unprivileged container image builder (kaniko's successor)."""

from typing import TYPE_CHECKING

__all__ = ["__version__"]

if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    # read on first use: importlib.metadata is slow to import and most commands never ask
    if name != "__version__":
        raise AttributeError(f"module 'lamina' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("lamina")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
