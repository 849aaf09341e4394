"""Build one Dockerfile with lamina and with buildah, and describe both results.

Both images are written as OCI layouts whose layers are applied in memory with
``tarfile`` (OCI whiteout rules; nothing of lamina's) into a flat ``{path: Entry}``
map; the image configs are read
from the layouts (lamina) and from ``buildah inspect`` (buildah, docker format, so
that ``Healthcheck``/``OnBuild``/``Shell`` survive for the comparison).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BuildResult",
    "Buildah",
    "Entry",
    "build_lamina",
    "diff_configs",
    "diff_trees",
    "history_problems",
    "read_layout_config",
    "unpack_tree",
    "unpack_with_umoci",
    "walk_tree",
]

REPO = Path(__file__).resolve().parents[2]


BUILDAH_MEMFD_RACE = "sealing memfd copy: Device or resource busy"


class ParityHarnessError(RuntimeError):
    """A build or an unpack failed."""


def _run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, check=False, env=dict(env) if env else None
    )
    if proc.returncode != 0:
        raise ParityHarnessError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout


@dataclass(frozen=True, slots=True)
class BuildResult:
    """An OCI layout holding the image under ``tag``, plus its config document."""

    layout: Path
    tag: str
    config: dict[str, Any]


def read_layout_config(layout: Path, tag: str) -> dict[str, Any]:
    """The image config JSON of ``tag`` in an OCI layout."""
    blobs = layout / "blobs"

    def blob(digest: str) -> dict[str, Any]:
        algo, hexd = digest.split(":", 1)
        doc: dict[str, Any] = json.loads((blobs / algo / hexd).read_bytes())
        return doc

    index = json.loads((layout / "index.json").read_bytes())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = blob(desc["digest"])
            if "manifests" in manifest:  # a nested index: take its first manifest
                manifest = blob(manifest["manifests"][0]["digest"])
            return blob(manifest["config"]["digest"])
    raise ParityHarnessError(f"tag {tag!r} not found in {layout}/index.json")


def build_lamina(
    context: Path,
    out: Path,
    tag: str,
    *,
    registry: str,
    build_args: Mapping[str, str],
    target: str | None,
    work: Path,
    extra_args: Sequence[str] = (),
) -> BuildResult:
    """``extra_args``: flags both tools take alike (e.g. ``--secret id=x,src=FILE``)."""
    cmd = [
        sys.executable,
        "-m",
        "lamina",
        "build",
        "--context",
        str(context),
        "--dockerfile",
        str(context / "Dockerfile"),
        "--no-push",
        "--oci-layout-path",
        str(out),
        "--destination",
        f"example.com/parity:{tag}",
        "--insecure-registry",
        registry,
        "--kaniko-dir",
        str(work),
        "--log-format",
        "text",
        "--verbosity",
        "warn",
    ]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if target is not None:
        cmd += ["--target", target]
    cmd += extra_args
    _run(cmd)
    return BuildResult(out, tag, read_layout_config(out, tag))


@dataclass(slots=True)
class Buildah:
    """``buildah`` with a private vfs storage root (shared by the whole session)."""

    root: Path
    runroot: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}

    def _global(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
        ]

    def run(self, *args: str) -> str:
        return _run([*self._global(), *args], env=self.env)

    def _bud(self, *args: str) -> None:
        """``buildah bud``, retried when buildah's own re-exec trips over a known race.

        buildah 1.28 copies itself into a sealed memfd before running a chroot RUN;
        under load the seal sometimes fails with EBUSY ("sealing memfd copy: Device
        or resource busy") and the step exits 1 before the command ran. That is the
        peer's flake, not a build result, so the same build is tried again (at most
        three times); any other failure is reported at once.
        """
        for attempt in range(3):
            try:
                self.run(*args)
                return
            except ParityHarnessError as exc:
                if BUILDAH_MEMFD_RACE not in str(exc) or attempt == 2:
                    raise
                subprocess.run([*self._global(), "rm", "--all"], capture_output=True, check=False)

    def build(
        self,
        context: Path,
        out: Path,
        tag: str,
        *,
        build_args: Mapping[str, str],
        target: str | None,
        extra_args: Sequence[str] = (),
    ) -> BuildResult:
        name = f"localhost/parity-{tag}"
        cmd = [
            "bud",
            "--isolation=chroot",
            "--tls-verify=false",
            "--layers=false",
            "--format",
            "docker",
            "--quiet",
            "-f",
            str(context / "Dockerfile"),
            "-t",
            name,
        ]
        for key, value in build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        if target is not None:
            cmd += ["--target", target]
        cmd += extra_args
        self._bud(*cmd, str(context))
        try:
            self.run("push", "--quiet", "--tls-verify=false", name, f"oci:{out}:{tag}")
            inspect = json.loads(self.run("inspect", "--type", "image", name))
        finally:
            self.run("rmi", "--force", name)
        config: dict[str, Any] = inspect["Docker"]
        return BuildResult(out, tag, config)

    def cleanup(self) -> None:
        try:
            self.run("rm", "--all")
            self.run("rmi", "--all", "--force")
        except ParityHarnessError:
            pass


# ------------------------------------------------------------------------------ trees


@dataclass(frozen=True, slots=True)
class Entry:
    """What the comparison looks at for one path (timestamps are ignored)."""

    kind: str  # file, dir, symlink, char, block, fifo, socket
    mode: str  # permission bits incl. setuid/setgid/sticky, octal
    uid: int
    gid: int
    size: int | None  # regular files only
    sha256: str | None  # regular files only
    target: str | None  # symlink target; device numbers for char/block
    hardlinks: tuple[str, ...] = ()  # the other paths sharing this inode

    def describe(self) -> str:
        parts = [self.kind, self.mode, f"{self.uid}:{self.gid}"]
        if self.size is not None:
            parts.append(f"size={self.size}")
        if self.sha256 is not None:
            parts.append(f"sha256={self.sha256[:12]}")
        if self.target is not None:
            parts.append(f"-> {self.target}")
        if self.hardlinks:
            parts.append(f"links={list(self.hardlinks)}")
        return " ".join(parts)


def _kind(st_mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(st_mode):
            return name
    return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _layer_paths(layout: Path, tag: str) -> list[Path]:
    index = json.loads((layout / "index.json").read_bytes())

    def blob_path(digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return layout / "blobs" / algo / hexd

    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            manifest = json.loads(blob_path(desc["digest"]).read_bytes())
            if "manifests" in manifest:
                manifest = json.loads(blob_path(manifest["manifests"][0]["digest"]).read_bytes())
            return [blob_path(layer["digest"]) for layer in manifest["layers"]]
    raise ParityHarnessError(f"tag {tag!r} not found in {layout}/index.json")


_TAR_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def _member_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "/" + name.strip("/")


def unpack_tree(result: BuildResult) -> dict[str, Entry]:
    """Apply the image's layers in order, in memory, with OCI whiteout rules.

    Plain ``tarfile`` and a dict: independent of lamina, and much faster than
    unpacking 20,000 files to disk. Hard links share an inode number, so the
    groups are whatever the layers say they are.
    """
    # path -> (entry without hardlinks, inode)
    tree: dict[str, tuple[Entry, int]] = {}
    next_inode = iter(range(1, 1 << 62))

    def drop(path: str, *, keep_self: bool = False) -> None:
        prefix = path.rstrip("/") + "/"
        for name in [n for n in tree if n.startswith(prefix)]:
            del tree[name]
        if not keep_self:
            tree.pop(path, None)

    for blob in _layer_paths(result.layout, result.tag):
        added: dict[str, tuple[Entry, int]] = {}
        deleted: list[str] = []
        opaque: list[str] = []
        with tarfile.open(blob, "r:*") as tar:
            for info in tar:
                name = _member_path(info.name)
                if name == "/":
                    continue
                parent, _, base = name.rpartition("/")
                if base == ".wh..wh..opq":
                    opaque.append(parent or "/")
                    continue
                if base.startswith(".wh."):
                    deleted.append(f"{parent}/{base[4:]}")
                    continue
                if info.islnk():
                    target = _member_path(info.linkname)
                    linked = added.get(target) or tree.get(target)
                    if linked is None:
                        raise ParityHarnessError(f"{blob}: hard link {name} to missing {target}")
                    added[name] = linked
                    continue
                kind = _TAR_KINDS.get(info.type, f"type-{info.type!r}")
                size = digest = link = None
                if kind == "file":
                    fh = tar.extractfile(info)
                    assert fh is not None
                    sha = hashlib.sha256()
                    while chunk := fh.read(1 << 20):
                        sha.update(chunk)
                    size, digest = info.size, sha.hexdigest()
                elif kind == "symlink":
                    link = info.linkname
                elif kind in ("char", "block"):
                    link = f"{info.devmajor},{info.devminor}"
                entry = Entry(
                    kind=kind,
                    mode=f"{info.mode & 0o7777:04o}",
                    uid=info.uid,
                    gid=info.gid,
                    size=size,
                    sha256=digest,
                    target=link,
                )
                added[name] = (entry, next(next_inode))
        for path in deleted:
            drop(path)
        for path in opaque:
            drop(path, keep_self=True)
        for path, (entry, inode) in sorted(added.items()):
            old = tree.get(path)
            if old is not None and (old[0].kind != "dir" or entry.kind != "dir"):
                drop(path)  # a non-directory replaces a directory's whole subtree
            tree[path] = (entry, inode)
    groups: dict[int, list[str]] = {}
    for path, (entry, inode) in tree.items():
        if entry.kind != "dir":
            groups.setdefault(inode, []).append(path)
    out: dict[str, Entry] = {}
    for path, (entry, inode) in tree.items():
        links = tuple(sorted(p for p in groups.get(inode, ()) if p != path))
        out[path] = dataclasses.replace(entry, hardlinks=links) if links else entry
    return out


def unpack_with_umoci(result: BuildResult, dest: Path) -> Path:
    """Unpack with umoci (as root: real owners); returns the rootfs. Used to cross-check."""
    _run(["umoci", "unpack", "--image", f"{result.layout}:{result.tag}", str(dest)])
    return dest / "rootfs"


def walk_tree(root: Path) -> dict[str, Entry]:
    """Every path under ``root`` (as ``/a/b``) with its attributes."""
    raw: dict[str, tuple[os.stat_result, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            raw["/" + path.relative_to(root).as_posix()] = (path.lstat(), path)
    inodes: dict[tuple[int, int], list[str]] = {}
    for name, (st, _) in raw.items():
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(name)
    tree: dict[str, Entry] = {}
    for name, (st, path) in raw.items():
        kind = _kind(st.st_mode)
        target: str | None = None
        if kind == "symlink":
            target = os.readlink(path)
        elif kind in ("char", "block"):
            target = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
        links: tuple[str, ...] = ()
        group = inodes.get((st.st_dev, st.st_ino))
        if group is not None:
            links = tuple(sorted(p for p in group if p != name))
        tree[name] = Entry(
            kind=kind,
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == "file" else None,
            sha256=_sha256(path) if kind == "file" else None,
            target=target,
            hardlinks=links,
        )
    return tree


def diff_trees(
    lamina: Mapping[str, Entry],
    buildah: Mapping[str, Entry],
    *,
    allowed: Mapping[str, Sequence[str]],
) -> list[str]:
    """Readable differences.

    ``allowed`` maps a path (exact, or ``prefix/*``) to the Entry fields whose
    difference is accepted there (e.g. ``("mode",)``); ``("*",)`` accepts anything,
    including the path existing on one side only.
    """

    def ignored(path: str) -> tuple[str, ...]:
        fields: list[str] = []
        for pattern, names in allowed.items():
            hit = path.startswith(pattern[:-1]) if pattern.endswith("/*") else path == pattern
            if hit:
                fields += names
        return tuple(fields)

    out: list[str] = []
    for path in sorted(set(lamina) | set(buildah)):
        a, b = lamina.get(path), buildah.get(path)
        if a == b:
            continue
        skip = ignored(path)
        if "*" in skip:
            continue
        if a is None:
            assert b is not None
            out.append(f"only in buildah: {path}  [{b.describe()}]")
        elif b is None:
            out.append(f"only in lamina:  {path}  [{a.describe()}]")
        else:
            blank = {name: getattr(b, name) for name in skip}
            if dataclasses.replace(a, **blank) == b:
                continue
            out.append(f"differs: {path}\n    lamina:  {a.describe()}\n    buildah: {b.describe()}")
    return out


# ----------------------------------------------------------------------------- configs

#: the ``config`` fields compared (missing, null and empty all mean "not set")
CONFIG_FIELDS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
)
TOP_FIELDS = ("os", "architecture", "variant", "author")


def _norm(value: Any) -> Any:
    return None if value in (None, "", [], {}) else value


def config_view(doc: Mapping[str, Any], *, drop_labels: Sequence[str] = ()) -> dict[str, Any]:
    """The compared fields of an image config document, normalised.

    ``Env`` is compared as a sorted list: BuildKit replaces a re-set key in place
    while buildah 1.28 moves some re-set keys (``PATH``) to the end. The order has
    no effect on the process environment; names and values must still agree.
    """
    cfg = doc.get("config") or {}
    view: dict[str, Any] = {}
    for key in CONFIG_FIELDS:
        value = cfg.get(key)
        if key == "Labels" and value:
            value = {k: v for k, v in value.items() if k not in drop_labels}
        if key == "Env" and value:
            value = sorted(value)
        view[key] = _norm(value)
    for key in TOP_FIELDS:
        view[key] = _norm(doc.get(key))
    return view


def diff_configs(
    lamina: Mapping[str, Any], buildah: Mapping[str, Any], *, allowed: Mapping[str, str]
) -> list[str]:
    out: list[str] = []
    for key in (*CONFIG_FIELDS, *TOP_FIELDS):
        if key in allowed:
            continue
        a, b = lamina.get(key), buildah.get(key)
        if a != b:
            out.append(f"config {key}:\n    lamina:  {json.dumps(a)}\n    buildah: {json.dumps(b)}")
    return out


def history_problems(label: str, doc: Mapping[str, Any]) -> list[str]:
    """History is not compared between the tools: buildah writes unexpanded source
    lines with ``/bin/sh -c #(nop)`` and, without ``--layers``, squashes a stage into
    one layer on its last entry, while BuildKit writes ``RUN ... # buildkit`` and one
    layer per RUN/COPY/ADD (dockerfile-features.md §6.2). Each image must still be
    self-consistent: as many non-empty entries as ``rootfs.diff_ids``."""
    history = doc.get("history") or []
    layers = sum(1 for h in history if not h.get("empty_layer"))
    diff_ids = len((doc.get("rootfs") or {}).get("diff_ids") or [])
    if history and layers != diff_ids:
        return [f"{label}: {layers} non-empty history entries but {diff_ids} diff_ids"]
    return []


def copy_context(case_dir: Path, dest: Path) -> Path:
    shutil.copytree(case_dir, dest, symlinks=True)
    return dest
