"""Small image builders for the oci tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import BinaryIO

from lamina.oci import (
    Addendum,
    FileLayer,
    History,
    Image,
    Platform,
    append_layers,
    compress_layer,
    empty_image,
    mediatypes,
)


def drain(f: io.RawIOBase | BinaryIO, chunk: int = 1 << 16) -> int:
    """Read ``f`` to the end in chunks; returns the byte count."""
    total = 0
    while data := f.read(chunk):
        total += len(data)
    return total


def first_member(f: BinaryIO) -> tarfile.TarInfo | None:
    with tarfile.open(fileobj=f, mode="r|") as tar:
        return tar.next()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_layer(
    tmp: Path, files: dict[str, bytes], compression: mediatypes.Compression = "gzip"
) -> FileLayer:
    raw = tar_bytes(files)
    path = tmp / f"layer-{len(list(tmp.iterdir()))}"
    with path.open("wb") as f:
        stats = compress_layer(io.BytesIO(raw), f, compression=compression)
    return FileLayer.from_stats(
        path, stats, media_type=mediatypes.layer_media_type("oci", compression)
    )


def make_image(tmp: Path, n_layers: int = 2, compression: mediatypes.Compression = "gzip") -> Image:
    img = empty_image(Platform.parse("linux/amd64"))
    adds = [
        Addendum(
            layer=make_layer(tmp, {f"f{i}.txt": f"content {i}\n".encode()}, compression),
            history=History(created="2024-01-01T00:00:00Z", created_by=f"COPY f{i}.txt /"),
        )
        for i in range(n_layers)
    ]
    return append_layers(img, *adds)
