"""``docker save``-style tarballs (docker-archive): write one, read one.

Written archives hold ``manifest.json`` (Config, RepoTags, Layers), a legacy
``repositories`` file and the blobs as ``blobs/sha256/<hex>`` (Docker 25+
naming). Layers are stored as their compressed blobs, as go-containerregistry
does; ``docker load``, ``podman load`` and skopeo detect the compression.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from lamina.errors import ImageFormatError, LaminaError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest
from lamina.oci._fsutil import BoundedReader, atomic_file, oserror
from lamina.oci._image import MAX_JSON_BLOB, _find_layer
from lamina.oci._json import dumps
from lamina.oci._layers import BlobLayer, detect_compression
from lamina.oci._protocols import Image, Layer
from lamina.oci._records import Descriptor, ImageConfig, Manifest
from lamina.oci._reference import Reference
from lamina.oci._tarread import TarHeaderLimitError, next_member, open_file
from lamina.oci._text import shorten

__all__ = ["ArchiveEntry", "DockerArchive", "write_docker_archive"]

_UNSET_TAG = "docker.io/unset-repo/unset-image-name:latest"


def split_archive_reference(text: str) -> tuple[Path, str | None]:
    """Split ``FILE[:ref]`` (what follows ``docker-archive:``) at the first ``:``, as skopeo."""
    text = text.removeprefix("docker-archive:")
    head, sep, tail = text.partition(":")
    return Path(head), (tail or None) if sep else None


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = 0o644
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _dir_tarinfo(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = 0
    return ti


def _repo_tag(ref: Reference) -> tuple[str, str] | None:
    """(repository, tag) fully qualified as Docker normalises them, or None without a tag.

    Docker Hub names are written ``docker.io/library/x`` so that both ``docker
    load`` and ``podman load`` (which would otherwise prefix ``localhost/``)
    name the image as the user meant.
    """
    if ref.tag is None:
        return None
    repo = f"docker.io/{ref.repository}" if ref.is_docker_hub else ref.name
    return repo, ref.tag


def write_docker_archive(path: Path, image: Image, tags: Sequence[Reference | str]) -> None:
    """Write ``image`` as a ``docker save`` tarball at ``path``, with all ``tags``.

    The file is written to a temporary name and renamed at the end, so a
    failure never leaves a partial archive. Layers are streamed into the tar
    (using their known size), never held in memory.
    """
    refs = [t if isinstance(t, Reference) else Reference.parse(t) for t in tags]
    repo_tags: list[str] = []
    repositories: dict[str, dict[str, str]] = {}
    for ref in refs:
        rt = _repo_tag(ref)
        if rt is None:
            continue
        repo_tags.append(f"{rt[0]}:{rt[1]}")
    if not refs:
        repo_tags.append(_UNSET_TAG)
    raw_config = image.raw_config()
    config_digest = Digest.of_bytes(raw_config)
    layers = list(image.layers())
    layer_names = [f"blobs/sha256/{layer.digest().hex}" for layer in layers]
    top = layers[-1].digest().hex if layers else config_digest.hex
    for rt_text in repo_tags:
        repo, _, tag = rt_text.rpartition(":")
        repositories.setdefault(repo, {})[tag] = top
    config_name = f"blobs/sha256/{config_digest.hex}"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }
    ]
    with atomic_file(Path(path)) as f:
        try:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_dir_tarinfo("blobs"))
                tar.addfile(_dir_tarinfo("blobs/sha256"))
                tar.addfile(_tarinfo(config_name, len(raw_config)), _bytes(raw_config))
                written: set[str] = set()
                for layer, name in zip(layers, layer_names, strict=True):
                    if name in written:
                        continue
                    written.add(name)
                    with layer.compressed() as blob:
                        tar.addfile(_tarinfo(name, layer.size()), blob)
                data = dumps(manifest)
                tar.addfile(_tarinfo("manifest.json", len(data)), _bytes(data))
                data = dumps(repositories)
                tar.addfile(_tarinfo("repositories", len(data)), _bytes(data))
        except LaminaError:
            raise
        except OSError as exc:
            raise ImageFormatError(
                f"writing docker archive {path} failed: {exc}",
                hint="a layer blob may be shorter than its declared size, or the disk is full",
            ) from exc


def _bytes(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)


# ---------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveEntry:
    """One image listed in ``manifest.json``."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


class DockerArchive:
    """A docker-archive tarball opened for reading (members located once, read lazily)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._members: dict[str, tuple[int, int]] = {}
        try:
            with open_file(self.path) as tar:
                while (m := next_member(tar)) is not None:
                    if m.isfile():
                        self._members[_clean(m.name)] = (m.offset_data, m.size)
                    elif m.issym() or m.islnk():
                        target = m.linkname
                        if m.issym():
                            parent = _clean(m.name).rpartition("/")[0]
                            target = f"{parent}/{target}" if parent else target
                        if _clean(target) in self._members:
                            self._members[_clean(m.name)] = self._members[_clean(target)]
        except FileNotFoundError:
            raise ImageFormatError(
                f"docker archive {self.path} does not exist",
                hint="check the docker-archive: path",
            ) from None
        except (tarfile.TarError, OSError, TarHeaderLimitError) as exc:
            raise ImageFormatError(
                f"{self.path} is not a readable tar archive: {shorten(str(exc))}",
                hint="a docker-archive is the tarball written by 'docker save'",
            ) from exc
        data = self._read_small("manifest.json")
        try:
            entries = json.loads(data)
        except ValueError as exc:
            raise ImageFormatError(f"{self.path}: manifest.json is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not entries:
            raise ImageFormatError(f"{self.path}: manifest.json must be a non-empty list")
        self.entries: list[ArchiveEntry] = [self._entry(e, i) for i, e in enumerate(entries)]

    def _entry(self, e: Any, i: int) -> ArchiveEntry:
        where = f"{self.path}: manifest.json[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("Config"), str):
            raise ImageFormatError(f"{where} has no 'Config'")
        tags = e.get("RepoTags") or []
        layers = e.get("Layers") or []
        if not all(isinstance(t, str) for t in tags) or not all(isinstance(x, str) for x in layers):
            raise ImageFormatError(f"{where}: 'RepoTags' and 'Layers' must be lists of strings")
        return ArchiveEntry(config=e["Config"], repo_tags=tuple(tags), layers=tuple(layers))

    def _locate(self, name: str) -> tuple[int, int]:
        try:
            return self._members[_clean(name)]
        except KeyError:
            raise ImageFormatError(
                f"docker archive {self.path} has no member {name!r}",
                hint="the archive is incomplete or not a docker-archive",
            ) from None

    @contextmanager
    def open_member(self, name: str) -> Iterator[BinaryIO]:
        offset, size = self._locate(name)
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise oserror("opening", self.path, exc) from exc
        with f:
            yield cast(BinaryIO, BoundedReader(f, offset, size))

    def _read_small(self, name: str) -> bytes:
        _, size = self._locate(name)
        if size > MAX_JSON_BLOB:
            raise ImageFormatError(f"{self.path}: {name} is too large ({size} bytes)")
        with self.open_member(name) as f:
            return f.read()

    def image(self, tag: str | Reference | None = None) -> Image:
        """The image tagged ``tag`` (any spelling Docker accepts), or the only one."""
        if tag is None:
            if len(self.entries) != 1:
                all_tags = [t for e in self.entries for t in e.repo_tags]
                raise ImageFormatError(
                    f"docker archive {self.path} holds {len(self.entries)} images; say which one",
                    hint=f"use docker-archive:{self.path}:<tag> with one of: {', '.join(all_tags)}",
                )
            return _ArchiveImage(self, self.entries[0])
        want = tag if isinstance(tag, Reference) else Reference.parse(tag)
        for e in self.entries:
            for t in e.repo_tags:
                with contextlib.suppress(ImageFormatError):
                    if Reference.parse(t) == want:
                        return _ArchiveImage(self, e)
        raise ImageFormatError(
            f"docker archive {self.path} has no image tagged {str(tag)!r}",
            hint="available tags: "
            + (", ".join(t for e in self.entries for t in e.repo_tags) or "(none)"),
        )


def _clean(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


class _ArchiveImage:
    """An image inside a docker archive, described with Docker schema2 media types."""

    def __init__(self, archive: DockerArchive, entry: ArchiveEntry) -> None:
        self._archive = archive
        self._entry = entry
        self.what = f"docker-archive:{archive.path}"
        self._raw_config: bytes | None = None
        self._config: ImageConfig | None = None
        self._layers: list[Layer] | None = None
        self._manifest: Manifest | None = None
        self._raw_manifest: bytes | None = None

    def raw_config(self) -> bytes:
        if self._raw_config is None:
            self._raw_config = self._archive._read_small(self._entry.config)
        return self._raw_config

    def config(self) -> ImageConfig:
        if self._config is None:
            self._config = ImageConfig.from_json(self.raw_config(), f"config of {self.what}")
        return self._config

    def layers(self) -> Sequence[Layer]:
        if self._layers is None:
            diff_ids = self.config().diff_ids
            if len(diff_ids) != len(self._entry.layers):
                raise ImageFormatError(
                    f"{self.what}: manifest.json lists {len(self._entry.layers)} layers but the "
                    f"config has {len(diff_ids)} rootfs.diff_ids",
                    hint="the archive is corrupt",
                )
            out: list[Layer] = []
            for name, diff_id in zip(self._entry.layers, diff_ids, strict=True):
                out.append(self._layer(name, diff_id))
            self._layers = out
        return self._layers

    def _layer(self, name: str, diff_id: Digest) -> Layer:
        archive = self._archive
        _, size = archive._locate(name)
        with archive.open_member(name) as f:
            compression = detect_compression(f.read(4))
        what = f"layer {name} of {self.what}"
        if compression == "none":
            media_type = mt.DOCKER_UNCOMPRESSED_LAYER
            digest: Digest | None = diff_id  # an uncompressed blob is its own diff
        else:
            media_type = mt.DOCKER_LAYER if compression == "gzip" else mt.OCI_LAYER_ZSTD
            digest = None
        return BlobLayer(
            lambda: archive.open_member(name),
            media_type=media_type,
            digest=digest,
            size=size,
            diff_id=diff_id,
            what=what,
        )

    def media_type(self) -> str:
        zstd = any(layer.media_type() == mt.OCI_LAYER_ZSTD for layer in self.layers())
        return mt.OCI_MANIFEST if zstd else mt.DOCKER_MANIFEST

    def manifest(self) -> Manifest:
        if self._manifest is None:
            media_type = self.media_type()
            oci = media_type == mt.OCI_MANIFEST
            raw_config = self.raw_config()
            layers = []
            for layer in self.layers():
                lmt = layer.media_type()
                if oci:
                    lmt = mt.layer_media_type("oci", mt.layer_compression(lmt))
                layers.append(Descriptor(media_type=lmt, digest=layer.digest(), size=layer.size()))
            self._manifest = Manifest(
                media_type=media_type,
                config=Descriptor(
                    media_type=mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                    digest=Digest.of_bytes(raw_config),
                    size=len(raw_config),
                ),
                layers=tuple(layers),
            )
        return self._manifest

    def raw_manifest(self) -> bytes:
        if self._raw_manifest is None:
            self._raw_manifest = self.manifest().to_json()
        return self._raw_manifest

    def digest(self) -> Digest:
        return Digest.of_bytes(self.raw_manifest())

    def layer_by_digest(self, digest: Digest) -> Layer:
        return _find_layer(self, digest, self.what)
