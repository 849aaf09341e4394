"""RUN here-documents and ``RUN --mount`` helpers (BuildKit semantics).

Here-documents (``dockerfile2llb`` ``dispatchRun``):

* the whole command is one heredoc whose body starts with ``#!``: the body is
  the file ``/dev/pipes/<NAME>`` (mode 0755, mounted read-only) and the
  command is ``SHELL + ["/dev/pipes/<NAME>"]`` (lamina mounts the file at
  ``/.lamina-pipes/<NAME>`` and runs that path; the history shows BuildKit's);
* the whole command is one heredoc without a shebang: ``SHELL + [body]``;
* anything else (``RUN <<A cat > /a && <<B cat > /b``): the shell gets the line
  followed by ``"\\n" + raw body + NAME`` for each heredoc, and handles the
  heredocs itself (quoting, ``<<-`` tab stripping).

Cache mounts live under ``BuildOptions.cache_mount_dir``: one directory per
cache id (``<sha256(id)>/data``, a ``lock`` file and the ``id`` as text).
The sandbox has no persistent read-write bind mount (a read-write
``BindMount`` discards its writes), so a writable cache is handed to the
step through the overlay: its directory is moved into the step's upper
directory at the target (marked opaque so the image's own files there are
hidden), and moved back out before the layer is computed, so it never
reaches a layer. Sharing:

* ``locked`` and ``shared``: an exclusive ``flock`` on the cache for the
  step (one build runs one RUN at a time, so ``shared`` only waits when
  another lamina process uses the same cache directory);
* ``private``: when another process holds the cache, the step gets a fresh
  empty cache directory that is thrown away afterwards (BuildKit creates a
  new cache instance in that case too).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lamina.dockerfile import Heredoc, Mount
from lamina.errors import BuildStepError, DockerfileError, FilesystemError, SourceLocation
from lamina.fs import safe_join

__all__ = [
    "PIPES_DIR",
    "SANDBOX_PIPES_DIR",
    "CacheLease",
    "CacheStore",
    "HeredocCommand",
    "UpperCache",
    "heredoc_command",
    "mount_target",
    "released",
    "unsupported_mount",
]

#: where BuildKit mounts a shebang heredoc script (the path in ``history``)
PIPES_DIR = "/dev/pipes"
#: where lamina mounts it: the sandbox gives each step a fresh ``/dev`` tmpfs
#: that hides mount points below it, so ``/dev/pipes`` cannot be a mount target
SANDBOX_PIPES_DIR = "/.lamina-pipes"
_SINGLE = re.compile(r"^\s*(\d*)<<(-?)\s*(\S+)\s*$")
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


@dataclass(frozen=True, slots=True, kw_only=True)
class HeredocCommand:
    """The argv of a heredoc RUN and, for a shebang script, its file (name, bytes)."""

    argv: tuple[str, ...]
    script: tuple[str, bytes] | None = None


def _unquote(word: str) -> str:
    return word.replace('"', "").replace("'", "")


def heredoc_command(text: str, heredocs: Sequence[Heredoc], shell: Sequence[str]) -> HeredocCommand:
    """``RUN`` shell-form ``text`` with ``heredocs`` → the argv BuildKit runs."""
    m = _SINGLE.match(text)
    if m is not None and len(heredocs) == 1 and _unquote(m.group(3)) == heredocs[0].name:
        doc = heredocs[0]
        data = doc.body  # <<- strips leading tabs; the expand flag is ignored for RUN
        if data.startswith("#!"):
            name = posixpath.basename(doc.name) or "EOF"
            path = posixpath.join(PIPES_DIR, name)
            return HeredocCommand(
                argv=(*shell, path), script=(name, data.encode("utf-8", "surrogateescape"))
            )
        return HeredocCommand(argv=(*shell, data))
    full = text
    for doc in heredocs:
        full += "\n" + doc.content + doc.name
    return HeredocCommand(argv=(*shell, full))


def mount_target(target: str | None, workdir: str, location: SourceLocation) -> str:
    """A mount target made absolute against WORKDIR (``""`` is WORKDIR); ``/`` is refused."""
    joined = posixpath.join(workdir or "/", target or "")
    clean = posixpath.normpath(joined)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise DockerfileError(
            "invalid mount target '/'",
            hint="mount somewhere below the root, e.g. target=/mnt",
            location=location,
        )
    return clean


# ---------------------------------------------------------------------------- caches


def _chown_mode(path: Path, mode: int, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _copy_tree_contents(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dst`` (links kept)."""
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(entry.path, target, follow_symlinks=False)


@dataclass(slots=True, kw_only=True)
class CacheLease:
    """One use of a cache by one RUN: ``data`` is the directory the step sees."""

    data: Path
    discard: bool
    _lock_fd: int | None = None

    def release(self) -> None:
        if self.discard:
            shutil.rmtree(self.data.parent, ignore_errors=True)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


@dataclass(frozen=True, slots=True)
class CacheStore:
    """The cache mounts of all builds that share ``root``."""

    root: Path

    def _dir(self, cache_id: str) -> Path:
        return self.root / hashlib.sha256(cache_id.encode("utf-8", "surrogateescape")).hexdigest()

    def acquire(
        self,
        mount: Mount,
        cache_id: str,
        *,
        seed: Path | None,
        location: SourceLocation,
    ) -> CacheLease:
        """Lock (per ``sharing``) and return the cache ``cache_id``, created on first use.

        ``seed`` (from ``from``/``source``) fills a newly created cache;
        ``mode``/``uid``/``gid`` apply only on creation.
        """
        base = self._dir(cache_id)
        try:
            base.mkdir(parents=True, exist_ok=True)
            (base / "id").write_text(cache_id + "\n", encoding="utf-8", errors="surrogateescape")
            fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise FilesystemError(
                f"cannot open the cache {cache_id!r} in {self.root}: {exc.strerror or exc}",
                hint="check --cache-mount-dir (it must be a writable directory)",
                location=location,
            ) from exc
        sharing = mount.sharing or "shared"
        data = base / "data"
        discard = False
        try:
            if sharing == "private" and mount.readonly is False:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    fd = -1
                    data = Path(tempfile.mkdtemp(prefix="private-", dir=self.root)) / "data"
                    discard = True
            elif mount.readonly:
                fcntl.flock(fd, fcntl.LOCK_SH)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX)
            if not data.is_dir():
                data.mkdir(mode=0o700)
                if seed is not None:
                    _copy_tree_contents(seed, data)
                _chown_mode(
                    data,
                    mount.mode if mount.mode is not None else 0o755,
                    mount.uid or 0,
                    mount.gid or 0,
                )
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            raise FilesystemError(
                f"cannot prepare the cache {cache_id!r}: {exc.strerror or exc}",
                hint="check free space and permissions of --cache-mount-dir",
                location=location,
            ) from exc
        return CacheLease(data=data, discard=discard, _lock_fd=fd if fd >= 0 else None)


@dataclass(slots=True, kw_only=True)
class UpperCache:
    """A writable cache placed into an overlay upper directory for one step.

    :meth:`place` moves the cache into ``upper`` at ``target`` (opaque over the
    image's directory there); :meth:`restore` moves it back and removes the
    parent directories :meth:`place` created when the step left them empty.
    """

    lease: CacheLease
    upper: Path
    rootfs: Path
    target: str
    location: SourceLocation
    host: Path | None = None
    created: list[Path] = field(default_factory=list)
    moved: bool = False

    def place(self) -> None:
        real = safe_join(self.rootfs, self.target, follow_final=True)
        rel = real.relative_to(self.rootfs)
        in_image = self.rootfs / rel
        if in_image.exists() and not in_image.is_dir():
            raise BuildStepError(
                f"cache mount target {self.target} is not a directory in the image",
                hint="mount the cache on a directory (or a path that does not exist)",
                location=self.location,
            )
        host = self.upper / rel
        try:
            probe = host.parent
            missing: list[Path] = []
            while probe != self.upper and not probe.exists():
                missing.append(probe)
                probe = probe.parent
            for d in reversed(missing):
                d.mkdir()
                like = self.rootfs / d.relative_to(self.upper)
                with contextlib.suppress(OSError):
                    st = like.stat()
                    os.chown(d, st.st_uid, st.st_gid)
                    os.chmod(d, stat.S_IMODE(st.st_mode))
                    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
                self.created.append(d)
            _move(self.lease.data, host)
            self.moved = True
            self.host = host
            if in_image.is_dir():
                for name in _OPAQUE_XATTRS:
                    with contextlib.suppress(OSError):
                        os.setxattr(host, name, b"y", follow_symlinks=False)
        except OSError as exc:
            raise FilesystemError(
                f"cannot mount the cache at {self.target}: {exc.strerror or exc}",
                hint="the cache directory and the build directory should be on one filesystem",
                location=self.location,
            ) from exc

    def restore(self) -> None:
        host = self.host
        if host is not None and self.moved:
            for name in _OPAQUE_XATTRS:
                with contextlib.suppress(OSError):
                    os.removexattr(host, name, follow_symlinks=False)
            if host.is_dir() and not host.is_symlink():
                _move(host, self.lease.data)
            else:
                # the step replaced the cache directory: keep an empty cache
                with contextlib.suppress(OSError):
                    if host.is_dir() and not host.is_symlink():
                        shutil.rmtree(host)
                    else:
                        host.unlink()
                self.lease.data.mkdir(exist_ok=True)
            self.moved = False
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when the step put nothing else there
        self.created.clear()


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another filesystem, copy instead
            raise
        shutil.copytree(src, dst, symlinks=True)
        shutil.copystat(src, dst)
        st = src.stat()
        os.chown(dst, st.st_uid, st.st_gid)
        shutil.rmtree(src)


@contextlib.contextmanager
def released(leases: list[CacheLease], uppers: list[UpperCache]) -> Iterator[None]:
    """Restore upper caches and release every lease on leaving, whatever happened."""
    try:
        yield
    finally:
        for uc in uppers:
            uc.restore()
        for lease in leases:
            lease.release()


def unsupported_mount(mount: Mount) -> str | None:
    """What is not supported about ``mount`` (None: supported)."""
    if mount.type in ("secret", "ssh"):
        return f"RUN --mount=type={mount.type}"
    return None
