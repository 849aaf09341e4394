from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from lamina.errors import ImageFormatError
from lamina.oci import Digest, Reference, mediatypes, with_media_types
from lamina.oci.docker_archive import DockerArchive, split_archive_reference, write_docker_archive
from lamina.oci.oci_layout import REF_NAME_ANNOTATION, OCILayout, split_layout_reference

from .helpers import drain, first_member, make_image


def test_layout_write_read(tmp_path: Path) -> None:
    img = make_image(tmp_path, 2)
    layout = OCILayout.create(tmp_path / "lay")
    desc = layout.write_image(img, ref_name="v1")
    assert desc.digest == img.digest()
    assert json.loads((tmp_path / "lay" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    for lyr in img.layers():
        assert layout.blob_path(lyr.digest()).stat().st_size == lyr.size()
    got = OCILayout.open(tmp_path / "lay").image("v1")
    assert got.raw_manifest() == img.raw_manifest()
    assert got.raw_config() == img.raw_config()
    assert [lyr.diff_id() for lyr in got.layers()] == list(img.config().diff_ids)
    with got.layers()[0].uncompressed() as f:
        assert first_member(f) is not None
    assert layout.image(img.digest()).digest() == img.digest()
    assert layout.image().digest() == img.digest()  # the only one


def test_layout_retag_and_multiple(tmp_path: Path) -> None:
    a = make_image(tmp_path, 1)
    b = make_image(tmp_path, 2)
    layout = OCILayout.create(tmp_path / "lay")
    layout.write_image(a, ref_name="x")
    layout.write_image(b, ref_name="y")
    layout.write_image(b, ref_name="x")  # moves x
    names = {d.annotations[REF_NAME_ANNOTATION]: d.digest for d in layout.index().manifests}
    assert names == {"x": b.digest(), "y": b.digest()}
    with pytest.raises(ImageFormatError, match="holds 2 images; say which one"):
        layout.image()
    with pytest.raises(ImageFormatError, match="has no image 'z'"):
        layout.image("z")
    with pytest.raises(ImageFormatError, match="invalid OCI layout ref name"):
        layout.write_image(a, ref_name="bad name")


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError, match="is not an OCI image layout"):
        OCILayout.open(tmp_path)
    img = make_image(tmp_path, 1)
    layout = OCILayout.create(tmp_path / "lay")
    layout.write_image(img, ref_name="v")
    blob = layout.blob_path(img.layers()[0].digest())
    blob.write_bytes(blob.read_bytes()[:-3])
    got = layout.image("v")
    with got.layers()[0].compressed() as f, pytest.raises(ImageFormatError, match="truncated"):
        drain(f)
    layout.blob_path(img.manifest().config.digest).unlink()
    with pytest.raises(ImageFormatError, match="is missing blob"):
        layout.image("v").config()


def test_split_layout_reference() -> None:
    assert split_layout_reference("oci:/tmp/x:v1") == (Path("/tmp/x"), "v1")
    assert split_layout_reference("/tmp/x") == (Path("/tmp/x"), None)
    assert split_layout_reference("dir") == (Path("dir"), None)
    assert split_layout_reference("/l:example.com/app:v1") == (Path("/l"), "example.com/app:v1")
    assert split_layout_reference("oci:/l:") == (Path("/l"), None)
    assert split_archive_reference("docker-archive:/a.tar:busybox:1") == (
        Path("/a.tar"),
        "busybox:1",
    )
    assert split_archive_reference("/a.tar") == (Path("/a.tar"), None)


def test_docker_archive_roundtrip(tmp_path: Path) -> None:
    img = with_media_types(make_image(tmp_path, 2), "docker")
    out = tmp_path / "img.tar"
    write_docker_archive(out, img, ["busybox:1", Reference.parse("localhost:5000/a/b:v2")])
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        repos = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["docker.io/library/busybox:1", "localhost:5000/a/b:v2"]
    assert manifest[0]["Config"] == f"blobs/sha256/{img.manifest().config.digest.hex}"
    assert all(n in names for n in manifest[0]["Layers"])
    assert set(repos) == {"docker.io/library/busybox", "localhost:5000/a/b"}
    archive = DockerArchive(out)
    got = archive.image("docker.io/library/busybox:1")
    assert got.raw_manifest() == img.raw_manifest()
    assert got.digest() == img.digest()
    assert archive.image().digest() == img.digest()
    with pytest.raises(ImageFormatError, match="no image tagged 'nope:1'"):
        archive.image("nope:1")
    assert not list(tmp_path.glob(".img.tar.*"))


def test_docker_archive_uncompressed_layers_like_docker_save(tmp_path: Path) -> None:
    """docker 25+ stores uncompressed layers named by diff_id."""
    from .helpers import tar_bytes

    layer = tar_bytes({"a": b"hello"})
    diff = Digest.of_bytes(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(diff)]},
        }
    ).encode()
    cd = Digest.of_bytes(config)
    out = tmp_path / "saved.tar"
    import io

    with tarfile.open(out, "w") as tar:
        for name, data in [
            (f"blobs/sha256/{cd.hex}", config),
            (f"blobs/sha256/{diff.hex}", layer),
            (
                "manifest.json",
                json.dumps(
                    [
                        {
                            "Config": f"blobs/sha256/{cd.hex}",
                            "RepoTags": ["x:1"],
                            "Layers": [f"blobs/sha256/{diff.hex}"],
                        }
                    ]
                ).encode(),
            ),
        ]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    img = DockerArchive(out).image("x:1")
    (lyr,) = img.layers()
    assert lyr.media_type() == mediatypes.DOCKER_UNCOMPRESSED_LAYER
    assert lyr.digest() == diff
    assert img.manifest().layers[0].size == len(layer)
    with lyr.uncompressed() as f:
        assert f.read() == layer


def test_docker_archive_failure_leaves_no_file(tmp_path: Path) -> None:
    img = make_image(tmp_path, 1)
    img.layers()[0].path.write_bytes(b"short")  # type: ignore[attr-defined]
    out = tmp_path / "x.tar"
    with pytest.raises(ImageFormatError):
        write_docker_archive(out, img, ["x:1"])
    assert not out.exists()
    assert not list(tmp_path.glob(".x.tar.*"))


def test_digest_files() -> None:
    from lamina.oci import (
        digest_file_text,
        image_name_tag_with_digest_text,
        image_name_with_digest_text,
    )

    d = Digest.of_bytes(b"m")
    refs = [Reference.parse("busybox"), Reference.parse("localhost:5000/a:v1")]
    assert digest_file_text(d) == str(d)
    assert image_name_with_digest_text(refs, d) == (
        f"index.docker.io/library/busybox@{d}\nlocalhost:5000/a@{d}\n"
    )
    assert image_name_tag_with_digest_text(refs, d) == (
        f"index.docker.io/library/busybox:latest@{d}\nlocalhost:5000/a:v1@{d}\n"
    )
