"""The three runners and the parent side of the init protocol."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar

from lamina import errors
from lamina.errors import BuildStepError, FilesystemError, LaminaError, NotSupportedError
from lamina.fs import ConfinedRoot, apply_upper, copy_entry, safe_join
from lamina.sandbox import _init
from lamina.sandbox._spec import BindMount, RunResult, RunSpec, TmpfsMount
from lamina.sandbox._users import ResolvedUser, resolve_user

__all__ = [
    "ChrootRunner",
    "IdMap",
    "InPlaceRunner",
    "NamespaceRunner",
    "host_network_files",
    "probe_mounts",
]

INIT_SCRIPT = Path(_init.__file__)
T = TypeVar("T")
_TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024
_KILL_GRACE_SECONDS = 5.0
_PROBE_TIMEOUT = 20.0


def host_network_files(
    hostname: str | None = None, *, etc: Path = Path("/etc")
) -> dict[str, bytes]:
    """The host's ``resolv.conf`` and ``hosts`` for ``RunSpec.extra_files``.

    With ``hostname``, a ``127.0.0.1 <hostname>`` line is appended to the hosts
    file so the sandbox's own name resolves. Missing host files are skipped.
    """
    files: dict[str, bytes] = {}
    for name in ("resolv.conf", "hosts"):
        try:
            files[f"/etc/{name}"] = (etc / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise FilesystemError(f"cannot read {etc / name}: {exc.strerror or exc}") from exc
    if hostname:
        hosts = files.get("/etc/hosts", b"127.0.0.1\tlocalhost\n")
        if not hosts.endswith(b"\n"):
            hosts += b"\n"
        files["/etc/hosts"] = hosts + f"127.0.0.1\t{hostname}\n".encode()
    return files


def remove_tree(path: Path) -> None:
    """Remove a sandbox scratch directory, best effort.

    Overlay leaves a mode-000 ``work/work`` directory behind, which an
    unprivileged owner can only remove after giving itself access again.
    """
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            with contextlib.suppress(OSError):
                full = os.path.join(dirpath, name)
                if not os.path.islink(full) and not os.access(full, os.R_OK | os.W_OK | os.X_OK):
                    os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# the parent side of the init protocol


class _Tail:
    """The last lines of a byte stream, in bounded memory."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > 2 * _TAIL_BYTES:
            del self._buf[: len(self._buf) - _TAIL_BYTES]

    def lines(self) -> bytes:
        data = bytes(self._buf[-_TAIL_BYTES:])
        keep = data.split(b"\n")
        if keep and keep[-1] == b"":
            keep.pop()
            return b"\n".join(keep[-_TAIL_LINES:]) + b"\n"
        return b"\n".join(keep[-_TAIL_LINES:])


def _init_command(*args: str) -> list[str]:
    return [sys.executable, "-I", "-S", str(INIT_SCRIPT), *args]


def _cancel(proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
    """Stop the init (and so the sandbox) after an interruption in the parent."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        proc.wait(timeout=_KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _drive(
    payload: dict[str, Any],
    on_output: Callable[[bytes], None],
    *,
    runner: str,
    graceful_cancel: bool,
) -> RunResult:
    payload = {**payload, "parent_pid": os.getpid()}
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            _init_command(str(spec_r), str(status_w)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(spec_r, status_w),
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (spec_r, spec_w, status_r, status_w):
            os.close(fd)
        raise BuildStepError(
            f"cannot start the {runner} sandbox ({sys.executable}): {exc.strerror or exc}"
        ) from exc
    os.close(spec_r)
    os.close(status_w)
    tail = _Tail()
    try:
        with os.fdopen(spec_w, "wb") as fh:
            fh.write(json.dumps(payload).encode())
        assert proc.stdout is not None
        out_fd = proc.stdout.fileno()
        while chunk := os.read(out_fd, 65536):
            tail.feed(chunk)
            on_output(chunk)
        proc.wait()
        proc.stdout.close()
        with os.fdopen(status_r, "rb") as fh:
            status_data = fh.read()
    except BaseException:
        _cancel(proc, graceful=graceful_cancel)
        with contextlib.suppress(OSError):
            os.close(status_r)
        if proc.stdout is not None:
            proc.stdout.close()
        raise
    return _interpret(status_data, proc.returncode, tail, on_output, runner=runner)


def _interpret(
    status_data: bytes,
    returncode: int,
    tail: _Tail,
    on_output: Callable[[bytes], None],
    *,
    runner: str,
) -> RunResult:
    events: list[dict[str, Any]] = []
    for line in status_data.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    exec_error: str | None = None
    for event in events:
        kind = event.get("event")
        if kind == "error":
            raise BuildStepError(
                f"the {runner} sandbox could not be set up: {event.get('message')}",
                hint=event.get("hint") or _hint_for(runner),
            )
        if kind == "exec-error":
            exec_error = str(event.get("message"))
            message = f"lamina: {exec_error}\n".encode()
            tail.feed(message)
            on_output(message)
        if kind == "exit":
            sig = event.get("signal")
            return RunResult(
                exit_code=int(event["exit_code"]),
                signal=int(sig) if sig is not None else None,
                tail=tail.lines(),
                exec_error=exec_error,
            )
    output = tail.lines().decode(errors="replace").strip()
    raise BuildStepError(
        f"the {runner} sandbox ended without reporting the command's status "
        f"(init exit status {returncode})" + (f": {output}" if output else ""),
        hint=_hint_for(runner),
    )


def _hint_for(runner: str) -> str:
    if runner == "namespace":
        return "use --isolation=chroot (root) or --isolation=none (inside a container)"
    if runner == "chroot":
        return "use --isolation=none inside a container"
    return "check that the command and its working directory exist"


def _final_env(spec: RunSpec, user: ResolvedUser) -> dict[str, str]:
    env = dict(spec.env)
    env.setdefault("PATH", _init.DEFAULT_PATH)
    env.setdefault("HOME", user.home)
    return env


def _command_payload(spec: RunSpec, user: ResolvedUser, mode: str) -> dict[str, Any]:
    return {
        "mode": mode,
        "argv": list(spec.argv),
        "env": _final_env(spec, user),
        "cwd": spec.cwd,
        "uid": user.uid,
        "gid": user.gid,
        "groups": list(user.groups),
        "rootfs": str(spec.rootfs),
    }


def _abs_target(spec: RunSpec, target: str) -> str:
    return target if target.startswith("/") else spec.cwd.rstrip("/") + "/" + target


# --------------------------------------------------------------------------
# mount points that must exist in the image


def _exists_in_view(rootfs: Path, upper: Path | None, path: str) -> bool:
    if upper is not None:
        in_upper = safe_join(upper, path, follow_final=True)
        with contextlib.suppress(OSError):
            st = os.lstat(in_upper)
            return not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    return os.path.lexists(safe_join(rootfs, path, follow_final=True))


@dataclass(slots=True)
class _Stubs:
    """Mount points created for targets missing from the image.

    With an overlay they live in an extra lower layer above the rootfs (so
    nothing ever reaches ``upper``); without one they are created in the
    rootfs itself and removed afterwards, restoring the parents' times.
    """

    base: Path
    created: list[Path] = field(default_factory=list)
    parent_times: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def _parents(self, rootfs: Path, path: str) -> Path:
        """Create the missing parents of ``path``; returns the leaf's stub path."""
        resolved = safe_join(rootfs, path, follow_final=True)
        rel = resolved.relative_to(rootfs)
        current = self.base
        for part in rel.parts[:-1]:
            current = current / part
            self._dir(current, rootfs / current.relative_to(self.base))
        return self.base / rel

    def add(self, rootfs: Path, path: str, *, directory: bool) -> None:
        """An empty directory or file at ``path`` when nothing is there."""
        leaf = self._parents(rootfs, path)
        if leaf.exists() or leaf.is_symlink():
            return
        self._remember_parent(leaf.parent)
        if directory:
            leaf.mkdir(mode=0o755)
        else:
            leaf.touch(mode=0o644)
        self.created.append(leaf)

    def add_device(self, rootfs: Path, path: str, device: int) -> bool:
        """A character device node (0666) at ``path`` when nothing is there.

        Returns False when the kernel refuses ``mknod`` (no CAP_MKNOD).
        """
        leaf = self._parents(rootfs, path)
        if leaf.exists() or leaf.is_symlink():
            return True
        self._remember_parent(leaf.parent)
        try:
            os.mknod(leaf, 0o666 | stat.S_IFCHR, device)
        except PermissionError:
            return False
        os.chmod(leaf, 0o666)
        self.created.append(leaf)
        return True

    def _remember_parent(self, parent: Path) -> None:
        if parent not in self.parent_times:
            st = parent.stat()
            self.parent_times[parent] = (st.st_atime_ns, st.st_mtime_ns)

    def _dir(self, path: Path, like: Path) -> None:
        if path.is_dir():
            return
        if path.exists() or path.is_symlink():
            raise FilesystemError(f"cannot create a mount point under {path}: not a directory")
        self._remember_parent(path.parent)
        path.mkdir(mode=0o755)
        self.created.append(path)
        with contextlib.suppress(OSError):
            st = like.stat()
            os.chmod(path, stat.S_IMODE(st.st_mode))
            os.chown(path, st.st_uid, st.st_gid)

    def restore_times(self) -> None:
        """Give the parents of the stubs back their times.

        Also after the step: each parent is reached without following a
        symlink (the step may have replaced any directory with one).
        """
        confined = ConfinedRoot(self.base)
        for parent, (atime, mtime) in sorted(self.parent_times.items(), reverse=True):
            with contextlib.suppress(OSError):
                confined.set_times(parent, (atime, mtime))

    def remove(self) -> None:
        """Remove the stubs (a directory only when empty), after the step: symlink-safe."""
        confined = ConfinedRoot(self.base)
        for path in reversed(self.created):
            with contextlib.suppress(OSError):
                st = confined.lstat(path)
                if st is None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    confined.rmdir(path)
                else:
                    confined.remove(path)
        self.restore_times()


def _add_placeholders(stubs: _Stubs, spec: RunSpec) -> None:
    """``spec.placeholders`` as stub directories, where a directory can be made."""
    for path in spec.placeholders:
        if path.startswith("/") and not _exists_in_view(spec.rootfs, spec.upper, path):
            with contextlib.suppress(FilesystemError):  # below a file: BuildKit has none either
                stubs.add(spec.rootfs, path, directory=True)


def _copy_times_from_image(stubs_base: Path, rootfs: Path) -> None:
    for dirpath, dirnames, _ in os.walk(stubs_base, topdown=False):
        for name in dirnames:
            stub = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = (rootfs / stub.relative_to(stubs_base)).stat()
                os.utime(stub, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------
# user namespace id maps

IdRange: TypeAlias = tuple[int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class IdMap:
    """uid/gid maps for a user namespace: ``(inside, outside, count)`` ranges.

    ``use_tools``: write them with the setuid ``newuidmap``/``newgidmap``
    (rootless; they check ``/etc/subuid``/``/etc/subgid``) instead of directly
    (needs root).
    """

    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    use_tools: bool = False

    @property
    def identity(self) -> bool:
        """Every id maps to itself (root's map): no translation, no helper needed."""
        return all(a == b for a, b, _ in (*self.uids, *self.gids))

    def maps_uid(self, uid: int) -> bool:
        return any(inside <= uid < inside + count for inside, _, count in self.uids)

    def maps_gid(self, gid: int) -> bool:
        return any(inside <= gid < inside + count for inside, _, count in self.gids)

    def to_inside_uid(self, host_uid: int) -> int | None:
        """The id a file owner on the host (e.g. in ``upper``) has inside the sandbox."""
        return _to_inside(self.uids, host_uid)

    def to_inside_gid(self, host_gid: int) -> int | None:
        """Like :meth:`to_inside_uid` for groups."""
        return _to_inside(self.gids, host_gid)

    @classmethod
    def for_current_user(cls, *, etc: Path = Path("/etc")) -> IdMap | None:
        """The widest map available: identity for root, ``/etc/subuid`` ranges otherwise.

        ``None`` when only the caller's own ids can be mapped (no subordinate
        ids or no ``newuidmap``/``newgidmap``).
        """
        uid, gid = os.geteuid(), os.getegid()
        if uid == 0:  # every id this process's own user namespace has, as itself
            return cls(uids=_own_ids("uid"), gids=_own_ids("gid"))
        tools = shutil.which("newuidmap"), shutil.which("newgidmap")
        if None in tools:
            return None
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        sub_uid = _subordinate(etc / "subuid", name, uid)
        sub_gid = _subordinate(etc / "subgid", name, uid)
        if sub_uid is None or sub_gid is None:
            return None
        return cls(
            uids=((0, uid, 1), (1, *sub_uid)),
            gids=((0, gid, 1), (1, *sub_gid)),
            use_tools=True,
        )

    def payload(self) -> dict[str, Any]:
        return {
            "uid": [list(r) for r in self.uids],
            "gid": [list(r) for r in self.gids],
            "newuidmap": shutil.which("newuidmap") if self.use_tools else None,
            "newgidmap": shutil.which("newgidmap") if self.use_tools else None,
        }


def _own_ids(kind: str) -> tuple[IdRange, ...]:
    """The identity map over the ids of this process's user namespace (all of them on a
    host; a container's range in a user-namespaced container)."""
    try:
        lines = Path(f"/proc/self/{kind}_map").read_text().splitlines()
        ranges = tuple((int(a), int(a), int(c)) for a, _, c in (ln.split() for ln in lines))
    except (OSError, ValueError):
        ranges = ()
    return ranges or ((0, 0, 2**32 - 1),)


def _to_inside(ranges: tuple[IdRange, ...], host: int) -> int | None:
    for inside, outside, count in ranges:
        if outside <= host < outside + count:
            return inside + host - outside
    return None


def _subordinate(path: Path, name: str, uid: int) -> tuple[int, int] | None:
    """The first ``start, count`` range of ``name`` (or ``uid``) in a subuid/subgid file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if (
            len(fields) == 3
            and fields[0] in (name, str(uid))
            and fields[1].isdigit()
            and fields[2].isdigit()
            and int(fields[2]) > 0
        ):
            return int(fields[1]), int(fields[2])
    return None


# --------------------------------------------------------------------------
# runners


def _in_user_namespace(
    fn: Callable[[], T],
    id_map: IdMap,
    *,
    child_fds: Sequence[int] = (),
    after_fork: Callable[[], None] | None = None,
) -> T:
    """Run ``fn`` as root of a new user namespace with ``id_map`` (see ``as_root``)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid != 0:
        for fd in child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if after_fork is not None:
            after_fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(ready_r)
        os.close(go_w)
        os.close(out_r)
        try:
            try:
                uid, gid = os.geteuid(), os.getegid()
                _init.unshare(_init.CLONE_NEWUSER)
                if not id_map.use_tools:  # only our own ids: we may write the maps ourselves
                    _init._write_proc("/proc/self/setgroups", "deny")
                    _init._write_proc("/proc/self/uid_map", f"0 {uid} 1\n")
                    _init._write_proc("/proc/self/gid_map", f"0 {gid} 1\n")
                os.write(ready_w, b"u")
                if os.read(go_r, 1) != b"g":
                    os._exit(3)
                os.setgid(0)
                os.setuid(0)
                result: tuple[str, Any] = ("ok", fn())
            except LaminaError as exc:
                result = ("lamina", (type(exc).__name__, exc.message, exc.hint, exc.location))
            except BaseException as exc:
                result = ("other", f"{type(exc).__name__}: {exc}")
            data = pickle.dumps(result)
            view = memoryview(data)
            while view:
                view = view[os.write(out_w, view) :]
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.close(out_w)
    try:
        if os.read(ready_r, 1) != b"u":
            answer = os.read(out_r, 1 << 16)
            why = pickle.loads(answer)[1] if answer else "the helper process died"
            raise BuildStepError(
                f"cannot enter a user namespace to change the build's files: {why}",
                hint="rootless builds need unprivileged user namespaces "
                "(kernel.unprivileged_userns_clone=1)",
            )
        problem = _init._write_id_maps(pid, id_map.payload()) if id_map.use_tools else ""
        os.write(go_w, b"g" if not problem else b"x")
        if problem:
            raise BuildStepError(
                f"cannot map ids in the user namespace: {problem}",
                hint="check /etc/subuid, /etc/subgid and newuidmap/newgidmap",
            )
        chunks = []
        while chunk := os.read(out_r, 1 << 16):
            chunks.append(chunk)
    finally:
        for fd in (ready_r, go_w, out_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        os.waitpid(pid, 0)
    if not chunks:
        raise FilesystemError("the user namespace helper ended without an answer")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "lamina":
        name, message, hint, location = value
        cls = getattr(errors, name, None)
        if not (isinstance(cls, type) and issubclass(cls, LaminaError)) or cls is NotSupportedError:
            cls = FilesystemError
        raise cls(message, hint=hint, location=location)
    raise FilesystemError(f"changing files in the user namespace failed: {value}")


def _check_mapped(raw: str, user: ResolvedUser, id_map: IdMap | None) -> ResolvedUser:
    """The user as it can run in the user namespace, or a clear error."""
    if id_map is None:
        if user.uid == 0 and user.gid == 0:
            # only the caller's ids are mapped: supplementary groups cannot be set
            return ResolvedUser(uid=0, gid=0, groups=(), home=user.home, name=user.name)
        unmapped = f"uid {user.uid}, gid {user.gid}"
    elif not id_map.maps_uid(user.uid) or not id_map.maps_gid(user.gid):
        unmapped = f"uid {user.uid}, gid {user.gid}"
    else:
        groups = tuple(g for g in user.groups if id_map.maps_gid(g))
        return ResolvedUser(
            uid=user.uid, gid=user.gid, groups=groups, home=user.home, name=user.name
        )
    hint = (
        "give this user subordinate ids (e.g. usermod --add-subuids 100000-165535 "
        "--add-subgids 100000-165535 USER) and install newuidmap/newgidmap (uidmap), "
        "or run lamina as root"
    )
    raise BuildStepError(
        f"USER {raw or 'root'} ({unmapped}) cannot be used in this rootless sandbox: "
        "it is not mapped in its user namespace",
        hint=hint,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceRunner:
    """Mount + pid + ipc + uts namespaces (+ user when not root, + net for ``none``).

    ``user_namespace=None`` uses a user namespace exactly when not root. Its id
    map is ``id_map`` or :meth:`IdMap.for_current_user`: the caller as root
    plus its ``/etc/subuid``/``/etc/subgid`` range (written by
    ``newuidmap``/``newgidmap``); without subordinate ids only root can be
    used (its supplementary groups are then dropped: they cannot be mapped).
    Supplementary groups outside the map are dropped too.
    """

    user_namespace: bool | None = None
    id_map: IdMap | None = None
    tmp_dir: Path | None = None

    @property
    def name(self) -> str:
        return "namespace"

    @property
    def captures_upper(self) -> bool:
        return True

    @property
    def can_mount(self) -> bool:
        return True

    def effective_id_map(self) -> IdMap | None:
        """The id map runs use; ``None`` without a user namespace (host ids as they are).

        Owners of files a step creates in ``upper`` are host ids: turn them
        back into image ids with :meth:`IdMap.to_inside_uid`/``to_inside_gid``.
        """
        if not self._userns():
            return None
        full = self.id_map or IdMap.for_current_user()
        if full is not None:
            # root through a user namespace maps every id to itself: host ids are image ids
            return None if full.identity else full
        return IdMap(uids=((0, os.geteuid(), 1),), gids=((0, os.getegid(), 1),))

    def _userns(self) -> bool:
        return (os.geteuid() != 0) if self.user_namespace is None else self.user_namespace

    def as_root(
        self,
        fn: Callable[[], T],
        *,
        child_fds: Sequence[int] = (),
        after_fork: Callable[[], None] | None = None,
    ) -> T:
        """``fn()`` with the sandbox's view of file owners, and its result.

        Without a user namespace ``fn`` simply runs. Rootless, files owned by
        subordinate ids can only be created in, moved, chowned or deleted from
        inside the user namespace: ``fn`` then runs in a forked child that
        enters a new user namespace with the build's id map and becomes its
        root (in-image ids are its ids there). ``fn`` must not log (the child
        shares the parent's locks); its result (or its ``LaminaError``) comes
        back pickled; any other failure becomes a ``FilesystemError``.
        ``child_fds`` (e.g. the read end of a pipe ``fn`` consumes) are closed
        in the caller once the child has them, so that a writer feeding them
        sees the child go away; ``after_fork`` then runs in the caller (e.g.
        starts that writer), before ``fn`` (also when no child is needed).
        """
        id_map = self.effective_id_map()
        if id_map is None:
            if after_fork is not None:
                after_fork()
            return fn()
        return _in_user_namespace(fn, id_map, child_fds=child_fds, after_fork=after_fork)

    def remove(self, path: Path) -> None:
        """Delete a tree a rootless step may have filled with subordinate-id owners."""
        remove_tree(path)
        if os.path.lexists(path):
            self.as_root(lambda: remove_tree(path))

    def apply_upper(self, upper: Path, rootfs: Path) -> None:
        """Merge a step's ``upper`` into ``rootfs`` (``lamina.fs.apply_upper``), owners kept."""
        self.as_root(lambda: apply_upper(upper, rootfs))

    def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
        user = resolve_user(spec.rootfs, spec.user, upper=spec.upper)
        userns = self._userns()
        id_map = (self.id_map or IdMap.for_current_user()) if userns else None
        if userns:
            user = _check_mapped(spec.user, user, id_map)
        with self._workspace() as tmp:
            payload = self._payload(spec, user, tmp, userns=userns, id_map=id_map)
            stubs: _Stubs | None = payload.pop("_stubs")
            try:
                return _drive(payload, on_output, runner="namespace", graceful_cancel=False)
            finally:
                if stubs is not None:
                    stubs.remove()

    @contextlib.contextmanager
    def _workspace(self) -> Iterator[Path]:
        try:
            tmp = Path(tempfile.mkdtemp(prefix="lamina-run-", dir=self.tmp_dir))
        except OSError as exc:
            raise FilesystemError(f"cannot create a sandbox directory: {exc}") from exc
        try:
            yield tmp
        finally:
            remove_tree(tmp)

    def _payload(
        self, spec: RunSpec, user: ResolvedUser, tmp: Path, *, userns: bool, id_map: IdMap | None
    ) -> dict[str, Any]:
        newroot = tmp / "root"
        newroot.mkdir(mode=0o755)
        overlay = spec.upper is not None
        stubs = _Stubs(tmp / "stubs" if overlay else spec.rootfs)
        if overlay:
            stubs.base.mkdir(mode=0o755)
        mounts: list[dict[str, Any]] = []
        wanted: list[tuple[str, bool]] = [("/proc", True), ("/dev", True), ("/sys", True)]
        files_dir = tmp / "files"
        files_dir.mkdir()
        for index, (target, content) in enumerate(sorted(spec.extra_files.items())):
            host = files_dir / f"extra-{index}"
            host.write_bytes(content)
            host.chmod(0o644)
            wanted.append((target, False))
            mounts.append({"type": "bind", "source": str(host), "target": target, "readonly": True})
        for index, mount in enumerate(spec.mounts):
            target = _abs_target(spec, mount.target)
            if isinstance(mount, TmpfsMount):
                wanted.append((target, True))
                mounts.append({"type": "tmpfs", "target": target, "size": mount.size})
                continue
            mounts.append(self._bind(mount, target, tmp / f"bind-{index}", wanted))
        try:
            for target, directory in wanted:
                if not _exists_in_view(spec.rootfs, spec.upper, target):
                    stubs.add(spec.rootfs, target, directory=directory)
            _add_placeholders(stubs, spec)
            if overlay:
                _copy_times_from_image(stubs.base, spec.rootfs)
            else:
                stubs.restore_times()
        except BaseException as exc:
            if not overlay:
                stubs.remove()
            if isinstance(exc, OSError):
                raise FilesystemError(f"cannot create mount points in the sandbox: {exc}") from exc
            raise
        mounts.sort(key=lambda m: len([p for p in str(m["target"]).split("/") if p]))
        payload = _command_payload(spec, user, "namespace")
        scratch = tmp / "scratch"  # a tmpfs upper where the build dir cannot hold one
        scratch.mkdir()
        payload.update(
            {
                "newroot": str(newroot),
                "scratch": str(scratch),
                "upper": str(spec.upper) if spec.upper else None,
                "work": str(spec.work) if spec.work else None,
                "stub_lowers": [str(stubs.base)] if overlay and stubs.created else [],
                "userns": userns,
                "host_uid": os.geteuid(),
                "host_gid": os.getegid(),
                "setgroups": not userns or id_map is not None,
                "idmap": id_map.payload() if id_map is not None else None,
                "network": spec.network,
                "hostname": spec.hostname,
                "security": spec.security,
                "mounts": mounts,
                "_stubs": None if overlay else stubs,
            }
        )
        return payload

    @staticmethod
    def _bind(
        mount: BindMount, target: str, scratch: Path, wanted: list[tuple[str, bool]]
    ) -> dict[str, Any]:
        source = mount.source.absolute()
        try:
            is_dir = source.is_dir()
            if not source.exists():
                raise FileNotFoundError(2, "No such file or directory")
        except OSError as exc:
            raise BuildStepError(
                f"bind mount source {source} for {target}: {exc.strerror or exc}"
            ) from exc
        wanted.append((target, is_dir))
        if mount.readonly:
            return {"type": "bind", "source": str(source), "target": target, "readonly": True}
        scratch.mkdir()
        if is_dir:
            return {
                "type": "overlay",
                "source": str(source),
                "scratch": str(scratch),
                "target": target,
            }
        copy = scratch / "file"
        try:
            copy_entry(source, copy)  # a device node (from a stage) is re-made, never read
        except OSError as exc:
            raise BuildStepError(f"cannot copy bind mount source {source}: {exc}") from exc
        return {"type": "bind", "source": str(copy), "target": target, "readonly": False}


#: /dev nodes ChrootRunner creates for the step when the image lacks them
_CHROOT_DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}


@contextlib.contextmanager
def _swapped_files(
    rootfs: Path, files: Mapping[str, bytes], binds: Mapping[str, bool] | None = None
) -> Iterator[None]:
    """Put ``files`` and missing /dev nodes into the rootfs for the step, then restore it.

    ``binds`` (in-image target -> is a directory) are mount points for the
    step's read-only bind mounts, made when missing and removed afterwards.
    """
    saved: list[tuple[Path, IO[bytes], os.stat_result]] = []
    stubs = _Stubs(rootfs)
    confined = ConfinedRoot(rootfs)
    stack = contextlib.ExitStack()
    try:
        for name, (major, minor) in _CHROOT_DEVICES.items():
            stubs.add_device(rootfs, f"/dev/{name}", os.makedev(major, minor))
        for target, content in sorted(files.items()):
            host = safe_join(rootfs, target, follow_final=True)
            try:
                st = os.lstat(host)
            except (FileNotFoundError, NotADirectoryError):
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                # a device node, FIFO or directory of the image: opened on the host it
                # would write to a host device (nodev holds only inside) or block
                continue
            if st is not None:
                original = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
                with host.open("rb") as fh:  # streamed: the image's file may be huge
                    shutil.copyfileobj(fh, original, 1 << 20)
                saved.append((host, original, st))
                if st.st_nlink > 1:  # replaced by a new file: its directory's times change
                    stubs._remember_parent(host.parent)
                # a new file where the image's has other names (its link group keeps it)
                confined.replace_file(
                    host, content, mode=stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid)
                )
            else:
                stubs.add(rootfs, target, directory=False)
                host.write_bytes(content)
        for target, directory in sorted((binds or {}).items()):
            host = safe_join(rootfs, target, follow_final=True)
            if not os.path.lexists(host):
                stubs.add(rootfs, target, directory=directory)
        stubs.restore_times()
        yield
    except OSError as exc:
        raise FilesystemError(f"cannot prepare the chroot's files in {rootfs}: {exc}") from exc
    finally:
        # after the step: the recorded paths are reached without following a symlink
        # (a step that replaced /etc with one must not get these writes outside the root)
        with stack:
            for host, kept, st in saved:
                with contextlib.suppress(OSError):
                    kept.seek(0)
                    confined.replace_file(
                        host,
                        kept,
                        mode=stat.S_IMODE(st.st_mode),
                        owner=(st.st_uid, st.st_gid),
                        times=(st.st_atime_ns, st.st_mtime_ns),
                    )
            stubs.remove()


def probe_mounts() -> str | None:
    """Can this process make a private mount namespace with bind mounts? ``None`` if so.

    What :class:`ChrootRunner` needs for real mounts (root with CAP_SYS_ADMIN).
    """
    tmp = tempfile.mkdtemp(prefix="lamina-probe-")
    try:
        proc = subprocess.run(
            _init_command("--probe", "mounts", tmp),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        remove_tree(Path(tmp))
    if proc.returncode == 0:
        return None
    return proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"


def _direct_unsupported(spec: RunSpec, isolation: str, *, read_only_binds: bool = False) -> None:
    refused = [
        m for m in spec.mounts if not (read_only_binds and isinstance(m, BindMount) and m.readonly)
    ]
    if refused:
        what = "a writable bind or tmpfs" if read_only_binds else "bind and tmpfs"
        raise NotSupportedError(
            f"RUN --mount with --isolation={isolation}",
            hint=f"{what} mounts need --isolation=namespace",
        )
    if spec.network == "none":
        raise NotSupportedError(
            f"RUN --network=none with --isolation={isolation}",
            hint="a private network needs --isolation=namespace",
        )
    if spec.upper is not None:
        raise NotSupportedError(
            f"an overlay upper directory with --isolation={isolation}",
            hint="changes land in the rootfs itself; snapshot it instead",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChrootRunner:
    """``chroot(2)`` into the rootfs: for root without a mount + pid namespace.

    Read-only bind mounts (secrets, the ssh agent socket, bind mounts,
    heredoc scripts) are mounted in a private mount namespace: only when
    :attr:`can_mount` (root with CAP_SYS_ADMIN, probed once with
    :func:`probe_mounts` unless ``mount_rights`` says). Without it the builder
    emulates every RUN mount in the rootfs itself (as for ``--isolation=none``)
    and passes none; a spec with mounts is then refused.

    Where the kernel allows a mount namespace the step is ``pivot_root``-ed
    into the rootfs (the host's tree detached, the root ``nodev`` under a
    ``/dev`` of its own), else plainly ``chroot``-ed;
    either way it runs without CAP_SYS_CHROOT (a chroot-in-chroot would climb
    out) and without inherited descriptors. It still shares the host's pid
    and network namespaces: for trusted Dockerfiles.

    There is no fresh ``/proc``: the image sees what its rootfs holds. The
    standard ``/dev`` nodes (null, zero, full, random, urandom, tty) that the
    image lacks are created with ``mknod`` for the step (skipped where mknod
    is refused) and removed afterwards, like ``extra_files``, which are written
    into the rootfs and restored (or removed) afterwards: the parents' times
    are restored too, all through :class:`~lamina.fs.ConfinedRoot` (the step
    may have replaced ``/etc`` or ``/dev`` with a symlink). Changes land in
    ``spec.rootfs``.
    """

    #: whether real mounts work here; ``None``: probe on first use
    mount_rights: bool | None = None
    _probed: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def name(self) -> str:
        return "chroot"

    @property
    def captures_upper(self) -> bool:
        return False

    @property
    def can_mount(self) -> bool:
        if self.mount_rights is not None:
            return self.mount_rights
        if "mounts" not in self._probed:
            self._probed["mounts"] = probe_mounts()
        return self._probed["mounts"] is None

    def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
        _direct_unsupported(spec, "chroot", read_only_binds=True)
        if spec.mounts and not self.can_mount:
            raise NotSupportedError(
                "RUN --mount with --isolation=chroot and no mount rights",
                hint="a private mount namespace cannot be made here "
                f"({self._probed.get('mounts')}); the builder emulates mounts in the rootfs "
                "instead of passing them",
            )
        user = resolve_user(spec.rootfs, spec.user)
        binds: list[dict[str, str]] = []
        targets: dict[str, bool] = {}
        for mount in spec.mounts:
            assert isinstance(mount, BindMount)
            target = _abs_target(spec, mount.target)
            source = mount.source.absolute()
            try:
                is_dir = source.is_dir()
                os.stat(source)
            except OSError as exc:
                raise BuildStepError(
                    f"bind mount source {source} for {target}: {exc.strerror or exc}"
                ) from exc
            binds.append({"source": str(source), "target": target})
            targets[target] = is_dir
        for path in spec.placeholders:
            targets.setdefault(path, True)
        with _swapped_files(spec.rootfs, spec.extra_files, targets):
            return _drive(
                {
                    **_command_payload(spec, user, "chroot"),
                    "security": spec.security,
                    "binds": binds,
                    "dev": True,  # a /dev of its own (and a nodev root) where it can mount
                },
                on_output,
                runner="chroot",
                graceful_cancel=True,
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class InPlaceRunner:
    """kaniko's mode: the command runs directly in ``/`` (the container's own root).

    ``spec.rootfs`` must be ``root`` (default ``/``). ``extra_files`` are not
    applied: the container's own ``/etc/resolv.conf`` and ``/etc/hosts`` are
    already in place (and, being mount points, on the ignore list). The
    command gets a new process group; everything it leaves behind is killed
    after the step. ``spec.mounts`` must be empty: the builder emulates RUN
    mounts in place (:mod:`lamina.builder._mounts`) before calling the runner.

    A ``root`` other than ``/`` is a test and debugging facility: the builder
    keeps the one rootfs in that directory and RUN steps are ``chroot``-ed
    into it (root only), so the whole in-place path (ignore list, stat-index
    snapshots, wipe, mount emulation) runs without giving up this machine's
    ``/``. No ``/dev`` nodes or ``/proc`` are provided there.
    """

    #: the root filesystem the build changes in place: ``/`` for real builds;
    #: tests give a directory (RUN is then chrooted into it, as root only)
    root: Path = Path("/")

    @property
    def name(self) -> str:
        return "none"

    @property
    def captures_upper(self) -> bool:
        return False

    @property
    def can_mount(self) -> bool:
        return False

    def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
        _direct_unsupported(spec, "none")
        root = self.root.resolve()
        if spec.rootfs.resolve() != root:
            raise NotSupportedError(
                f"--isolation=none with a root filesystem ({spec.rootfs}) other than "
                f"the runner's root ({self.root})",
                hint="use --isolation=namespace or chroot to build in a directory",
            )
        mode = "inplace"
        if root != Path("/"):
            if os.geteuid() != 0:
                raise NotSupportedError(
                    f"--isolation=none with a root filesystem other than / ({root}) as non-root",
                    hint="a test root is entered with chroot(2), which needs root",
                )
            mode = "chroot"
        user = resolve_user(spec.rootfs, spec.user)
        return _drive(
            _command_payload(spec, user, mode),
            on_output,
            runner="none",
            graceful_cancel=True,
        )
