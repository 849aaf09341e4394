"""File owners in rootless builds: host ids on disk, in-image ids in layers.

As root, a file's owner on disk is its owner in the image. Rootless, RUN
steps go through a user namespace: what the sandbox creates as uid N is owned
on the host by the id the namespace maps N to (the invoking user for 0, its
subordinate range for the others), and the builder itself can neither create
files with such owners nor move, read or delete them. :class:`Ownership` is
the one way the builder touches the rootfs and a RUN's upper directory
(COPY/ADD, WORKDIR, reading a RUN's changes, writing layers, merging, clean-up):
:meth:`Ownership.run` runs that work as root of a user namespace with the
sandbox's id map, where a file's owner *is* its in-image owner, so layers
record in-image ids (0 for the invoking user, N for subordinate id N-1) with
no translation, and files only their owner may read are readable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from lamina.errors import FilesystemError, LaminaError
from lamina.oci import Layer

if TYPE_CHECKING:
    from lamina.fs import IgnoreList
    from lamina.sandbox import IdMap, NamespaceRunner, Runner

__all__ = ["Ownership", "file_op_owner"]

T = TypeVar("T")

_MAX_ID = 2**32 - 1


def _numeric_id(text: str) -> int | None:
    """``text`` as a uid/gid (decimal, 32 bits), else ``None`` (a name)."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _lookup(data: bytes | None, name: str, field: int) -> int | None:
    """Field ``field`` (an id) of the passwd/group line whose first field is ``name``."""
    for raw in (data or b"").decode(errors="replace").splitlines():
        fields = raw.strip().split(":")
        if len(fields) > field and fields[0] == name:
            return _numeric_id(fields[field])
    return None


def file_op_owner(rootfs: Path, user: str) -> tuple[int, int]:
    """The owner BuildKit gives what a file operation creates under ``USER user`` (WORKDIR).

    BuildKit's rule (``llb.WithUser`` resolved by the file-op solver), not the
    one a RUN uses: a numeric user is ``uid:uid`` whatever /etc/passwd says
    (``USER 9999`` gives 9999:9999, ``USER 1000`` gives 1000:1000 even when
    passwd's group of 1000 is 100); a name takes its passwd uid and gid, and a
    name missing from passwd is 0:0, not an error. ``user:group`` then sets
    the gid: a number as is, a name through /etc/group (unknown: unchanged).
    """
    from lamina.sandbox import read_image_file

    user_part, sep, group_part = user.partition(":")
    uid = gid = 0
    number = _numeric_id(user_part)
    if number is not None:
        uid = gid = number
    elif user_part:
        passwd = read_image_file(rootfs, "/etc/passwd")
        found_uid, found_gid = _lookup(passwd, user_part, 2), _lookup(passwd, user_part, 3)
        if found_uid is not None and found_gid is not None:
            uid, gid = found_uid, found_gid
    if sep and group_part:
        number = _numeric_id(group_part)
        if number is None:
            number = _lookup(read_image_file(rootfs, "/etc/group"), group_part, 2)
        if number is not None:
            gid = number
    return uid, gid


@dataclass(frozen=True, slots=True)
class Ownership:
    """How owners are written for one build: directly (root), or through an id map."""

    runner: NamespaceRunner | None = None
    id_map: IdMap | None = None

    @classmethod
    def of(cls, runner: Runner | None) -> Ownership:
        if runner is None:
            return cls()
        from lamina.sandbox import NamespaceRunner  # there is a runner: the sandbox is loaded

        if isinstance(runner, NamespaceRunner):
            id_map = runner.effective_id_map()
            if id_map is not None:
                return cls(runner, id_map)
        return cls()

    @property
    def rootless(self) -> bool:
        return self.id_map is not None

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` where in-image owners are real: here as root, else in the user
        namespace (``fn`` must not log; see ``NamespaceRunner.as_root``)."""
        return fn() if self.runner is None else self.runner.as_root(fn)

    def apply_upper(self, upper: Path, rootfs: Path) -> None:
        """Merge a RUN's overlay upper directory into the rootfs, owners kept."""
        from lamina.fs import apply_upper

        self.run(lambda: apply_upper(upper, rootfs))

    def extract(
        self,
        layers: Sequence[Layer],
        root: Path,
        *,
        warn: Callable[[str], None],
        ignore: IgnoreList | None = None,
    ) -> None:
        """Apply ``layers`` (an image's, in order) to ``root`` with the layers' owners.

        Rootless, each layer is extracted as root of the user namespace (so
        owners other than root survive: the build's RUN steps and later
        layers see them), fed through a pipe by a thread of this process,
        which alone talks to the registry.
        """
        from lamina.fs import extract_layer  # a build whose steps all hit extracts nothing

        for i, layer in enumerate(layers):
            name = f"layer {i} ({layer.digest()})"
            with layer.uncompressed() as stream:
                if self.runner is None:
                    extract_layer(root, stream, ignore=ignore, on_warning=warn, layer_name=name)
                    continue
                self._extract_fed(stream, root, name, warn, ignore)

    def _extract_fed(
        self,
        stream: BinaryIO,
        root: Path,
        name: str,
        warn: Callable[[str], None],
        ignore: IgnoreList | None,
    ) -> None:
        from lamina.fs import extract_layer

        assert self.runner is not None
        read_fd, write_fd = os.pipe()
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                with os.fdopen(write_fd, "wb") as out:
                    while chunk := stream.read(1 << 20):
                        out.write(chunk)
            except BrokenPipeError:
                pass  # the extraction ended early: its own error says why
            except BaseException as exc:  # re-raised below
                failure.append(exc)

        def extract() -> list[str]:
            os.close(write_fd)
            warnings: list[str] = []
            with os.fdopen(read_fd, "rb") as data:
                extract_layer(
                    root, data, ignore=ignore, on_warning=warnings.append, layer_name=name
                )
            return warnings

        feeder = threading.Thread(target=feed, name="lamina-layer-feed", daemon=True)
        try:
            # the feeder starts after the fork: the child never shares a running thread
            warnings = self.runner.as_root(extract, child_fds=(read_fd,), after_fork=feeder.start)
        finally:
            if feeder.is_alive() or feeder.ident is not None:
                feeder.join()
            else:
                for fd in (read_fd, write_fd):
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if failure:
            err = failure[0]
            if isinstance(err, LaminaError):
                raise err
            raise FilesystemError(f"reading {name} failed: {err}") from err
        for text in warnings:
            warn(text)

    def remove(self, path: Path) -> None:
        """Delete a scratch tree, even one holding files of subordinate owners."""
        if self.runner is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            self.runner.remove(path)
