"""The sandbox init: a tiny stdlib-only program run in a fresh interpreter.

It is started by :mod:`lamina.sandbox._runners` as
``python -I -S _init.py <spec-fd> <status-fd>``: it reads one JSON payload from
``spec-fd`` (the resolved user, final argv and env, mounts, ...), sets up the
isolation, runs the command with its stdout/stderr inherited (the parent reads
them from a pipe), and writes JSON-lines events to ``status-fd``:

* ``{"event": "error", "message": ..., "hint": ...}``: the sandbox could not be
  set up; the command did not run;
* ``{"event": "exec-error", "message": ...}``: the command could not be
  executed (not found, not executable);
* ``{"event": "exit", "exit_code": n, "signal": s|null}``: the command ended.

Modes:

``namespace``
    ``unshare(2)`` mount, pid, ipc, uts (and user when rootless, net for
    ``network=none``) namespaces, then fork: the child is PID 1 of the new pid
    namespace, mounts the root (overlay or bind), ``/proc``, a minimal ``/dev``,
    the bind/tmpfs mounts, ``pivot_root``s into it and runs the command as its
    own child. When the command exits, PID 1 exits and the kernel kills every
    process left in the namespace.
``chroot``
    ``chroot(2)`` into the rootfs; leftover processes are killed through the
    command's process group and by reaping orphans as a child subreaper.
``inplace``
    like ``chroot`` but in ``/`` (kaniko's mode).

This file must import nothing but the standard library: after ``chroot`` or
``pivot_root`` no further module can be imported. The parent also imports it
for :func:`resolve_in_root`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
#: BuildKit's default capability set for RUN (containerd's default OCI spec):
#: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
#: NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
SANDBOX_CAPS = frozenset((0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))
PR_SET_CHILD_SUBREAPER = 36
CAP_SYS_CHROOT = 18

#: pivot_root(2) syscall numbers; other machines fall back to MS_MOVE + chroot
_SYS_PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
    "armv7l": 218,
    "i686": 217,
}

#: host device nodes bind-mounted into the sandbox's /dev
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: the default PATH Docker gives a RUN when the image sets none
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MAX_SYMLINKS = 40


class SetupError(Exception):
    """The sandbox could not be set up (reported to the parent, command not run)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --------------------------------------------------------------------------
# path resolution inside a root (also used by the parent process)


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """Resolve the image path ``path`` inside the host directory ``root``.

    Symlinks are followed as the kernel would inside a chroot: absolute
    targets restart at ``root`` and ``..`` never climbs above it, so the result
    is always ``root`` or below it. Missing components are kept literally.
    Returns a host path.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if parts or follow_last:
            try:
                st = os.lstat(candidate)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


# --------------------------------------------------------------------------
# libc


_libc: Any = None


def _lib() -> Any:
    global _libc  # noqa: PLW0603 - a process-wide handle, loaded once
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    lib = _lib()
    lib.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    _check(
        lib.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount {fstype or 'bind'} {source or ''} on {target}",
    )


def umount2(target: str, flags: int) -> None:
    _check(_lib().umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def prctl(option: int, arg: int) -> None:
    lib = _lib()
    _check(lib.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "pivot_root: unknown syscall number on this machine")
    lib = _lib()
    _check(
        lib.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)),
        "pivot_root",
    )


# --------------------------------------------------------------------------
# status channel


class Status:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, **event: Any) -> None:
        data = (json.dumps(event) + "\n").encode()
        with contextlib.suppress(OSError):
            os.write(self.fd, data)


# --------------------------------------------------------------------------
# the command


def _decode_status(status: int) -> tuple[int, int | None]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    return os.WEXITSTATUS(status), None


def _exec_command(spec: dict[str, Any], err_w: int, *, new_pgid: bool) -> NoReturn:
    """In the forked child: drop privileges, chdir, exec. Never returns."""
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if new_pgid:
            os.setpgid(0, 0)
        if spec.get("security") == "sandbox":
            _drop_capabilities()
            if spec.get("mode") == "chroot":  # chroot-in-chroot would climb out of the rootfs
                prctl(PR_CAPBSET_DROP, CAP_SYS_CHROOT)
        if spec.get("mode") == "chroot":  # no descriptor of the host's tree (fchdir out)
            os.closerange(3, err_w)
            os.closerange(err_w + 1, 1 << 20)
        uid, gid, groups = int(spec["uid"]), int(spec["gid"]), [int(g) for g in spec["groups"]]
        if spec.get("setgroups", True):
            os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        try:
            os.chdir(spec["cwd"])
        except OSError as exc:
            message = f"chdir {spec['cwd']}: {exc.strerror or exc}"
            with contextlib.suppress(OSError):
                os.write(err_w, json.dumps({"code": 126, "message": message}).encode())
            os._exit(126)
        argv = [str(a) for a in spec["argv"]]
        env = {str(k): str(v) for k, v in spec["env"].items()}
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        code = 127 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        reason = exc.strerror or str(exc)
        message = f"exec {spec['argv'][0]}: {reason}"
        if exc.errno == errno.ENOENT and "/" not in str(spec["argv"][0]):
            message = f'exec: "{spec["argv"][0]}": executable file not found in $PATH'
        with contextlib.suppress(OSError):
            os.write(err_w, json.dumps({"code": code, "message": message}).encode())
        os._exit(code)
    except BaseException as exc:  # pragma: no cover - last resort in a forked child
        with contextlib.suppress(OSError):
            os.write(err_w, json.dumps({"code": 126, "message": str(exc)}).encode())
        os._exit(126)


def _drop_capabilities() -> None:
    """Take every capability outside :data:`SANDBOX_CAPS` out of the bounding set.

    The command (even as root) can then never hold them: exec gives uid 0 the
    bounding set, not the full set.
    """
    try:  # bytes only: after pivot_root no codec module can be imported
        fd = os.open("/proc/sys/kernel/cap_last_cap", os.O_RDONLY)
        try:
            last = int(os.read(fd, 32).strip())
        finally:
            os.close(fd)
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap not in SANDBOX_CAPS:
            prctl(PR_CAPBSET_DROP, cap)


def _start_command(spec: dict[str, Any], *, new_pgid: bool) -> tuple[int, int]:
    """Fork the command; returns its pid and the read end of its exec-error pipe."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _exec_command(spec, err_w, new_pgid=new_pgid)
    os.close(err_w)
    if new_pgid:
        # also from the parent side, so there is no window where killpg misses it
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)
    return pid, err_r


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _report_exit(status: Status, cmd_status: int, err_r: int) -> None:
    exit_code, sig = _decode_status(cmd_status)
    exec_error = _read_all(err_r)
    if exec_error:
        try:
            info = json.loads(exec_error)
            status.send(event="exec-error", message=str(info["message"]))
            exit_code = int(info["code"])
        except (ValueError, KeyError, TypeError):
            status.send(event="exec-error", message=exec_error.decode(errors="replace"))
    status.send(event="exit", exit_code=exit_code, signal=sig)


def _prepare_cwd(cwd: str) -> None:
    """Create the working directory (0755, owned by root) if it is missing."""
    path = "/"
    for part in [p for p in cwd.split("/") if p]:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SetupError(
                f"cannot create the working directory {cwd}: {exc.strerror or exc}"
            ) from exc


# --------------------------------------------------------------------------
# namespace mode


def _write_proc(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh", b"lo", 0)
        res = fcntl.ioctl(sock.fileno(), siocgifflags, req)
        flags = struct.unpack("16sh", res[:18])[1]
        fcntl.ioctl(sock.fileno(), siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _ovl(path: str) -> str:
    """A path escaped for overlayfs mount options (``:`` and ``,`` separate entries)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _mount_overlay(
    target: str, options: str, *, userns: bool, flags: int = 0, index: bool = False
) -> None:
    """Mount an overlay; in a user namespace with ``userxattr`` when the kernel has it.

    Without it, an overlay mounted in a user namespace cannot store opaque
    directory markers (``trusted.*`` xattrs), so removing a directory of a
    lower layer fails with EIO. With it, the marker is ``user.overlay.opaque``.

    ``index`` (a step's root overlay, not in a user namespace): ``index=on``
    so a copy-up keeps a lower file's hardlink group in the step's view and
    marks the copy with its origin (``lamina.fs.keep_link_groups`` reads it).
    The kernel needs file handles, so CAP_DAC_READ_SEARCH in the initial user
    namespace: in a user namespace it silently falls back to ``index=off``.
    """
    if index and not userns:
        # best effort: EINVAL (no such options), ESTALE (an upper dir used before over
        # other lower dirs: index=on records the lower root in it) and the like mount
        # without the index below
        with contextlib.suppress(OSError):
            mount("overlay", target, "overlay", flags, options + ",index=on,nfs_export=off")
            return
    if userns:
        try:
            mount("overlay", target, "overlay", flags, options + ",userxattr")
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a kernel older than 5.11
                raise
    mount("overlay", target, "overlay", flags, options)


def _statvfs_locked_flags(path: str) -> int:
    """Mount flags of ``path`` that a remount in a user namespace must keep."""
    f = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if f & st_flag:
            flags |= ms_flag
    return flags


def _mount_target_in(root: str, target: str) -> str:
    """The host path of a RUN mount's ``target`` in ``root``; never ``root`` itself."""
    resolved = resolve_in_root(root, target)
    if os.path.normpath(resolved) == os.path.normpath(root):
        raise SetupError(
            f"the RUN mount target {target} is the root directory (through a symlink)",
            "mount somewhere below the root, e.g. target=/mnt",
        )
    return resolved


def _ensure_mount_point(path: str) -> None:
    if os.path.lexists(path):
        return
    raise SetupError(f"mount point {path} is missing in the sandbox root")


def _setup_dev(root: str, *, rootless: bool) -> None:
    dev = os.path.join(root, "dev")
    _ensure_mount_point(dev)
    # nodev: a node the step makes here (``mknod /dev/sda``) cannot be opened; the bound
    # host nodes below are mounts of their own and keep working
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k")
    for name in DEVICES:
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        try:
            mount(f"/dev/{name}", target, None, MS_BIND, None)
        except OSError:
            if name == "tty":  # no /dev/tty on the host (no terminal at all): leave it out
                os.unlink(target)
                continue
            raise
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    pts_options = "newinstance,ptmxmode=0666,mode=620" + ("" if rootless else ",gid=5")
    # where devpts is refused the step gets an empty /dev/pts (no pseudo-terminals)
    with contextlib.suppress(OSError):
        mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, pts_options)
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    for name, target in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, name))


def _bind(source: str, target: str, *, readonly: bool) -> None:
    """Bind ``source`` at ``target``, ``nodev`` (a device node in a bound stage or context
    does not open), read-only if asked; the source mount's other flags are kept."""
    mount(source, target, None, MS_BIND | MS_REC, None)
    flags = MS_BIND | MS_REMOUNT | MS_NODEV | _statvfs_locked_flags(target)
    if readonly:
        flags |= MS_RDONLY
    mount(None, target, None, flags, None)


def _setup_sys(root: str, *, writable: bool) -> None:
    """``/sys``: a fresh sysfs where the kernel allows it, else the host's, bound.

    Read-only unless ``writable`` (``--security=insecure``). A user namespace
    that does not own the network namespace may not mount sysfs: the host's
    ``/sys`` is bound then (read-only); when neither works the step has none.
    """
    target = os.path.join(root, "sys")
    if not os.path.isdir(target):
        return
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if writable else MS_RDONLY)
    try:
        mount("sysfs", target, "sysfs", flags, None)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        _bind("/sys", target, readonly=not writable)


def _overlay_options(lowers: list[str], upper: str, work: str) -> str:
    return (
        f"lowerdir={':'.join(_ovl(p) for p in lowers)},upperdir={_ovl(upper)},workdir={_ovl(work)}"
    )


def _mount_root(spec: dict[str, Any]) -> str | None:
    """Mount the step's root at ``newroot``, ``nodev``; in the outer init's mount namespace.

    Devices work only from the sandbox's own ``/dev``: a device node in the
    image (a base layer's, or one a step made with ``mknod``) cannot be opened.
    With an overlay whose upper directory's filesystem refuses to be one (the
    container's own overlay root, where the kaniko directory usually is), the
    upper and work directories go to a tmpfs at ``spec["scratch"]`` instead:
    what the upper already holds is copied in, and :func:`_copy_back` copies
    the step's changes out after it (the tmpfs holds them in memory meanwhile).
    Returns the tmpfs upper used then, else ``None``.
    """
    root = str(spec["newroot"])
    rootless = bool(spec["userns"])
    if not spec.get("upper"):
        mount(spec["rootfs"], root, None, MS_BIND | MS_REC, None)
        locked = _statvfs_locked_flags(root) if rootless else 0
        mount(None, root, None, MS_BIND | MS_REMOUNT | MS_NODEV | locked, None)
        return None
    lowers = [*spec.get("stub_lowers", []), str(spec["rootfs"])]
    upper, work = str(spec["upper"]), str(spec["work"])
    try:
        _mount_overlay(
            root,
            _overlay_options(lowers, upper, work),
            userns=rootless,
            flags=MS_NODEV,
            index=True,
        )
        return None
    except OSError as exc:
        direct = exc
    scratch = spec.get("scratch")
    if not scratch or direct.errno != errno.EINVAL:  # EINVAL: this upper's filesystem refuses
        raise SetupError(
            f"overlay mount failed (upper {upper}): {direct.strerror or direct}",
            "the upper and work directories must be on the same filesystem, not on an "
            "overlay; or use --isolation=chroot",
        ) from direct
    try:
        mount("tmpfs", scratch, "tmpfs", 0, "mode=700")
        tmp_upper, tmp_work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
        os.mkdir(tmp_upper, 0o755)
        os.mkdir(tmp_work, 0o700)
        prefix = "user.overlay." if rootless else "trusted.overlay."
        _copy_tree(upper, tmp_upper, prefix)
        _copy_meta(upper, tmp_upper, os.lstat(upper), prefix)
        _mount_overlay(
            root,
            _overlay_options(lowers, tmp_upper, tmp_work),
            userns=rootless,
            flags=MS_NODEV,
            index=True,
        )
    except OSError as exc:
        raise SetupError(
            f"overlay mount failed: upper {upper}: {direct.strerror or direct}; "
            f"upper on a tmpfs: {exc.strerror or exc}",
            "put the kaniko directory (--kaniko-dir) on a volume that is not an overlay",
        ) from exc
    return tmp_upper


def _copy_back(tmp_upper: str, upper: str) -> None:
    """After the step: the tmpfs upper's content replaces the on-disk upper's."""
    for name in os.listdir(upper):
        path = os.path.join(upper, name)
        if os.path.isdir(path) and not os.path.islink(path):
            _remove_tree(path)
        else:
            os.unlink(path)
    # user.overlay.*: the one namespace every destination takes (an overlay refuses
    # trusted.overlay.* on itself); lamina reads both
    _copy_tree(tmp_upper, upper, "user.overlay.")
    _copy_meta(tmp_upper, upper, os.lstat(tmp_upper), "user.overlay.")


def _remove_tree(path: str) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:  # overlay leaves mode-000 work dirs; the caps may be missing
            with contextlib.suppress(OSError):
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.chmod(full, 0o700)
    shutil.rmtree(path)


#: overlayfs's own xattrs, in the namespaces of a mount by root and with ``userxattr``
_OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")


def _copy_tree(src: str, dst: str, overlay_prefix: str) -> None:
    """Copy the content of the upper directory ``src`` into the existing directory ``dst``.

    Owners, modes, times, xattrs, hard links, symlinks, device nodes and fifos
    are kept; sockets are left out (a layer cannot hold them). Overlay's own
    xattrs (opaque and whiteout markers) are written as ``overlay_prefix``
    names, the namespace the overlay (or reader) of ``dst`` uses. A whiteout
    device the destination refuses (an overlay refuses them) becomes an empty
    file with an ``overlay.whiteout`` xattr, the other form a whiteout takes.
    Iterative; file data streams.
    """
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, str, os.stat_result]] = []
    pending = [(src, dst)]
    while pending:
        src_dir, dst_dir = pending.pop()
        with os.scandir(src_dir) as entries:
            names = [entry.name for entry in entries]
        for name in names:
            s, d = os.path.join(src_dir, name), os.path.join(dst_dir, name)
            st = os.lstat(s)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(d, 0o700)
                pending.append((s, d))
                dirs.append((s, d, st))
                continue
            if st.st_nlink > 1:
                first = links.get((st.st_dev, st.st_ino))
                if first is not None:
                    os.link(first, d, follow_symlinks=False)
                    continue
                links[(st.st_dev, st.st_ino)] = d
            if stat.S_ISREG(mode):
                _copy_data(s, d)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
            elif stat.S_ISCHR(mode) and st.st_rdev == 0:
                try:
                    os.mknod(d, mode, 0)
                except PermissionError:
                    os.close(os.open(d, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                    os.setxattr(d, overlay_prefix + "whiteout", b"y")
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(d, mode, st.st_rdev)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(d, 0o600)
            else:
                continue
            _copy_meta(s, d, st, overlay_prefix)
    for s, d, st in reversed(dirs):  # deepest first: a child's creation moved the mtime
        _copy_meta(s, d, st, overlay_prefix)


def _copy_data(src: str, dst: str) -> None:
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            offset = 0
            while sent := os.sendfile(fout, fin, offset, 1 << 30):
                offset += sent
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_meta(src: str, dst: str, st: os.stat_result, overlay_prefix: str) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        value = os.getxattr(src, name, follow_symlinks=False)
        ours = name.startswith(_OVERLAY_PREFIXES)
        target = overlay_prefix + name.split(".overlay.", 1)[1] if ours else name
        try:
            os.setxattr(dst, target, value, follow_symlinks=False)
        except OSError:
            if ours:  # opaque and whiteout markers carry the step's deletions
                raise
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _mount_proc(root: str) -> str:
    """A fresh ``/proc`` (``"fresh"``), or the container's, bound recursively (``"bound"``).

    A user namespace may not mount a fresh proc while the container's has
    masked paths (runc's ``/proc/kcore`` ... binds): then the outer ``/proc``
    is bound with its masks, as rootless builders do. It shows the container's
    pid namespace: the step sees its processes under their outer pids.
    """
    proc = os.path.join(root, "proc")
    _ensure_mount_point(proc)
    try:
        mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        return "fresh"
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise
    mount("/proc", proc, None, MS_BIND | MS_REC, None)
    return "bound"


def _setup_root(spec: dict[str, Any]) -> tuple[str, str]:
    """In PID 1: mount /proc, /dev, /sys and the step's mounts; returns the root and the
    kind of /proc (see :func:`_mount_proc`)."""
    root = str(spec["newroot"])
    rootless = bool(spec["userns"])
    proc_kind = _mount_proc(root)
    insecure = spec.get("security") == "insecure"
    _setup_sys(root, writable=insecure)
    if insecure:
        dev = os.path.join(root, "dev")
        _ensure_mount_point(dev)
        mount("/dev", dev, None, MS_BIND | MS_REC, None)
    else:
        _setup_dev(root, rootless=rootless)
    for item in spec.get("mounts", []):
        target = _mount_target_in(root, str(item["target"]))
        _ensure_mount_point(target)
        kind = item["type"]
        if kind == "tmpfs":
            options = "mode=1777" + (f",size={int(item['size'])}" if item.get("size") else "")
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
        elif kind == "overlay":
            # the throw-away upper lives on a tmpfs private to this mount namespace:
            # it works wherever the host's temp dir is (even on overlayfs) and vanishes with it
            scratch = item["scratch"]
            mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
            upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
            os.mkdir(upper, 0o755)
            os.mkdir(work, 0o755)
            mount_info = os.stat(item["source"])
            with contextlib.suppress(OSError):  # the writable top keeps the source's owner
                os.chown(upper, mount_info.st_uid, mount_info.st_gid)
                os.chmod(upper, stat.S_IMODE(mount_info.st_mode))
            options = f"lowerdir={_ovl(item['source'])},upperdir={_ovl(upper)},workdir={_ovl(work)}"
            _mount_overlay(target, options, userns=rootless, flags=MS_NODEV)
        else:
            _bind(item["source"], target, readonly=bool(item["readonly"]))
    return root, proc_kind


def _enter_root(root: str) -> None:
    os.chdir(root)
    try:
        pivot_root(".", ".")
        umount2(".", MNT_DETACH)
    except OSError:
        # e.g. when lamina itself runs chrooted: move the mount over / instead
        mount(root, "/", None, MS_MOVE, None)
        os.chroot(".")
    os.chdir("/")


def _pid1(spec: dict[str, Any], status: Status, alive_r: int) -> NoReturn:
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # the outer init holds the write end: EOF means it died before prctl took effect
        os.set_blocking(alive_r, False)
        try:
            if os.read(alive_r, 1) == b"":
                os._exit(125)
        except BlockingIOError:
            pass
        os.close(alive_r)
        # a mount namespace of our own: pivot_root then leaves the outer init's root alone
        # (it copies a tmpfs upper back to the build's directory after the step)
        unshare(CLONE_NEWNS)
        root, proc_kind = _setup_root(spec)
        _enter_root(root)
        _prepare_cwd(spec["cwd"])
    except SetupError as exc:
        status.send(event="error", message=exc.message, hint=exc.hint)
        os._exit(125)
    except OSError as exc:
        status.send(event="error", message=f"sandbox setup failed: {exc}", hint=None)
        os._exit(125)
    if spec.get("probe"):
        status.send(event="probe", proc=proc_kind, problems=_check_environment())
        os._exit(0)
    pid, err_r = _start_command(spec, new_pgid=False)
    while True:
        try:
            got, cmd_status = os.waitpid(-1, 0)
        except ChildProcessError:  # pragma: no cover - the command is our child
            os._exit(125)
        if got == pid:
            break
    _report_exit(status, cmd_status, err_r)
    # exiting PID 1 makes the kernel kill everything left in the namespace
    os._exit(0)


def _check_environment() -> list[str]:
    """What a RUN would find broken in this sandbox (the probe's check, inside the root)."""
    problems: list[str] = []

    def check(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as exc:
            problems.append(f"{what}: {exc.strerror or exc}")

    def device(name: str) -> None:
        if not stat.S_ISCHR(os.stat(f"/dev/{name}").st_mode):
            raise OSError(errno.ENODEV, "not a character device")

    def io(path: str, flags: int, data: bytes | None) -> None:
        fd = os.open(path, flags)
        try:
            if data is None:
                os.read(fd, 1)
            else:
                os.write(fd, data)
        finally:
            os.close(fd)

    def proc() -> None:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            if b"Pid:" not in os.read(fd, 4096):
                raise OSError(errno.EIO, "no Pid line")
        finally:
            os.close(fd)

    def shm() -> None:
        path = "/dev/shm/lamina-probe"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        os.unlink(path)

    def replace_lower_dir() -> None:  # overlay's opaque directories (xattrs on the upper)
        os.unlink("/probe/dir/file")
        os.rmdir("/probe/dir")
        os.mkdir("/probe/dir")
        os.close(os.open("/probe/dir/new", os.O_CREAT | os.O_WRONLY, 0o644))

    def nodev() -> None:  # a device node made in the root must not open
        try:
            os.mknod("/probe/node", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            return  # no CAP_MKNOD here: nothing to open either
        try:
            fd = os.open("/probe/node", os.O_WRONLY)
        except OSError:
            return
        os.close(fd)
        raise OSError(errno.EPERM, "a device node in the root opens (root not nodev)")

    for name in ("null", "zero", "full", "random", "urandom"):
        check(f"/dev/{name}", lambda n=name: device(n))  # type: ignore[misc]
    check("write /dev/null", lambda: io("/dev/null", os.O_WRONLY, b"x"))
    check("read /dev/urandom", lambda: io("/dev/urandom", os.O_RDONLY, None))
    check("/proc/self/status", proc)
    check("/dev/shm", shm)
    check("replace a directory of the image", replace_lower_dir)
    check("nodev", nodev)
    return problems


def _write_id_maps(pid: int, idmap: dict[str, Any]) -> str:
    """Write the uid/gid maps of ``pid`` from outside its user namespace.

    Uses ``newuidmap``/``newgidmap`` (setuid helpers that check
    ``/etc/subuid``/``/etc/subgid``) when given, else writes the files directly
    (needs CAP_SETUID/CAP_SETGID, i.e. root). Returns an error message or "".
    """
    for kind, tool in (("uid", idmap.get("newuidmap")), ("gid", idmap.get("newgidmap"))):
        ranges = [[int(v) for v in r] for r in idmap[kind]]
        if tool:
            argv = [str(tool), str(pid), *(str(v) for r in ranges for v in r)]
            proc = subprocess.run(argv, capture_output=True, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()
                return f"{os.path.basename(str(tool))} failed: {err or proc.returncode}"
        else:
            text = "".join(f"{a} {b} {c}\n" for a, b, c in ranges)
            try:
                _write_proc(f"/proc/{pid}/{kind}_map", text)
            except OSError as exc:
                return f"cannot write {kind}_map: {exc}"
    return ""


def _unshare_with_id_maps(flags: int, idmap: dict[str, Any]) -> None:
    """unshare(2), with a helper left outside the new user namespace writing the maps."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        os.close(done_r)
        message = "parent vanished"
        try:
            if os.read(go_r, 1):
                message = _write_id_maps(os.getppid(), idmap)
        except BaseException as exc:  # report anything, never return into the caller's code
            message = str(exc)
        with contextlib.suppress(OSError):
            os.write(done_w, message.encode())
        os._exit(0)
    os.close(go_r)
    os.close(done_w)
    try:
        unshare(flags)
        os.write(go_w, b"x")
    finally:
        os.close(go_w)
        message = _read_all(done_r).decode(errors="replace")
        os.waitpid(helper, 0)
    if message:
        raise OSError(errno.EPERM, f"user namespace id mapping: {message}")


def _run_namespace(spec: dict[str, Any], status: Status) -> int:
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if spec["userns"]:
        flags |= CLONE_NEWUSER
    if spec["network"] == "none":
        flags |= CLONE_NEWNET
    idmap = spec.get("idmap")
    try:
        if spec["userns"] and idmap:
            _unshare_with_id_maps(flags, idmap)
        else:
            unshare(flags)
            if spec["userns"]:
                _write_proc("/proc/self/setgroups", "deny")
                _write_proc("/proc/self/uid_map", f"0 {int(spec['host_uid'])} 1\n")
                _write_proc("/proc/self/gid_map", f"0 {int(spec['host_gid'])} 1\n")
        if spec.get("hostname"):
            # a container's seccomp profile may refuse sethostname (Docker's and podman's
            # do without CAP_SYS_ADMIN): the step then keeps the container's name
            with contextlib.suppress(PermissionError):
                socket.sethostname(str(spec["hostname"]))
        if spec["network"] == "none":
            _loopback_up()
    except OSError as exc:
        status.send(
            event="error",
            message=f"cannot create the namespaces: {exc}",
            hint="mount and pid namespaces need root or unprivileged user namespaces; "
            "use --isolation=chroot or --isolation=none",
        )
        return 125
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        tmp_upper = _mount_root(spec)
    except SetupError as exc:
        status.send(event="error", message=exc.message, hint=exc.hint)
        return 125
    except OSError as exc:
        status.send(event="error", message=f"sandbox setup failed: {exc}", hint=None)
        return 125
    # PID 1's events come back here first: a failed copy of a tmpfs upper must
    # reach the parent as an error, not after the step's exit event
    events_r, events_w = os.pipe()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        os.close(events_r)
        _pid1(spec, Status(events_w), alive_r)
    os.close(alive_r)
    os.close(events_w)
    events = _read_all(events_r)
    _, pid1_status = os.waitpid(pid, 0)
    code, _ = _decode_status(pid1_status)
    if spec.get("probe"):
        status.send(event="upper", kind="tmpfs" if tmp_upper else "direct")
    if tmp_upper is not None and b'"event": "exit"' in events:
        try:
            _copy_back(tmp_upper, str(spec["upper"]))
        except OSError as exc:
            status.send(
                event="error",
                message=f"cannot copy the step's changes from its tmpfs upper: {exc}",
                hint="put the kaniko directory (--kaniko-dir) on a volume that is not an overlay",
            )
            return 125
    with contextlib.suppress(OSError):
        os.write(status.fd, events)
    return code


# --------------------------------------------------------------------------
# chroot and in-place modes


def _kill_descendants(proc_fd: int | None, cmd_pgid: int) -> None:
    """Kill the command's process group, then every child and orphan reparented to us."""
    if cmd_pgid > 0:
        with contextlib.suppress(OSError):
            os.killpg(cmd_pgid, signal.SIGKILL)
    me = os.getpid()
    for _ in range(1000):
        children = _children(proc_fd, me)
        for child in children:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGKILL)
        try:
            got, _ = os.waitpid(-1, 0 if children else os.WNOHANG)
        except ChildProcessError:
            if not _children(proc_fd, me):
                return
            continue
        if got == 0 and not children:
            return


def _children(proc_fd: int | None, me: int) -> list[int]:
    if proc_fd is None:
        return []
    found = []
    for name in os.listdir(proc_fd):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{name}/stat", os.O_RDONLY, dir_fd=proc_fd)
        except OSError:
            continue
        try:
            data = os.read(fd, 4096).decode(errors="replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        fields = data.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(me):
            found.append(int(name))
    return found


def _enter_chroot(rootfs: str, binds: list[dict[str, Any]], *, own_dev: bool) -> bool:
    """Make ``rootfs`` the root; True when it is a boundary (a pivot_root), False for chroot.

    Where the kernel allows it (CAP_SYS_ADMIN) the step gets a private mount
    namespace whose root *is* the rootfs (bind-mounted onto itself, the read-only
    ``binds`` on top, then ``pivot_root`` and the old root detached): nothing
    of the host's tree is left to climb back to with a chroot-in-chroot; with
    ``own_dev`` the root is also ``nodev`` under a ``/dev`` of its own. Without
    it, a plain ``chroot(2)`` (and no binds: the builder emulates mounts then);
    the step loses CAP_SYS_CHROOT either way (see :func:`_exec_command`).
    """
    try:
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        mount(rootfs, rootfs, None, MS_BIND | MS_REC, None)  # pivot_root needs a mount point
    except OSError as exc:
        if binds:
            raise SetupError(
                f"cannot make a private mount namespace for the RUN mounts: {exc.strerror or exc}",
                "with --isolation=chroot, real mounts need CAP_SYS_ADMIN; without it lamina "
                "emulates them when the mount probe says so before the step",
            ) from exc
        os.chroot(rootfs)
        return False
    if own_dev:
        # no device node of the image (or one the step makes) opens a host device: the
        # root is nodev and /dev is the sandbox's own, as in namespace mode
        mount(None, rootfs, None, MS_BIND | MS_REMOUNT | MS_NODEV, None)
        _setup_dev(rootfs, rootless=False)
    for item in binds:
        _bind(str(item["source"]), _mount_target_in(rootfs, str(item["target"])), readonly=True)
    _enter_root(rootfs)
    return True


def _run_direct(spec: dict[str, Any], status: Status) -> int:
    """chroot / in-place: run the command in a new process group and clean up after it."""
    proc_fd: int | None = None
    cmd_pgid = 0

    def cleanup_and_exit(signum: int, _frame: object) -> None:
        _kill_descendants(proc_fd, cmd_pgid)
        os._exit(128 + signum)

    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        try:
            proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            proc_fd = None
        if spec["mode"] == "chroot":
            _enter_chroot(
                str(spec["rootfs"]), list(spec.get("binds") or []), own_dev=bool(spec.get("dev"))
            )
        os.chdir("/")
        _prepare_cwd(spec["cwd"])
    except SetupError as exc:
        status.send(event="error", message=exc.message, hint=exc.hint)
        return 125
    except OSError as exc:
        status.send(
            event="error",
            message=f"sandbox setup failed: {exc}",
            hint="chroot needs root (CAP_SYS_CHROOT); use --isolation=none inside a container",
        )
        return 125
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    for sig in stops:
        signal.signal(sig, cleanup_and_exit)
    # a stop request between fork() and knowing the command's pid must wait for it
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    pid, err_r = _start_command(spec, new_pgid=True)
    cmd_pgid = pid
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    while True:
        got, cmd_status = os.waitpid(-1, 0)
        if got == pid:
            break
    _kill_descendants(proc_fd, cmd_pgid)
    _report_exit(status, cmd_status, err_r)
    return 0


# --------------------------------------------------------------------------
# probes (used by select_runner)


def _probe(kind: str, arg: str, config: str) -> int:
    if kind == "chroot":
        os.chroot("/")
        return 0
    if kind == "mounts":  # what ChrootRunner's real mounts need (the namespace dies with us)
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        mount(arg, arg, None, MS_BIND, None)
        return 0
    return _probe_namespace(arg, json.loads(config) if config else {})


def _probe_namespace(base: str, config: dict[str, Any]) -> int:
    """The namespace sandbox as a RUN gets it, checked from inside (events on stdout).

    A tiny image in ``base`` (mount points, a directory to replace) is set up
    exactly as a step's root -- overlay (or its tmpfs fallback), /proc, /dev,
    /sys, pivot_root -- and :func:`_check_environment` runs in it.
    """
    rootfs = os.path.join(base, "rootfs")
    for sub in ("proc", "dev", "sys", "probe/dir"):
        os.makedirs(os.path.join(rootfs, sub), 0o755)
    os.close(os.open(os.path.join(rootfs, "probe/dir/file"), os.O_CREAT | os.O_WRONLY, 0o644))
    for sub in ("root", "upper", "work", "scratch"):
        os.mkdir(os.path.join(base, sub), 0o755)
    spec: dict[str, Any] = {
        "mode": "namespace",
        "probe": True,
        "rootfs": rootfs,
        "newroot": os.path.join(base, "root"),
        "upper": os.path.join(base, "upper"),
        "work": os.path.join(base, "work"),
        "scratch": os.path.join(base, "scratch"),
        "userns": bool(config.get("userns")),
        "idmap": config.get("idmap"),
        "host_uid": os.geteuid(),
        "host_gid": os.getegid(),
        "network": "default",
        "hostname": "lamina",
        "security": "sandbox",
        "cwd": "/",
        "mounts": [],
    }
    return _run_namespace(spec, Status(sys.stdout.fileno()))


# --------------------------------------------------------------------------


def _read_spec(fd: int) -> dict[str, Any]:
    data = _read_all(fd)
    spec = json.loads(data)
    if not isinstance(spec, dict):
        raise ValueError("the sandbox spec is not a JSON object")
    return spec


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "--probe":
        try:
            return _probe(
                argv[2], argv[3] if len(argv) > 3 else "", argv[4] if len(argv) > 4 else ""
            )
        except OSError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
    spec_fd, status_fd = int(argv[1]), int(argv[2])
    os.set_inheritable(status_fd, False)
    status = Status(status_fd)
    spec = _read_spec(spec_fd)
    death_signal = signal.SIGKILL if spec["mode"] == "namespace" else signal.SIGTERM
    try:
        prctl(PR_SET_PDEATHSIG, death_signal)
    except OSError as exc:
        status.send(event="error", message=f"prctl failed: {exc}", hint=None)
        return 125
    if os.getppid() != int(spec["parent_pid"]):  # the parent died before prctl
        return 125
    runners: dict[str, Callable[[dict[str, Any], Status], int]] = {
        "namespace": _run_namespace,
        "chroot": _run_direct,
        "inplace": _run_direct,
    }
    return runners[spec["mode"]](spec, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
