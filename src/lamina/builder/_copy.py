"""COPY/ADD into a rootfs: destination rules, owners, modes (every join through safe_join)."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, cast

from lamina.builder._fetch import Fetched
from lamina.context import ContextSource, IgnoreRules, LocalContext, SourceKind, has_glob
from lamina.dockerfile import parse_dockerignore
from lamina.errors import (
    BuildStepError,
    ContextError,
    DockerfileError,
    FilesystemError,
    LaminaError,
    NotSupportedError,
    SourceLocation,
)
from lamina.fs import ConfinedRoot, safe_join

if TYPE_CHECKING:
    from lamina.fs import IgnoreList

__all__ = [
    "ChmodSpec",
    "CopyRequest",
    "SymbolicMode",
    "apply_chmod",
    "copy_into",
    "is_tar_archive",
    "parse_chmod",
    "resolve_chown",
    "resolve_dest",
    "resolve_sources",
]

_OCTAL = re.compile(r"^[0-7]+$")
_CLAUSE = re.compile(r"^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_CLASS_BITS = {"u": 0o700, "g": 0o070, "o": 0o007}
_CLASS_SHIFT = {"u": 6, "g": 3, "o": 0}
_SPECIAL = {"u": 0o4000, "g": 0o2000, "o": 0o1000}


@dataclass(frozen=True, slots=True)
class SymbolicMode:
    """A symbolic ``--chmod`` (``u+x``, ``go-w``, ``a=r,u+w``, ``+x``, ``g=u``), as chmod(1).

    Each comma-separated clause names classes (``ugoa``; none means all, no
    umask, as BuildKit) and actions ``+``/``-``/``=`` with permissions
    ``rwxXst`` or a class to copy (``g=u``). ``X`` is execute only for a
    directory or a file already executable by someone (the mode as it stands
    when the action applies).
    """

    text: str
    clauses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def apply(self, mode: int, *, is_dir: bool) -> int:
        """``mode`` (permission and special bits) changed by every clause in order."""
        mode &= 0o7777
        for who, actions in self.clauses:
            classes = who.replace("a", "ugo") or "ugo"
            mask = sum(_CLASS_BITS[c] for c in set(classes))
            special = sum(_SPECIAL[c] for c in set(classes))
            for op, perms in actions:
                if perms in _CLASS_SHIFT:
                    bits = (mode >> _CLASS_SHIFT[perms]) & 0o7
                    value = (bits * 0o111) & mask
                else:
                    rwx = 0
                    if "r" in perms:
                        rwx |= 0o4
                    if "w" in perms:
                        rwx |= 0o2
                    if "x" in perms or ("X" in perms and (is_dir or mode & 0o111)):
                        rwx |= 0o1
                    value = (rwx * 0o111) & mask
                    if "s" in perms:
                        value |= special & 0o6000
                    if "t" in perms:
                        value |= special & 0o1000
                if op == "+":
                    mode |= value
                elif op == "-":
                    mode &= ~value
                else:
                    mode = (mode & ~(mask | special)) | value
        return mode


#: a parsed ``--chmod``: octal bits, or a symbolic change applied to each entry's mode
ChmodSpec = int | SymbolicMode


def apply_chmod(spec: ChmodSpec | None, mode: int, *, is_dir: bool) -> int:
    """The permission bits an entry gets: ``mode`` unchanged, replaced, or changed symbolically."""
    if spec is None:
        return stat.S_IMODE(mode)
    if isinstance(spec, SymbolicMode):
        return spec.apply(mode, is_dir=is_dir)
    return spec


def parse_chmod(value: str, location: SourceLocation | None) -> ChmodSpec:
    """``--chmod``: octal (at most 07777) or symbolic (:class:`SymbolicMode`)."""
    if _OCTAL.match(value):
        mode = int(value, 8)
        if mode > 0o7777:
            raise DockerfileError(
                f"invalid chmod parameter {value!r}: more than 07777",
                hint="give an octal mode such as 0755",
                location=location,
            )
        return mode
    clauses: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for clause in value.split(","):
        m = _CLAUSE.match(clause)
        if m is None:
            raise DockerfileError(
                f"invalid chmod parameter {value!r}",
                hint="give an octal mode such as 0755 or a symbolic one such as u=rwX,go=rX",
                location=location,
            )
        actions = tuple((a.group(1), a.group(2)) for a in _ACTION.finditer(m.group(2)))
        clauses.append((m.group(1), actions))
    return SymbolicMode(value, tuple(clauses))


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
    from lamina.sandbox import resolve_user  # only --chown by name reads the image's files

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


def resolve_sources(
    tree: LocalContext,
    sources: Sequence[str],
    *,
    parents: bool = False,
    location: SourceLocation | None = None,
) -> tuple[list[ContextSource], list[str | None]]:
    """Resolve COPY/ADD sources, each with the base its ``--exclude``/``--parents`` paths are below.

    A wildcard source's base is its literal parent directory (``src/*.go`` →
    ``src``); a literal source has none. With ``--parents`` the base is the
    ``/./`` pivot (``./a/./b/c.txt`` → ``a``, keeping ``b/c.txt``), the tree
    root without one, and ``**`` in the rest matches any number of directories.
    """
    out: list[ContextSource] = []
    bases: list[str | None] = []
    for src in sources:
        if not parents:
            found = tree.resolve(src, location=location)
            base: str | None = None
            if has_glob(src):
                parts = [p for p in src.split("/") if p not in ("", ".")]
                literal = parts[: next(i for i, p in enumerate(parts) if has_glob(p))]
                base = posixpath.normpath("/" + "/".join(literal)).lstrip("/")
            out.extend(found)
            bases.extend(base for _ in found)
            continue
        pivot, sep, rest = src.partition("/./")
        if not sep:
            pivot, rest = "", src
        pivot = posixpath.normpath("/" + pivot).lstrip("/")
        if has_glob(pivot):
            raise NotSupportedError(
                f"COPY --parents with a wildcard before the ./ pivot ({src})",
                hint="put wildcards after the /./ pivot",
                location=location,
            )
        rest = rest.lstrip("/")
        if "**" in rest:
            found = _double_star(tree, pivot, rest, location)
        else:
            joined = posixpath.join(pivot, rest) if pivot else rest
            found = tree.resolve(joined, location=location)
        out.extend(found)
        bases.extend(pivot for _ in found)
    return out, bases


def _double_star(
    tree: LocalContext, pivot: str, pattern: str, location: SourceLocation | None
) -> list[ContextSource]:
    """``COPY --parents`` sources matching a ``**`` pattern below ``pivot`` (topmost only)."""
    rules = parse_dockerignore(pattern, filename="COPY --parents").patterns
    top = tree.resolve(pivot or ".", location=location)[0]
    if not rules or top.kind != "dir":
        return []
    out: list[ContextSource] = []
    taken: list[str] = []
    for entry in tree.walk(top):
        if any(entry.rel.startswith(t + "/") for t in taken) or not rules[0].match(entry.rel):
            continue
        taken.append(entry.rel)
        mode = entry.st.st_mode
        kind: SourceKind = "other"
        if stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_ISDIR(mode):
            kind = "dir"
        elif stat.S_ISREG(mode):
            kind = "file"
        path = posixpath.join(top.path, entry.rel) if top.path else entry.rel
        out.append(ContextSource(path=path, host=entry.host, kind=kind))
    return out


def _decompressing(raw: BinaryIO, magic: bytes) -> BinaryIO | None:
    """A decompressing reader over ``raw`` chosen by ``magic``; None for plain data.

    The decompressors are imported here: only ``ADD`` of a local archive needs them.
    """
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if magic.startswith(b"BZh"):
        import bz2

        return cast(BinaryIO, bz2.BZ2File(raw, mode="rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return cast(BinaryIO, lzma.LZMAFile(raw, mode="rb"))
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

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
    import lzma
    import tarfile

    import zstandard

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
    chmod: ChmodSpec | None
    extract_archives: bool = False
    #: per source (parallel to ``sources``, or empty): the tree-relative directory that
    #: ``excludes`` and ``parents`` are relative to; None: the source itself (a literal path)
    bases: tuple[str | None, ...] = ()
    #: ``COPY --parents``: keep each source's path below its base under ``dest``
    parents: bool = False
    #: ``--exclude`` patterns (.dockerignore syntax), relative to each source
    excludes: IgnoreRules | None = None
    #: mtime (seconds) of the directories the copy creates; None: left as created
    created_dir_mtime: int | None = None
    #: downloaded ``ADD <URL>`` files, written after ``sources``
    remote: tuple[Fetched, ...] = ()
    #: ``ADD --unpack=true``: extract downloaded archives too
    unpack_remote: bool = False
    #: ``--chown`` was given: extracted archive entries get ``owner`` too (BuildKit >= 0.23)
    chown_archives: bool = False
    #: in-place builds (``--isolation=none``): in-image paths on kaniko's ignore list
    #: (the kaniko dir, mount points, ``/var/run``, VOLUMEs...) are not written, as
    #: kaniko does not copy into them ("Not adding ... because it is ignored")
    ignore: IgnoreList | None = None


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
        self.created_dirs: list[Path] = []
        #: in-image destinations left alone because they are on ``req.ignore``
        self.ignored: list[str] = []

    def _is_ignored(self, host: Path) -> bool:
        ignore = self.req.ignore
        return ignore is not None and ignore.matches(self._real(host))

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
            if any(self._is_ignored(d) for d in missing):
                return host  # nothing is written below an ignored path (see put)
            try:
                if st is not None:
                    os.unlink(host)
                    self._forget(host)
                uid, gid = self.req.owner or (0, 0)
                for d in reversed(missing):
                    os.mkdir(d, 0o755)
                    os.chmod(d, 0o755)
                    os.lchown(d, uid, gid)
                    self.created_dirs.append(d)
                    self.written.append(self._real(d))
            except OSError as exc:
                raise _fs_error("create directory", str(current), exc) from exc
        return host

    def _real(self, host: Path) -> PurePosixPath:
        return PurePosixPath("/", *host.relative_to(self.rootfs).parts)

    def put(self, src_host: Path, st: os.stat_result, dest: str) -> None:
        """Write one entry (file, dir, symlink) at the in-image ``dest``."""
        name = posixpath.basename(dest)
        if name in (".", ".."):  # parent / name would name the parent (or leave the root)
            raise FilesystemError(
                f"internal: a COPY destination ending in {name!r}: {dest}",
                hint="this is a bug in lamina",
            )
        if self.req.ignore is not None and name:
            where = safe_join(self.rootfs, posixpath.dirname(dest) or "/", follow_final=True)
            if self._is_ignored(where / name):
                self.ignored.append(str(self._real(where / name)))
                return
        parent = self.ensure_dir(posixpath.dirname(dest) or "/")
        if not name:
            return
        host = parent / name
        self._write(src_host, st, host, dest)

    def _write(self, src: Path, st: os.stat_result, host: Path, dest: str) -> None:
        mode = apply_chmod(self.req.chmod, st.st_mode, is_dir=stat.S_ISDIR(st.st_mode))
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
                self._forget(host)  # a later source replaces an earlier one (BuildKit)
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
                from lamina.fs import keep_device_record  # the extraction code, on use

                keep_device_record(src, host)  # a device node's placeholder stays one
                os.lchown(host, uid, gid)
                os.chmod(host, mode)
                os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                self.warn(f"skipping {src}: only files, directories and symlinks are copied")
                return
        except OSError as exc:
            raise _fs_error("write", dest, exc) from exc
        self.written.append(self._real(host))

    def _forget(self, host: Path) -> None:
        """``host`` was replaced: nothing written at or below it is in the result any more."""
        gone = self._real(host)

        def kept(path: PurePosixPath) -> bool:
            return path != gone and gone not in path.parents

        self.written = [p for p in self.written if kept(p)]
        self.dir_times = [t for t in self.dir_times if kept(self._real(t[0]))]
        self.created_dirs = [d for d in self.created_dirs if kept(self._real(d))]

    def finish(self) -> None:
        """Apply the deferred directory times, root-confined and following no symlink.

        A directory recorded earlier may have been replaced by a later source
        (a symlink to anywhere, say): each is reached component by component
        without following a symlink, and skipped when it is no longer there.
        """
        stamp = self.req.created_dir_mtime
        deferred: dict[Path, tuple[int, int]] = {}
        if stamp is not None:
            ns = int(stamp * 1_000_000_000)
            deferred.update((host, (ns, ns)) for host in self.created_dirs)
        for host, atime, mtime in self.dir_times:  # a later source's times win
            deferred[host] = (atime, mtime)
        try:
            ConfinedRoot(self.rootfs).set_directory_times(deferred.items())
        except OSError as exc:
            raise _fs_error("set the directory times below", self.req.dest, exc) from exc


def _extract_archive(copier: _Copier, host: Path, label: str, dest_dir: str) -> None:
    from lamina.fs import changes_for_tree, extract_archive

    dest_host = copier.ensure_dir(dest_dir)
    if copier._is_ignored(dest_host):
        copier.ignored.append(str(copier._real(dest_host)))
        return
    try:
        with host.open("rb") as raw:
            extract_archive(
                copier.rootfs,
                dest_dir,
                raw,
                on_warning=copier.warn,
                ignore=copier.req.ignore,
                name=f"ADD {label}",
                owner=copier.req.owner if copier.req.chown_archives else None,
                error=ContextError,  # a malformed or hostile archive is context content
            )
    except OSError as exc:
        raise _fs_error("read archive", label, exc) from exc
    # the layer holds the whole destination tree (a superset of what the archive wrote),
    # where it really is: a destination that is a symlink (to a directory) was followed
    real = copier._real(dest_host)
    copier.written.extend(
        c.path for c in changes_for_tree(copier.rootfs, real, ignore=copier.req.ignore)
    )


def _below(path: str, base: str) -> str:
    """``path`` relative to the tree directory ``base`` (both tree-relative, "" the root)."""
    if not base:
        return path
    return path[len(base) + 1 :] if path.startswith(base + "/") else ""


def _excluded(req: CopyRequest, rel: str) -> bool:
    return req.excludes is not None and bool(rel) and req.excludes.matches(rel)


def _copy_with_parents(copier: _Copier, src: ContextSource, kept: str, base: str) -> None:
    """``COPY --parents``: ``src`` at ``dest/kept``, each kept parent with its source metadata.

    Each kept parent is resolved in the tree by its own path (below ``base``):
    a symlinked directory along ``kept`` leads to its target inside the tree,
    never to the host directories above the resolved source.
    """
    req = copier.req
    parts = kept.split("/") if kept else []
    for i in range(1, len(parts)):  # the kept parent directories
        rel = posixpath.join(base, *parts[:i]) if base else posixpath.join(*parts[:i])
        if has_glob(rel):
            continue  # a name with glob characters: made as a plain directory below
        try:
            found = req.tree.resolve(rel)[0]
        except LaminaError:  # excluded by .dockerignore (a child re-included): plain dir
            continue
        if found.kind != "dir":
            continue
        try:
            st = os.lstat(found.host)
        except OSError as exc:
            raise _fs_error("read", rel, exc) from exc
        copier.put(found.host, st, posixpath.join(req.dest, *parts[:i]))
    target = posixpath.join(req.dest, kept) if kept else req.dest
    if src.kind == "dir":
        if kept:
            copier.put(src.host, os.lstat(src.host), target)
        for entry in req.tree.walk(src):
            if not _excluded(req, posixpath.join(kept, entry.rel) if kept else entry.rel):
                copier.put(entry.host, entry.st, posixpath.join(target, entry.rel))
        return
    try:
        st = os.lstat(src.host)
    except OSError as exc:
        raise _fs_error("read", src.path, exc) from exc
    copier.put(src.host, st, target)


def copy_into(
    rootfs: Path, req: CopyRequest, *, warn: Callable[[str], None]
) -> list[PurePosixPath]:
    """Copy ``req`` into ``rootfs``; return every in-image path written (for the layer).

    ``--exclude`` patterns are matched against paths below each directory
    source, and against a wildcard match's path below the wildcard's literal
    parent (``COPY --exclude=*.txt hom* /d/``); with ``--parents``, against
    paths below the pivot. A literal source itself is never excluded.
    """
    copier = _Copier(rootfs, req, warn)
    if req.parents:
        copier.ensure_dir(req.dest)
    for i, src in enumerate(req.sources):
        base = req.bases[i] if req.bases else None
        top = _below(src.path, base) if base is not None else ""
        if _excluded(req, top):
            continue
        if req.parents:
            _copy_with_parents(copier, src, top, base or "")
            continue
        if src.kind == "dir":
            copier.ensure_dir(req.dest)
            for entry in req.tree.walk(src):
                if not _excluded(req, entry.rel):
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
    if copier.ignored:
        copier.warn(
            f"{len(copier.ignored)} destination path(s) not written because an in-place "
            f"build leaves its ignore list alone (as kaniko does), e.g. {copier.ignored[0]}"
        )
    return copier.written
