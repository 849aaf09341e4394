"""The per-build working directory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lamina.errors import FilesystemError, LaminaError

__all__ = ["BuildDir"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildDir:
    """One build's private directory and its parts.

    ``path`` is a fresh directory (a temp dir by default, else a new
    ``lamina-*`` directory under ``--kaniko-dir``, ``/kaniko`` in the executor
    image); ``rootfs`` holds the stage's root filesystem, ``layers`` the layer
    files written by snapshots, ``work`` scratch space on the same filesystem
    (overlay upper/work dirs, so that merging them is a rename).
    """

    path: Path
    rootfs: Path
    layers: Path
    work: Path
    #: ways to delete what plain ``rmtree`` cannot (a rootless build's subordinate-id
    #: owners): tried in order when it fails
    removers: list[Callable[[Path], None]] = field(default_factory=list, compare=False)
    #: paths outside ``path`` that belong to the build (an unpacked remote context, a
    #: downloaded Dockerfile): deleted by :meth:`cleanup` too
    extra: list[Path] = field(default_factory=list, compare=False)

    @classmethod
    def create(cls, kaniko_dir: Path | None = None) -> BuildDir:
        """Create a new build directory (under ``kaniko_dir`` when given)."""
        try:
            if kaniko_dir is not None:
                kaniko_dir.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix="lamina-", dir=kaniko_dir))
            parts = {name: path / name for name in ("rootfs", "layers", "work")}
            for p in parts.values():
                p.mkdir(mode=0o755)
            parts["rootfs"].chmod(0o755)
        except OSError as exc:
            where = kaniko_dir if kaniko_dir is not None else tempfile.gettempdir()
            raise FilesystemError(
                f"cannot create the build directory under {where}: {exc.strerror}",
                hint="pass a writable directory with --kaniko-dir (or set KANIKO_DIR)",
            ) from exc
        return cls(path=path, rootfs=parts["rootfs"], layers=parts["layers"], work=parts["work"])

    def cleanup(self) -> None:
        """Delete the build directory and everything in it (and the ``extra`` paths)."""
        while self.extra:
            extra = self.extra.pop()
            try:
                shutil.rmtree(extra)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise FilesystemError(
                    f"cannot delete {extra}: {exc.strerror}", hint="delete it by hand"
                ) from exc
        try:
            shutil.rmtree(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            for remover in self.removers:
                try:
                    remover(self.path)
                except LaminaError:
                    continue
                if not self.path.exists():
                    return
            raise FilesystemError(
                f"cannot delete the build directory {self.path}: {exc.strerror}",
                hint="delete it by hand; a mount inside it may still be active",
            ) from exc
