"""COPY/ADD into a rootfs: destination rules, owners, modes (every join through safe_join)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

import zstandard

from lamina.builder._fetch import Fetched
from lamina.context import ContextSource, LocalContext
from lamina.errors import (
    BuildStepError,
    DockerfileError,
    FilesystemError,
    LaminaError,
    NotSupportedError,
    SourceLocation,
)
from lamina.fs import changes_for_tree, extract_archive, safe_join
from lamina.sandbox import resolve_user

__all__ = [
    "CopyRequest",
    "copy_into",
    "is_tar_archive",
    "parse_chmod",
    "resolve_chown",
    "resolve_dest",
]

_OCTAL = re.compile(r"^[0-7]+$")


def parse_chmod(value: str, location: SourceLocation | None) -> int:
    """``--chmod``: octal only (symbolic modes are not supported yet)."""
    if _OCTAL.match(value):
        mode = int(value, 8)
        if mode > 0o7777:
            raise DockerfileError(
                f"invalid chmod parameter {value!r}: more than 07777",
                hint="give an octal mode such as 0755",
                location=location,
            )
        return mode
    if re.match(r"^[ugoa]*[+=-]", value):
        raise NotSupportedError(
            f"symbolic --chmod={value}", hint="use an octal mode such as 0755", location=location
        )
    raise DockerfileError(
        f"invalid chmod parameter {value!r}",
        hint="give an octal mode such as 0755",
        location=location,
    )


def resolve_chown(rootfs: Path, value: str, location: SourceLocation | None) -> tuple[int, int]:
    """``--chown=user[:group]`` resolved through the destination's /etc/passwd and /etc/group.

    A numeric user alone gives gid = uid; a named user alone its primary group.
    """
    user, sep, group = value.partition(":")
    if not user:
        raise DockerfileError(
            f"invalid --chown value {value!r}",
            hint="write --chown=user[:group] or --chown=uid[:gid]",
            location=location,
        )
    if user.isdigit() and (not sep or group.isdigit()):
        uid = int(user)
        return uid, int(group) if sep else uid
    try:
        resolved = resolve_user(rootfs, value)
    except LaminaError as exc:
        raise BuildStepError(
            f"--chown={value}: {exc.message}",
            hint="the user and group must exist in the image's /etc/passwd and /etc/group",
            location=location,
        ) from exc
    return resolved.uid, resolved.gid


def resolve_dest(dest: str, workdir: str) -> tuple[str, bool]:
    """The absolute, cleaned in-image destination and whether it names a directory."""
    is_dir = dest.endswith("/") or dest in (".", "") or dest.endswith("/.")
    joined = posixpath.join(workdir or "/", dest) if not dest.startswith("/") else dest
    clean = posixpath.normpath(joined)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    return clean, is_dir


def _decompressing(raw: BinaryIO, magic: bytes) -> BinaryIO | None:
    """A decompressing reader over ``raw`` chosen by ``magic``; None for plain data."""
    if magic.startswith(b"\x1f\x8b"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if magic.startswith(b"BZh"):
        return cast(BinaryIO, bz2.BZ2File(raw, mode="rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.LZMAFile(raw, mode="rb"))
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return cast(BinaryIO, reader)
    return None


def _sniff_head(raw: BinaryIO, size: int) -> bytes:
    """The first ``size`` uncompressed bytes (plain, gzip, bzip2, xz or zstd, by magic)."""
    magic = raw.read(6)
    raw.seek(0)
    inner = _decompressing(raw, magic)
    if inner is None:
        return raw.read(size)
    with inner:
        head = b""
        while len(head) < size:
            more = inner.read(size - len(head))
            if not more:
                break
            head += more
        return head


def is_tar_archive(host: Path) -> bool:
    """True when ``host`` is a tar archive, plain or gzip/bzip2/xz/zstd-compressed (for ADD).

    Recognised by content, not name; an empty or truncated file is not an archive.
    """
    try:
        with host.open("rb") as raw:
            head = _sniff_head(raw, 512)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError):
        return False
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyRequest:
    """One COPY/ADD after expansion: resolved sources, destination and metadata options."""

    tree: LocalContext
    sources: tuple[ContextSource, ...]
    dest: str
    dest_is_dir: bool
    owner: tuple[int, int] | None
    chmod: int | None
    extract_archives: bool = False
    #: downloaded ``ADD <URL>`` files, written after ``sources``
    remote: tuple[Fetched, ...] = ()
    #: ``ADD --unpack=true``: extract downloaded archives too
    unpack_remote: bool = False


def _fs_error(action: str, path: str, exc: OSError) -> FilesystemError:
    return FilesystemError(
        f"cannot {action} {path} in the build root: {exc.strerror or exc}",
        hint="check free space and permissions of the build directory",
    )


class _Copier:
    def __init__(self, rootfs: Path, req: CopyRequest, warn: Callable[[str], None]) -> None:
        self.rootfs = rootfs
        self.req = req
        self.warn = warn
        self.written: list[PurePosixPath] = []
        self.dir_times: list[tuple[Path, int, int]] = []

    def ensure_dir(self, path: str) -> Path:
        """Create ``path`` (and parents) as directories: 0755, the --chown owner or root."""
        current = PurePosixPath("/")
        host = self.rootfs
        for part in PurePosixPath(path).parts[1:]:
            current = current / part
            host = safe_join(self.rootfs, current, follow_final=True)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                st = None
            except OSError as exc:
                raise _fs_error("inspect", str(current), exc) from exc
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            missing = [host]
            probe = host.parent
            while probe != self.rootfs and not os.path.lexists(probe):
                missing.append(probe)  # a symlink led to a path whose parents are missing
                probe = probe.parent
            try:
                if st is not None:
                    os.unlink(host)
                uid, gid = self.req.owner or (0, 0)
                for d in reversed(missing):
                    os.mkdir(d, 0o755)
                    os.chmod(d, 0o755)
                    os.lchown(d, uid, gid)
                    self.written.append(self._real(d))
            except OSError as exc:
                raise _fs_error("create directory", str(current), exc) from exc
        return host

    def _real(self, host: Path) -> PurePosixPath:
        return PurePosixPath("/", *host.relative_to(self.rootfs).parts)

    def put(self, src_host: Path, st: os.stat_result, dest: str) -> None:
        """Write one entry (file, dir, symlink) at the in-image ``dest``."""
        parent = self.ensure_dir(posixpath.dirname(dest) or "/")
        name = posixpath.basename(dest)
        if not name:
            return
        host = parent / name
        self._write(src_host, st, host, dest)

    def _write(self, src: Path, st: os.stat_result, host: Path, dest: str) -> None:
        mode = stat.S_IMODE(st.st_mode)
        if self.req.chmod is not None:
            mode = self.req.chmod
        uid, gid = self.req.owner if self.req.owner is not None else (st.st_uid, st.st_gid)
        try:
            try:
                cur = os.lstat(host)
            except FileNotFoundError:
                cur = None
            is_dir = stat.S_ISDIR(st.st_mode)
            if cur is not None and not (is_dir and stat.S_ISDIR(cur.st_mode)):
                if stat.S_ISDIR(cur.st_mode):
                    shutil.rmtree(host)
                else:
                    os.unlink(host)
            if is_dir:
                if cur is None or not stat.S_ISDIR(cur.st_mode):
                    os.mkdir(host, 0o700)
                os.chmod(host, mode)
                os.lchown(host, uid, gid)
                self.dir_times.append((host, st.st_atime_ns, st.st_mtime_ns))
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), host)
                os.lchown(host, uid, gid)
                os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            elif stat.S_ISREG(st.st_mode):
                with src.open("rb") as fin, open(host, "xb") as fout:
                    shutil.copyfileobj(fin, fout, 1024 * 1024)
                os.lchown(host, uid, gid)
                os.chmod(host, mode)
                os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                self.warn(f"skipping {src}: only files, directories and symlinks are copied")
                return
        except OSError as exc:
            raise _fs_error("write", dest, exc) from exc
        self.written.append(self._real(host))

    def finish(self) -> None:
        for host, atime, mtime in reversed(self.dir_times):
            try:
                os.utime(host, ns=(atime, mtime), follow_symlinks=False)
            except OSError as exc:
                raise _fs_error("set times of", str(host), exc) from exc


def _extract_archive(copier: _Copier, host: Path, label: str, dest_dir: str) -> None:
    copier.ensure_dir(dest_dir)
    try:
        with host.open("rb") as raw:
            extract_archive(
                copier.rootfs, dest_dir, raw, on_warning=copier.warn, name=f"ADD {label}"
            )
    except OSError as exc:
        raise _fs_error("read archive", label, exc) from exc
    # the layer holds the whole destination tree (a superset of what the archive wrote)
    copier.written.extend(c.path for c in changes_for_tree(copier.rootfs, dest_dir))


def copy_into(
    rootfs: Path, req: CopyRequest, *, warn: Callable[[str], None]
) -> list[PurePosixPath]:
    """Copy ``req`` into ``rootfs``; return every in-image path written (for the layer)."""
    copier = _Copier(rootfs, req, warn)
    for src in req.sources:
        if src.kind == "dir":
            copier.ensure_dir(req.dest)
            for entry in req.tree.walk(src):
                copier.put(entry.host, entry.st, posixpath.join(req.dest, entry.rel))
            continue
        if req.extract_archives and src.kind == "file" and is_tar_archive(src.host):
            _extract_archive(copier, src.host, src.path, req.dest)
            continue
        target = req.dest
        if req.dest_is_dir:
            target = posixpath.join(req.dest, posixpath.basename(src.path))
        try:
            st = os.lstat(src.host)
        except OSError as exc:
            raise _fs_error("read", src.path, exc) from exc
        copier.put(src.host, st, target)
    for fetched in req.remote:
        if req.unpack_remote and is_tar_archive(fetched.host):
            _extract_archive(copier, fetched.host, fetched.url, req.dest)
            continue
        target = posixpath.join(req.dest, fetched.name) if req.dest_is_dir else req.dest
        try:
            st = os.lstat(fetched.host)
        except OSError as exc:
            raise _fs_error("read the download of", fetched.url, exc) from exc
        copier.put(fetched.host, st, target)
    copier.finish()
    return copier.written
