"""``RUN --mount`` helpers (BuildKit semantics; here-documents: ``_runcmd``).

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

Secrets (``type=secret``) come from ``--secret`` (:class:`SecretSource`): a
file secret is written, with its ``mode``/``uid``/``gid``, to a private 0700
directory in the step's scratch directory, bound read-only at the target and
deleted with the scratch directory after the step; ``env=NAME`` hands the
value to that step's environment only. Ssh mounts bind the ``--ssh`` agent
socket at the target (``/run/buildkit/ssh_agent.<n>`` by default) and set
``SSH_AUTH_SOCK``. The sandbox makes missing mount points outside the
overlay's upper directory, so none of this reaches a layer; the history shows
the command only, as BuildKit's does.

Where the runner cannot mount (``--isolation=none``, and ``chroot`` without
CAP_SYS_ADMIN: ``Runner.can_mount`` is false) :class:`InPlaceMounts`
emulates every type in the root the step runs in (the image's entry at a
target renamed aside, the mount's content placed, all undone after the step,
the targets left out of the snapshot). Secrets still come from
:func:`secret_mounts` and caches from :class:`CacheStore`, so the mode/owner,
sharing and seeding rules are the same in every mode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lamina.builder._runcmd import missing_source
from lamina.builder.options import SecretSource, SSHSource
from lamina.dockerfile import Mount
from lamina.errors import (
    BuildStepError,
    DockerfileError,
    FilesystemError,
    NotSupportedError,
    SourceLocation,
)
from lamina.fs import ConfinedRoot, copy_entry, copy_tree, safe_join
from lamina.sandbox import BindMount

__all__ = [
    "SSH_AGENT_TARGET",
    "CacheLease",
    "CacheStore",
    "InPlaceMounts",
    "StepSecrets",
    "UpperCache",
    "mount_target",
    "released",
    "secret_mounts",
    "unsupported_mount",
]

_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


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
    """Copy the contents of ``src`` into the existing directory ``dst`` (links kept).

    ``src`` is a stage's directory: only its regular files are read (a device
    node a RUN made there is re-made, never opened; see :func:`lamina.fs.copy_entry`).
    """
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            if entry.is_dir(follow_symlinks=False):
                copy_tree(entry.path, target, dirs_exist_ok=True)
            else:
                copy_entry(entry.path, target)


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
        if real == self.rootfs:
            raise BuildStepError(
                f"cache mount target {self.target} is the root directory (through a symlink)",
                hint="mount the cache somewhere below the root, e.g. target=/var/cache/x",
                location=self.location,
            )
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
        """Move the cache back out of ``upper`` (the step may have planted symlinks there).

        ``upper`` is walked without following a symlink: a step that replaced
        the target or a parent with one gets an empty cache, and nothing
        outside ``upper`` is moved, changed or deleted.
        """
        confined = ConfinedRoot(self.upper)
        host = self.host
        if host is not None and self.moved:
            for name in _OPAQUE_XATTRS:
                confined.remove_xattr(host, name)
            if not confined.move_dir_out(host, self.lease.data):
                # the step replaced the cache directory: keep an empty cache
                with contextlib.suppress(OSError):
                    confined.remove(host)
                self.lease.data.mkdir(exist_ok=True)
            self.moved = False
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                confined.rmdir(d)  # only when the step put nothing else there
        self.created.clear()


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another filesystem, copy instead
            raise
        copy_tree(src, dst)  # a node the last step left in the cache is not read
        shutil.copystat(src, dst)
        st = src.stat()
        os.chown(dst, st.st_uid, st.st_gid)
        shutil.rmtree(src)


@contextlib.contextmanager
def released(leases: list[CacheLease], uppers: list[UpperCache]) -> Iterator[None]:
    """Restore upper caches and release every lease on leaving, whatever happened.

    The last placed is restored first: a cache mounted inside another one's
    target lies inside that cache's directory until it is moved back out.
    """
    try:
        yield
    finally:
        for uc in reversed(uppers):
            uc.restore()
        for lease in leases:
            lease.release()


def unsupported_mount(mount: Mount) -> str | None:
    """What is not supported about ``mount`` (None: supported)."""
    if mount.type not in ("bind", "cache", "tmpfs", "secret", "ssh"):
        return f"RUN --mount=type={mount.type}"
    return None


# ---------------------------------------------------------------------------- secrets, ssh

#: BuildKit's default target of the n-th ssh mount of a RUN (``llb`` ``AddSSHSocket``)
SSH_AGENT_TARGET = "/run/buildkit/ssh_agent.{n}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSecrets:
    """What the secret and ssh mounts of one RUN add to its sandbox.

    ``env`` holds secret values: it goes into that step's ``RunSpec.env`` only,
    never into the image config, a log line or an error message.
    """

    mounts: tuple[BindMount, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)


def _secret_value(source: SecretSource, location: SourceLocation) -> bytes | None:
    if source.path is None:
        return source.value
    try:
        return source.path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FilesystemError(
            f"cannot read the secret {source.id!r} from {source.path}: {exc.strerror or exc}",
            hint="check the src= path of --secret",
            location=location,
        ) from exc


def secret_mounts(
    mounts: Sequence[Mount],
    *,
    secrets: Sequence[SecretSource],
    agents: Sequence[SSHSource],
    workdir: str,
    run_env: Mapping[str, str],
    scratch: Path,
    location: SourceLocation,
) -> StepSecrets:
    """The bind mounts and env of the ``secret``/``ssh`` mounts of one RUN (BuildKit rules).

    A file secret is written to a private (0700) directory under ``scratch``
    with its ``mode``/``uid``/``gid`` and bound read-only at its target; the
    caller deletes ``scratch`` after the step. The mount point the sandbox
    makes for a missing target never reaches the layer. A missing secret
    or agent is skipped unless ``required``. ``SSH_AUTH_SOCK`` is the first ssh
    mount's target unless the step's environment sets it.
    """
    by_id = {s.id: s for s in secrets}
    agent_by_id = {a.id: a for a in agents}
    out: list[BindMount] = []
    env: dict[str, str] = {}
    private: Path | None = None
    ssh_index = 0
    for m in mounts:
        if m.type == "secret":
            sid = m.id or ""
            source = by_id.get(sid)
            value = _secret_value(source, location) if source is not None else None
            if value is None:
                if m.required:
                    raise missing_source("secret", sid, location)
                continue
            if m.env:
                if b"\0" in value:
                    raise BuildStepError(
                        f"secret {sid!r} contains a NUL byte and cannot be an environment variable",
                        hint="mount it as a file instead (drop env=)",
                        location=location,
                    )
                env[m.env] = value.decode("utf-8", "surrogateescape")
            if m.target is None:
                continue
            target = mount_target(m.target, workdir, location)
            if private is None:
                scratch.mkdir(parents=True, exist_ok=True)
                private = Path(tempfile.mkdtemp(prefix="secrets-", dir=scratch))
            host = private / f"secret-{len(out)}"
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            _own(host, m.mode if m.mode is not None else 0o400, m.uid or 0, m.gid or 0)
            out.append(BindMount(source=host, target=target, readonly=True))
        elif m.type == "ssh":
            n, ssh_index = ssh_index, ssh_index + 1
            raw = m.target if m.target is not None else SSH_AGENT_TARGET.format(n=n)
            target = mount_target(raw, workdir, location)
            if n == 0 and "SSH_AUTH_SOCK" not in run_env:
                env["SSH_AUTH_SOCK"] = target
            agent = agent_by_id.get(m.id or "default")
            if agent is None or not _is_socket(agent.socket):
                if m.required:
                    raise missing_source("ssh agent", m.id or "default", location)
                continue
            out.append(BindMount(source=agent.socket, target=target, readonly=True))
    return StepSecrets(mounts=tuple(out), env=env)


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _own(path: Path, mode: int, uid: int, gid: int) -> None:
    """``chown`` (as root; a rootless build keeps its own uid, mapped to 0) and ``chmod``."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, mode)


# ---------------------------------------------------------------------------- in place


_ASIDE = ".lamina-aside-"


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _clone(source: Path, dest: Path) -> int:
    """Copy ``source`` (file or tree, symlinks kept) to ``dest`` with owners; files copied."""
    st = os.stat(source)
    if not stat.S_ISDIR(st.st_mode):
        copy_entry(source, dest)
        if os.geteuid() == 0:
            os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        return 1
    copy_tree(source, dest)
    count = 0
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            for name in (".", *dirnames, *filenames):
                s = os.lstat(Path(dirpath) / name)
                with contextlib.suppress(FileNotFoundError):  # a skipped socket
                    os.lchown(dest / rel / name, s.st_uid, s.st_gid)
            count += len(filenames)
    else:
        count = sum(len(f) for _, _, f in os.walk(source))
    shutil.copystat(source, dest)
    return count


@dataclass(slots=True)
class _Claim:
    """One mount target taken over for a step: what the image had is moved aside."""

    host: Path
    aside: Path | None
    cache: CacheLease | None = None


@dataclass(slots=True, kw_only=True)
class InPlaceMounts:
    """``RUN --mount`` emulated in the step's root, for a runner without mount rights.

    Used for ``--isolation=none`` (the one in-place root) and for ``chroot``
    without CAP_SYS_ADMIN (the stage's private rootfs); ``isolation`` names
    the mode in messages.

    Each mount target is *claimed*: whatever the image has there is renamed
    aside (a sibling ``.lamina-aside-*`` name, so a rename on one filesystem)
    and missing parent directories are created. Then the target gets:

    * a secret or bind file/tree (:meth:`bind`): a copy with the source's
      owner and mode (a secret's file comes from :func:`secret_mounts`, so the
      mount's ``mode``/``uid``/``gid`` hold); writes are discarded;
    * a read-write cache (:meth:`cache`): the cache directory itself, renamed
      in (copied only across filesystems) and renamed back after the step; a
      read-only cache is copied in and discarded;
    * a tmpfs (:meth:`tmpfs`): an empty 1777 directory;
    * an ssh agent: a symlink to the agent socket's in-image path (:meth:`link`,
      in place) or a hard link to the socket (:meth:`socket`, a chroot).

    :meth:`restore` (always, in a ``finally``) removes what the step left at
    each target, renames the image's entries back, removes the created
    parents and restores the parents' times. The caller scans the root with
    :attr:`ignored` added to its ignore list, so nothing at a target reaches a
    layer even if restoring failed; the parents, whose only change is the
    ctime the renames gave them, are no change to the stat-index diff.
    """

    root: Path
    location: SourceLocation
    log: Callable[[str], None]
    isolation: str = "none"
    claims: list[_Claim] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)
    times: dict[Path, tuple[int, int]] = field(default_factory=dict)
    placed_mtime: dict[Path, int] = field(default_factory=dict)

    def _host(self, target: str) -> Path:
        try:
            host = safe_join(self.root, target, follow_final=True)
        except FilesystemError as exc:
            raise BuildStepError(
                f"RUN --mount target {target}: {exc.message}",
                hint="mount below a directory of the image",
                location=self.location,
            ) from exc
        if host == self.root:
            raise BuildStepError(
                f"RUN --mount target {target} is the root directory (through a symlink)",
                hint="mount somewhere below the root, e.g. target=/mnt",
                location=self.location,
            )
        return host

    def resolve(self, target: str) -> PurePosixPath:
        """The in-image path the mount at ``target`` occupies (symlinks resolved)."""
        host = self._host(target)
        return PurePosixPath("/", *host.relative_to(self.root).parts)

    @property
    def parents(self) -> list[PurePosixPath]:
        """The image's directories whose entries the emulation renames."""
        created = set(self.created)
        return [
            PurePosixPath("/", *d.relative_to(self.root).parts)
            for d in self.times
            if d not in created
        ]

    def _error(self, target: str, exc: OSError) -> FilesystemError:
        return FilesystemError(
            f"cannot emulate the RUN mount at {target} in place: {exc.strerror or exc}",
            hint=f"--isolation={self.isolation} without mount rights emulates mounts by "
            "copying into the root; check free space, or build with --isolation=namespace",
            location=self.location,
        )

    def _remember(self, directory: Path) -> None:
        if directory not in self.times:
            st = os.lstat(directory)
            self.times[directory] = (st.st_atime_ns, st.st_mtime_ns)

    def _claim(self, target: str) -> Path:
        host = self._host(target)
        missing: list[Path] = []
        probe = host.parent
        while _lstat(probe) is None:
            missing.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            raise BuildStepError(
                f"RUN --mount target {target}: {probe.relative_to(self.root)} is not a directory",
                hint="mount below a directory of the image",
                location=self.location,
            )
        self._remember(probe)
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)
            self.created.append(d)
            self._remember(d)
        aside: Path | None = None
        if _lstat(host) is not None:
            aside = host.parent / f"{_ASIDE}{os.getpid()}-{len(self.claims)}"
            os.rename(host, aside)
        self.claims.append(_Claim(host=host, aside=aside))
        return host

    def bind(self, source: Path, target: str) -> None:
        """A copy of ``source`` (file, tree; a socket gets a symlink) at ``target``."""
        try:
            host = self._claim(target)
            if stat.S_ISSOCK(os.stat(source).st_mode):
                host.symlink_to(source)
                return
            files = _clone(source, host)
            if source.is_dir():
                self.log(
                    f"RUN --mount at {target}: copied {files} file(s) in (--isolation="
                    f"{self.isolation} has no bind mounts here; the copy is removed after "
                    "the step)"
                )
        except OSError as exc:
            raise self._error(target, exc) from exc

    def link(self, socket: PurePosixPath, target: str) -> None:
        """A symlink at ``target`` to the in-image path ``socket`` (an ssh agent)."""
        try:
            self._claim(target).symlink_to(str(socket))
        except OSError as exc:
            raise self._error(target, exc) from exc

    def socket(self, source: Path, target: str) -> None:
        """A hard link to the socket ``source`` at ``target`` (connecting reaches the agent).

        A chroot cannot follow a symlink out of its root; a hard link needs
        the socket on the root's filesystem.
        """
        try:
            host = self._claim(target)
            os.link(source, host, follow_symlinks=True)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise NotSupportedError(
                    f"RUN --mount=type=ssh at {target} with --isolation={self.isolation} "
                    f"without mount rights and the agent socket {source} on another filesystem",
                    hint="the socket is hard-linked into the root: put it on the filesystem of "
                    "--kaniko-dir, grant CAP_SYS_ADMIN, or use --isolation=namespace",
                    location=self.location,
                ) from exc
            raise self._error(target, exc) from exc

    def tmpfs(self, target: str) -> None:
        """An empty directory (mode 1777, as a fresh tmpfs) at ``target``."""
        try:
            host = self._claim(target)
            host.mkdir()
            os.chmod(host, 0o1777)
        except OSError as exc:
            raise self._error(target, exc) from exc

    def cache(self, lease: CacheLease, target: str, *, readonly: bool) -> None:
        """The cache ``lease`` at ``target``: renamed in (read-write) or copied (read-only)."""
        try:
            host = self._claim(target)
            if readonly:
                _clone(lease.data, host)
            else:
                _move(lease.data, host)
                self.claims[-1].cache = lease
        except OSError as exc:
            raise self._error(target, exc) from exc

    def placed(self) -> None:
        """Call after the last mount is placed: later parent changes are the step's."""
        for d in self.times:
            st = _lstat(d)
            if st is not None:
                self.placed_mtime[d] = st.st_mtime_ns

    def restore(self) -> None:
        """Put back what the image had at every target (errors are collected, then raised).

        The step may have replaced any directory of the root with a symlink:
        every recorded path is reached without following one (see
        :class:`~lamina.fs.ConfinedRoot`). A target whose parent the step
        replaced is left as the step left it (the image's entry went with the
        parent); a cache there starts empty next time.
        """
        confined = ConfinedRoot(self.root)
        keep: dict[Path, tuple[int, int]] = {}
        for d, mtime in self.placed_mtime.items():
            st = confined.lstat(d)
            if st is not None and st.st_mtime_ns != mtime:  # the step changed this directory
                keep[d] = (st.st_atime_ns, st.st_mtime_ns)
        failures: list[str] = []
        for claim in reversed(self.claims):
            lease = claim.cache
            try:
                with confined.directory(claim.host.parent) as parent:
                    reachable = parent is not None
                if not reachable:
                    self.log(
                        f"RUN --mount at {confined.inside(claim.host)}: the step replaced a "
                        "parent directory; nothing is restored there"
                    )
                    if lease is not None:
                        lease.data.mkdir(exist_ok=True)
                    continue
                if lease is not None:
                    if not confined.move_dir_out(claim.host, lease.data):
                        # the step replaced the cache directory: keep an empty cache
                        confined.remove(claim.host)
                        lease.data.mkdir(exist_ok=True)
                else:
                    confined.remove(claim.host)
                if claim.aside is not None and not confined.rename_within(
                    claim.aside, claim.host.name
                ):
                    failures.append(f"{claim.host}: the image's entry was moved away by the step")
            except OSError as exc:
                failures.append(f"{claim.host}: {exc.strerror or exc}")
        self.claims.clear()
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                confined.rmdir(d)  # only when the step put nothing else there
        for d, (atime, mtime) in sorted(self.times.items(), reverse=True):
            with contextlib.suppress(OSError):
                st = confined.lstat(d)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    confined.set_times(d, keep.get(d, (atime, mtime)))
        if failures:
            raise FilesystemError(
                "cannot restore the image's files after emulating RUN mounts in place: "
                + "; ".join(failures),
                hint="the snapshot leaves these paths out; check the build root",
                location=self.location,
            )
