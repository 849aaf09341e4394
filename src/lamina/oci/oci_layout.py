"""OCI image layout directories: read images from one, write images into one.

Layout: ``oci-layout`` (``{"imageLayoutVersion":"1.0.0"}``), ``index.json``
(an OCI index whose entries carry ``org.opencontainers.image.ref.name``) and
content-addressed ``blobs/<algorithm>/<hex>``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from lamina.errors import ImageFormatError
from lamina.oci import mediatypes as mt
from lamina.oci._digest import Digest, DigestingWriter
from lamina.oci._fsutil import atomic_file, copy_stream, oserror
from lamina.oci._image import BlobImage, BlobIndex, read_json_blob
from lamina.oci._json import dumps
from lamina.oci._mutate import with_media_types
from lamina.oci._platform import Platform
from lamina.oci._protocols import Image, ImageIndex, Layer
from lamina.oci._records import Descriptor, Index

__all__ = [
    "LAYOUT_VERSION",
    "REF_NAME_ANNOTATION",
    "OCILayout",
    "split_layout_reference",
]

LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
# image-layout spec: components of alphanumerics joined by -._:@+ (or --), split by /
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME_RE = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")


def split_layout_reference(text: str) -> tuple[Path, str | None]:
    """Split ``DIR[:ref]`` (what follows ``oci:``) as skopeo does: at the first ``:``.

    ``oci:/tmp/x`` → (``/tmp/x``, None); ``oci:/tmp/x:example.com/app:v1`` →
    (``/tmp/x``, ``example.com/app:v1``). An empty ref counts as none.
    """
    text = text.removeprefix("oci:")
    head, sep, tail = text.partition(":")
    return Path(head), (tail or None) if sep else None


class OCILayout:
    """One OCI image layout directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"OCILayout({str(self.path)!r})"

    # -- creation and reading ------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> OCILayout:
        """Open ``path`` as a layout, initialising it (empty index) if needed."""
        layout = cls(path)
        marker = layout.path / "oci-layout"
        try:
            exists = marker.exists()
        except OSError as exc:
            raise oserror("inspecting", marker, exc) from exc
        if exists:
            layout._check_marker()
        else:
            if layout.path.exists() and not layout.path.is_dir():
                raise ImageFormatError(
                    f"OCI layout path {layout.path} exists and is not a directory",
                    hint="give --oci-layout-path a directory (it is created if missing)",
                )
            try:
                (layout.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise oserror("creating OCI layout", layout.path, exc) from exc
            with atomic_file(marker) as f:
                f.write(dumps({"imageLayoutVersion": LAYOUT_VERSION}))
            if not (layout.path / "index.json").exists():
                layout._write_index(Index())
        return layout

    @classmethod
    def open(cls, path: Path) -> OCILayout:
        """Open an existing layout (validates the ``oci-layout`` marker)."""
        layout = cls(path)
        layout._check_marker()
        return layout

    def _check_marker(self) -> None:
        marker = self.path / "oci-layout"
        try:
            data = marker.read_bytes()
        except FileNotFoundError:
            raise ImageFormatError(
                f"{self.path} is not an OCI image layout (no oci-layout file)",
                hint="point at a directory written by lamina, skopeo, buildah or umoci",
            ) from None
        except OSError as exc:
            raise oserror("reading", marker, exc) from exc
        try:
            version = json.loads(data).get("imageLayoutVersion")
        except (ValueError, AttributeError) as exc:
            raise ImageFormatError(f"{marker} is not valid JSON: {exc}") from exc
        if version != LAYOUT_VERSION:
            raise ImageFormatError(
                f"{marker}: unsupported imageLayoutVersion {version!r}",
                hint=f"lamina reads layout version {LAYOUT_VERSION}",
            )

    def index(self) -> Index:
        path = self.path / "index.json"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise oserror("reading", path, exc) from exc
        return Index.from_json(data, str(path))

    def blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    @contextmanager
    def open_blob(self, desc: Descriptor) -> Iterator[BinaryIO]:
        """Open a blob file (callers verify; :class:`BlobImage` does)."""
        path = self.blob_path(desc.digest)
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise ImageFormatError(
                f"OCI layout {self.path} is missing blob {desc.digest}",
                hint="the layout is incomplete; re-create it",
            ) from None
        except OSError as exc:
            raise oserror("opening", path, exc) from exc
        with f:
            yield f

    def _what(self, ref: str) -> str:
        return f"oci:{self.path}:{ref}"

    def descriptor(self, ref: str | Digest | None = None) -> Descriptor:
        """The ``index.json`` entry for a ref name, a digest, or the only entry."""
        entries = self.index().manifests
        if ref is None:
            if len(entries) == 1:
                return entries[0]
            names = [e.annotations.get(REF_NAME_ANNOTATION, str(e.digest)) for e in entries]
            raise ImageFormatError(
                f"OCI layout {self.path} holds {len(entries)} images; say which one",
                hint=f"use oci:{self.path}:<ref> with one of: {', '.join(names) or '(none)'}",
            )
        want: Digest | None = None
        if isinstance(ref, Digest):
            want = ref
        elif ref.startswith(("sha256:", "sha512:")):
            want = Digest.parse(ref)
        for e in entries:
            if want is not None and e.digest == want:
                return e
            if want is None and e.annotations.get(REF_NAME_ANNOTATION) == ref:
                return e
        names = [
            e.annotations[REF_NAME_ANNOTATION]
            for e in entries
            if REF_NAME_ANNOTATION in e.annotations
        ]
        raise ImageFormatError(
            f"OCI layout {self.path} has no image {str(ref)!r}",
            hint=f"available refs: {', '.join(names) or '(none)'}",
        )

    def image(self, ref: str | Digest | None = None, *, platform: Platform | None = None) -> Image:
        """The image for ``ref``; an index entry is resolved with ``platform`` (default host)."""
        desc = self.descriptor(ref)
        what = self._what(str(ref) if ref is not None else str(desc.digest))
        if mt.is_index(desc.media_type):
            raw = read_json_blob(self.open_blob, desc, f"index {what}")
            idx = BlobIndex(raw, self.open_blob, what=what)
            return idx.image_for(platform or Platform.host())
        if not mt.is_manifest(desc.media_type):
            raise ImageFormatError(
                f"{what} has media type {desc.media_type!r}, not an image",
                hint="lamina reads OCI image manifests and indexes",
            )
        raw = read_json_blob(self.open_blob, desc, f"manifest {what}")
        return BlobImage(raw, self.open_blob, what=what)

    def image_index(self, ref: str | Digest | None = None) -> ImageIndex:
        desc = self.descriptor(ref)
        what = self._what(str(ref) if ref is not None else str(desc.digest))
        if not mt.is_index(desc.media_type):
            raise ImageFormatError(f"{what} is an image, not an index")
        raw = read_json_blob(self.open_blob, desc, f"index {what}")
        return BlobIndex(raw, self.open_blob, what=what)

    # -- writing ---------------------------------------------------------------

    def write_blob_bytes(self, data: bytes, digest: Digest | None = None) -> Digest:
        d = digest or Digest.of_bytes(data)
        if self.has_blob(d):
            return d
        with atomic_file(self.blob_path(d)) as f:
            f.write(data)
        return d

    def write_blob_stream(self, src: BinaryIO, expected: Digest, expected_size: int | None) -> None:
        """Stream ``src`` into the blob store, verifying its digest before the rename."""
        if self.has_blob(expected):
            return
        path = self.blob_path(expected)
        with atomic_file(path) as f:
            w = DigestingWriter(f, expected.algorithm)
            copy_stream(src, w)
            if w.digest() != expected or (expected_size is not None and w.size != expected_size):
                raise ImageFormatError(
                    f"blob written to {self.path} has digest {w.digest()} ({w.size} bytes) "
                    f"but {expected} ({expected_size} bytes) was expected",
                    hint="the layer source is corrupt or changed while being read",
                )

    def _link_verified(self, layer: Layer) -> bool:
        """Hard-link a layer's already verified local blob (a fetched cache hit) in place.

        Layers that offer ``verified_file()`` (duck-typed) have checked the file against
        their digest; False when there is none or it cannot be linked (other filesystem).
        """
        verified = getattr(layer, "verified_file", None)
        local = verified() if callable(verified) else None
        if not isinstance(local, Path):
            return False
        path = self.blob_path(layer.digest())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(local, path)
        except FileExistsError:
            return True
        except OSError:
            return False
        return True

    def write_image(
        self, image: Image, *, ref_name: str | None = None, oci_media_types: bool = False
    ) -> Descriptor:
        """Add ``image`` (layers, config, manifest) and an index.json entry.

        An existing entry with the same ref name is replaced. Existing blobs
        are skipped. Returns the manifest descriptor added to index.json.

        A Docker-typed image is stored as is (same digest as pushed, like
        kaniko), but umoci and skopeo only read OCI-typed entries: pass
        ``oci_media_types=True`` to convert it (which changes its digest).
        """
        if oci_media_types and mt.is_docker(image.media_type()):
            image = with_media_types(image, "oci")
        manifest = image.manifest()
        todo: dict[Digest, Layer] = {}
        for layer in image.layers():
            if not self.has_blob(layer.digest()):
                todo.setdefault(layer.digest(), layer)

        def write(layer: Layer) -> None:
            if self._link_verified(layer):
                return
            with layer.compressed() as f:
                self.write_blob_stream(f, layer.digest(), layer.size())

        if len(todo) <= 1:
            for layer in todo.values():
                write(layer)
        else:
            # blobs are independent files: fetch, hash and write them in parallel
            with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:
                for future in [pool.submit(write, layer) for layer in todo.values()]:
                    future.result()
        raw_config = image.raw_config()
        self.write_blob_bytes(raw_config, manifest.config.digest)
        raw_manifest = image.raw_manifest()
        digest = self.write_blob_bytes(raw_manifest)
        desc = Descriptor(media_type=image.media_type(), digest=digest, size=len(raw_manifest))
        cfg = image.config()
        if cfg.os and cfg.architecture:
            desc = replace(
                desc,
                platform=Platform(os=cfg.os, architecture=cfg.architecture, variant=cfg.variant),
            )
        if ref_name is not None:
            _check_ref_name(ref_name)
            desc = desc.with_annotations(**{REF_NAME_ANNOTATION: ref_name})
        self.add_descriptor(desc)
        return desc

    def add_descriptor(self, desc: Descriptor) -> None:
        """Add an entry to index.json (replacing one with the same ref name)."""
        index = self.index()
        name = desc.annotations.get(REF_NAME_ANNOTATION)
        kept = [
            e
            for e in index.manifests
            if not (name is not None and e.annotations.get(REF_NAME_ANNOTATION) == name)
            and not (name is None and e.digest == desc.digest and not e.annotations)
        ]
        self._write_index(replace(index, manifests=(*kept, desc)))

    def _write_index(self, index: Index) -> None:
        with atomic_file(self.path / "index.json") as f:
            f.write(index.to_json())


def _check_ref_name(name: str) -> None:
    if not _REF_NAME_RE.fullmatch(name):
        raise ImageFormatError(
            f"invalid OCI layout ref name {name!r}",
            hint="use a tag-like name such as 'latest' or 'v1.2'",
        )
