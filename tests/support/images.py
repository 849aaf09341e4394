"""Base images for integration tests, built locally from Debian packages.

* ``busybox``: one layer holding ``/bin/busybox`` from the ``busybox-static``
  package, its applet symlinks, a small ``/etc/passwd``/``/etc/group``;
  fixed timestamps, so its digest is the same on every run.
* ``debian``: ``debootstrap --variant=minbase bookworm`` against the mirror the
  machine's apt sources name, slimmed like the official ``-slim`` images. The
  debootstrap result is cached (``$LAMINA_TEST_CACHE``, default
  ``~/.cache/lamina-tests``) because it takes minutes.

Images are written as OCI layouts by hand (plain JSON, ``tarfile``, ``gzip``;
none of lamina's code) and pushed with ``skopeo copy`` so that what the tests
pull was made by independent tools.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.registry import RegistryServer

__all__ = [
    "EPOCH",
    "BuiltLayout",
    "build_busybox_layout",
    "build_debian_layout",
    "busybox_rootfs",
    "debian_mirror",
    "push_layout",
]

#: 2025-01-01T00:00:00Z: fixed timestamps give a reproducible busybox digest
EPOCH = 1735689600
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = Path("/bin/busybox")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
adm:x:4:
tty:x:5:
wheel:x:10:root
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""


class ImageFixtureError(RuntimeError):
    """A base image could not be built (missing package, debootstrap failure...)."""


@dataclass(frozen=True, slots=True)
class BuiltLayout:
    """An OCI layout directory holding one image under ``tag``."""

    layout: Path
    tag: str
    manifest_digest: str


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_rootfs(root: Path) -> Path:
    """Create a minimal busybox root filesystem in ``root`` (used by tests and the README)."""
    if not BUSYBOX.is_file():
        raise ImageFixtureError(f"{BUSYBOX} is missing: install the Debian package busybox-static")
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "root",
        "home",
        "var/tmp",
        "dev",
        "proc",
        "sys",
        "run",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    listing = subprocess.run(
        [str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in listing:
        if applet in ("bin/busybox", "linuxrc"):
            continue
        link = root / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var/tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


def _walk_sorted(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        if base != root:
            yield base
        for name in sorted(filenames):
            yield base / name
        # symlinks to directories appear in dirnames but are not descended into
        for name in dirnames:
            if (base / name).is_symlink():
                yield base / name


def _layer_tar(root: Path, dest: Path, *, mtime: int | None) -> None:
    """A layer tar of ``root``: sorted, numeric owners, no ``./`` entry."""
    entries = sorted(_walk_sorted(root), key=lambda p: p.relative_to(root).as_posix())
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in entries:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uname = info.gname = ""
            if mtime is not None:
                info.mtime = mtime
            if info.isreg():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)


def _write_layout(
    layout: Path, tag: str, layer_tar: Path, *, cmd: Sequence[str], created_by: str
) -> BuiltLayout:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    raw = layer_tar.read_bytes()
    diff_id = _sha(raw)
    compressed = gzip.compress(raw, compresslevel=6, mtime=0)
    layer_digest = put(compressed)
    created = "2025-01-01T00:00:00Z"
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": created, "created_by": created_by},
            {"created": created, "created_by": f"CMD {json.dumps(list(cmd))}", "empty_layer": True},
        ],
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = put(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(compressed)}],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = put(manifest_bytes)
    # a one-entry image index next to it, for tests of index resolution
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    index_bytes = json.dumps(index_doc, separators=(",", ":")).encode()
    index_digest = put(index_bytes)
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            },
            {
                "mediaType": OCI_INDEX,
                "digest": index_digest,
                "size": len(index_bytes),
                "annotations": {"org.opencontainers.image.ref.name": f"{tag}-index"},
            },
        ],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps(top))
    return BuiltLayout(layout=layout, tag=tag, manifest_digest=manifest_digest)


def build_busybox_layout(workdir: Path) -> BuiltLayout:
    root = busybox_rootfs(workdir / "busybox-rootfs")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))
    tar = workdir / "busybox-layer.tar"
    _layer_tar(root, tar, mtime=EPOCH)
    version = (
        subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "busybox-static"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "unknown"
    )
    return _write_layout(
        workdir / "busybox-oci",
        "busybox",
        tar,
        cmd=["sh"],
        created_by=f"busybox-static {version} rootfs (lamina test fixture)",
    )


def debian_mirror(suite: str = "bookworm") -> str:
    """The first enabled ``deb`` mirror serving ``suite`` in the machine's apt sources."""
    if os.environ.get("LAMINA_TEST_MIRROR"):
        return os.environ["LAMINA_TEST_MIRROR"]
    sources = Path("/etc/apt/sources.list.d")
    for f in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "\t", "#")):
                    fields[key.strip()] = value.strip()
            if (
                "deb" in fields.get("Types", "").split()
                and suite in fields.get("Suites", "").split()
                and fields.get("Enabled", "yes") != "no"
                and fields.get("URIs")
            ):
                return fields["URIs"].split()[0]
    for f in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise ImageFixtureError(
        f"no '{suite}' mirror in /etc/apt/sources.list*; set LAMINA_TEST_MIRROR"
    )


def _cache_dir() -> Path:
    d = Path(os.environ.get("LAMINA_TEST_CACHE", Path.home() / ".cache" / "lamina-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _debootstrap_tar(suite: str) -> Path:
    cached = _cache_dir() / f"debootstrap-{suite}-minbase.tar"
    if cached.is_file() and cached.stat().st_size > 0:
        return cached
    if shutil.which("debootstrap") is None:
        raise ImageFixtureError("debootstrap is missing: install the Debian package debootstrap")
    work = cached.with_suffix(".work")
    shutil.rmtree(work, ignore_errors=True)
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", suite, str(work), debian_mirror(suite)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ImageFixtureError(f"debootstrap failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    tmp = cached.with_suffix(".tmp")
    subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-cf", str(tmp), "."], check=True)
    tmp.rename(cached)
    shutil.rmtree(work, ignore_errors=True)
    return cached


def _slim(root: Path, mirror: str, suite: str) -> None:
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (root / "etc/apt/apt.conf.d/99lamina-tests").write_text(
        'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n'
        'Acquire::Languages "none";\n'
    )
    # emptied like the official -slim images, plus the runtime directories
    for sub in (
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/log",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
    ):
        target = root / sub
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")


def build_debian_layout(workdir: Path, suite: str = "bookworm") -> BuiltLayout:
    raw = _debootstrap_tar(suite)
    root = workdir / "debian-rootfs"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(raw)], check=True)
    _slim(root, debian_mirror(suite), suite)
    tar = workdir / "debian-layer.tar"
    top = sorted(p.name for p in root.iterdir())
    subprocess.run(
        [
            "tar",
            "-C",
            str(root),
            "--sort=name",
            "--numeric-owner",
            f"--mtime=@{int(raw.stat().st_mtime)}",
            "--clamp-mtime",
            "-cf",
            str(tar),
            *top,
        ],
        check=True,
    )
    shutil.rmtree(root, ignore_errors=True)
    return _write_layout(
        workdir / "debian-oci",
        f"{suite}-slim",
        tar,
        cmd=["bash"],
        created_by=f"debootstrap --variant=minbase {suite}, slimmed (lamina test fixture)",
    )


def push_layout(
    built: BuiltLayout,
    server: RegistryServer,
    repo_tag: str,
    *,
    docker_v2s2: bool = False,
    index: bool = False,
) -> str:
    """Push the layout's image (or its one-entry index) with skopeo; returns the reference."""
    src_tag = f"{built.tag}-index" if index else built.tag
    ref = f"{server.host}/{repo_tag}"
    cmd = ["skopeo", "copy", "-q", *server.skopeo_dest_args()]
    if docker_v2s2:
        cmd += ["--format", "v2s2"]
    if index:
        cmd.append("--all")
    cmd += [f"oci:{built.layout}:{src_tag}", f"docker://{ref}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageFixtureError(f"skopeo copy to {ref} failed: {proc.stderr.strip()}")
    return ref
