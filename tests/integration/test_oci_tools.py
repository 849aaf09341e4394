"""The OCI layout and docker-archive sinks, checked with real tools (umoci, skopeo, buildah)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

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
    with_media_types,
)
from lamina.oci.docker_archive import DockerArchive, write_docker_archive
from lamina.oci.oci_layout import OCILayout


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def _run(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"{args} failed: {out.stderr}"
    return out.stdout


def _image(tmp: Path, compression: mediatypes.Compression = "gzip") -> Image:
    img = empty_image(Platform.parse("linux/amd64"))
    for i, files in enumerate([{"etc/hello": b"hello\n"}, {"etc/world": b"world\n" * 1000}]):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            d = tarfile.TarInfo("etc")
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            tar.addfile(d)
            for name, data in files.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = 0o644
                tar.addfile(ti, io.BytesIO(data))
        buf.seek(0)
        path = tmp / f"layer{i}"
        with path.open("wb") as f:
            stats = compress_layer(buf, f, compression=compression)
        layer = FileLayer.from_stats(
            path, stats, media_type=mediatypes.layer_media_type("oci", compression)
        )
        img = append_layers(
            img,
            Addendum(
                layer=layer,
                history=History(created="2024-01-01T00:00:00Z", created_by=f"COPY {i}"),
            ),
        )
    return img


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_oci_layout_accepted_by_umoci_and_skopeo(tmp_path: Path, compression: str) -> None:
    umoci, skopeo = _need("umoci"), _need("skopeo")
    img = _image(tmp_path, compression)  # type: ignore[arg-type]
    layout_dir = tmp_path / "layout"
    OCILayout.create(layout_dir).write_image(img, ref_name="v1")

    assert _run(umoci, "ls", "--layout", str(layout_dir)).split() == ["v1"]
    stat = _run(umoci, "stat", "--image", f"{layout_dir}:v1", "--json")
    history = json.loads(stat)["history"]
    assert [h["created_by"] for h in history] == ["COPY 0", "COPY 1"]

    info = json.loads(_run(skopeo, "inspect", f"oci:{layout_dir}:v1"))
    assert info["Digest"] == str(img.digest())
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == [str(d.digest) for d in img.manifest().layers]

    if compression != "zstd":  # umoci 0.4 cannot unpack zstd layers
        bundle = tmp_path / "bundle"
        _run(umoci, "unpack", "--rootless", "--image", f"{layout_dir}:v1", str(bundle))
        assert (bundle / "rootfs" / "etc" / "world").read_bytes() == b"world\n" * 1000


def test_docker_archive_accepted_by_skopeo_and_buildah(tmp_path: Path) -> None:
    skopeo = _need("skopeo")
    img = with_media_types(_image(tmp_path), "docker")
    archive = tmp_path / "image.tar"
    write_docker_archive(archive, img, ["busybox:1", "localhost:5000/app/x:v2"])

    info = json.loads(_run(skopeo, "inspect", f"docker-archive:{archive}"))
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == [str(d) for d in img.config().diff_ids]  # skopeo decompresses
    raw = json.loads(
        _run(skopeo, "inspect", "--config", "--raw", f"docker-archive:{archive}:busybox:1")
    )
    assert raw["rootfs"]["diff_ids"] == [str(d) for d in img.config().diff_ids]

    # round trip through skopeo: docker-archive -> OCI layout, read back by lamina
    out = tmp_path / "copied"
    _run(skopeo, "copy", f"docker-archive:{archive}", f"oci:{out}:c")
    copied = OCILayout.open(out).image("c")
    assert copied.config().diff_ids == img.config().diff_ids

    buildah = shutil.which("buildah")
    if buildah is not None:
        store = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")]
        _run(buildah, *store, "--storage-driver", "vfs", "pull", f"docker-archive:{archive}")
        images = _run(
            buildah, *store, "--storage-driver", "vfs", "images", "--format", "{{.Name}}:{{.Tag}}"
        )
        assert "docker.io/library/busybox:1" in images.split()
        assert "localhost:5000/app/x:v2" in images.split()


def test_reads_layouts_and_archives_written_by_skopeo(tmp_path: Path) -> None:
    skopeo = _need("skopeo")
    img = _image(tmp_path)
    src = tmp_path / "src"
    OCILayout.create(src).write_image(img, ref_name="s")
    # skopeo writes a docker-archive (uncompressed layers, its own naming)
    tar_path = tmp_path / "sk.tar"
    _run(skopeo, "copy", f"oci:{src}:s", f"docker-archive:{tar_path}:example/app:1")
    got = DockerArchive(tar_path).image("example/app:1")
    assert got.config().diff_ids == img.config().diff_ids
    for layer, diff_id in zip(got.layers(), img.config().diff_ids, strict=True):
        assert layer.diff_id() == diff_id
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            assert tar.next() is not None
    # and an OCI layout with docker media types
    dst = tmp_path / "dst"
    _run(skopeo, "copy", "--format", "v2s2", f"oci:{src}:s", f"oci:{dst}:d")
    again = OCILayout.open(dst).image("d")
    assert again.media_type() == mediatypes.DOCKER_MANIFEST
    assert [lyr.diff_id() for lyr in again.layers()] == list(img.config().diff_ids)


def test_docker_typed_image_in_layout(tmp_path: Path) -> None:
    skopeo = _need("skopeo")
    docker = with_media_types(_image(tmp_path), "docker")
    layout = OCILayout.create(tmp_path / "lay")
    kept = layout.write_image(docker, ref_name="kept")
    assert kept.media_type == mediatypes.DOCKER_MANIFEST
    assert kept.digest == docker.digest()
    converted = layout.write_image(docker, ref_name="oci", oci_media_types=True)
    assert converted.media_type == mediatypes.OCI_MANIFEST
    info = json.loads(_run(skopeo, "inspect", f"oci:{tmp_path / 'lay'}:oci"))
    assert info["Digest"] == str(converted.digest)
    assert layout.image("kept").digest() == docker.digest()
