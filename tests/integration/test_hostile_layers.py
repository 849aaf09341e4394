"""Crafted base image layers, ADD archives and tar:// contexts built for real (CLI, real
registry, namespace and chroot isolation): nothing outside the build changes.

Each test makes a canary tree under its own ``tmp_path`` (tests/support/canary.py),
points the hostile input at it, and compares snapshots before and after.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, CacheOptions, OutputOptions, build_image
from lamina.registry import RegistryClient, RegistryOptions
from lamina.sandbox import InPlaceRunner
from tests.integration.test_remote_context import lamina_build
from tests.support.canary import assert_unchanged, make_canary, snapshot
from tests.support.images import BuiltLayout
from tests.support.registry import RegistryServer, skopeo, write_oci_layout

pytestmark = [pytest.mark.root, pytest.mark.namespaces, pytest.mark.registry]

ISOLATIONS = ("namespace", "chroot")


def _tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info, data = e if isinstance(e, tuple) else (e, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, kind: bytes, *, mode: int = 0o755, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _through_later_symlink(canary: Path) -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    """``m/``, ``m/b/`` (0777) then ``m`` -> the canary directory (which holds ``b``)."""
    return [
        _info("m", tarfile.DIRTYPE),
        _info("m/b", tarfile.DIRTYPE, mode=0o777, mtime=5),
        _info("m/b/deeper", tarfile.DIRTYPE, mode=0o777, mtime=6),
        _info("m", tarfile.SYMTYPE, mode=0o777, linkname=str(canary)),
    ]


def _devices() -> list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]:
    return [
        _info("devs", tarfile.DIRTYPE),
        _info("devs/loop0", tarfile.BLKTYPE, mode=0o660, devmajor=7, devminor=0),
        _info("devs/mem", tarfile.CHRTYPE, mode=0o640, devmajor=1, devminor=1),
    ]


def _busybox_tar(layout: BuiltLayout) -> bytes:
    blobs = layout.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / layout.manifest_digest.split(":", 1)[1]).read_bytes())
    digest = manifest["layers"][0]["digest"].split(":", 1)[1]
    return gzip.decompress((blobs / digest).read_bytes())


def _push_base(
    tmp_path: Path, registry: RegistryServer, busybox: BuiltLayout, name: str, layer: bytes
) -> tuple[str, str]:
    """Busybox plus ``layer`` pushed as ``hostile/NAME``: (reference, the layer's digest)."""
    image = write_oci_layout(tmp_path / f"layout-{name}", "v1", [_busybox_tar(busybox), layer])
    ref = f"{registry.host}/hostile/{name}:v1"
    skopeo(
        "copy",
        "--quiet",
        "--preserve-digests",
        *registry.skopeo_dest_args(),
        f"oci:{image.layout}:v1",
        f"docker://{ref}",
    )
    return ref, image.layer_digests[1]


def _build(tmp_path: Path, registry: RegistryServer, *args: str, expect: int = 0) -> str:
    proc = lamina_build(tmp_path, f"--insecure-registry={registry.host}", *args, expect=expect)
    return proc.stderr.decode()


def _layer_members(layout: Path, index: int) -> dict[str, tarfile.TarInfo]:
    top = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / top["manifests"][0]["digest"].split(":", 1)[1]).read_bytes())
    digest = manifest["layers"][index]["digest"].split(":", 1)[1]
    with tarfile.open(fileobj=io.BytesIO((blobs / digest).read_bytes()), mode="r:*") as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_base_layer_dir_metadata_through_a_later_symlink(
    tmp_path: Path, registry_plain: RegistryServer, busybox_layout: BuiltLayout, isolation: str
) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    ref, _ = _push_base(
        tmp_path, registry_plain, busybox_layout, "dirmeta", _tar(_through_later_symlink(canary))
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN ls -l /m/ > /listing || true\n")
    _build(tmp_path, registry_plain, f"--context={ctx}", f"--isolation={isolation}")
    assert_unchanged(before, canary)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_add_archive_dir_metadata_through_a_later_symlink(
    tmp_path: Path, registry_plain: RegistryServer, busybox_image: str, isolation: str
) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(_tar(_through_later_symlink(canary)))
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nADD evil.tar /dst/\nRUN true\n")
    _build(tmp_path, registry_plain, f"--context={ctx}", f"--isolation={isolation}")
    assert_unchanged(before, canary)


def test_tar_context_dir_metadata_through_a_later_symlink(
    tmp_path: Path, registry_plain: RegistryServer
) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    dockerfile = b"FROM scratch\nCOPY Dockerfile /\n"
    entries = [(_info("Dockerfile", tarfile.REGTYPE, mode=0o644), dockerfile)]
    archive = tmp_path / "ctx.tar.gz"
    archive.write_bytes(gzip.compress(_tar([*entries, *_through_later_symlink(canary)])))
    _build(tmp_path, registry_plain, f"--context=tar://{archive}")
    assert_unchanged(before, canary)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_base_layer_devices_are_inert_and_round_trip(
    tmp_path: Path, registry_plain: RegistryServer, busybox_layout: BuiltLayout, isolation: str
) -> None:
    ref, _ = _push_base(tmp_path, registry_plain, busybox_layout, "devices", _tar(_devices()))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {ref} AS devs\n"
        # a RUN finds an empty file, never the host's loop device or memory
        "RUN test ! -b /devs/loop0 && test ! -c /devs/mem && test ! -s /devs/loop0 "
        "&& echo inert > /probe\n"
        "FROM devs\n"
        "COPY --from=devs /devs /copied/\n"
    )
    _build(tmp_path, registry_plain, f"--context={ctx}", f"--isolation={isolation}")
    out = tmp_path / "out"
    base = _layer_members(out, 1)  # the base image's device layer, as it was
    assert base["devs/loop0"].isblk()
    copied = _layer_members(out, 3)
    loop, mem = copied["copied/loop0"], copied["copied/mem"]
    assert loop.isblk()
    assert (loop.devmajor, loop.devminor, loop.mode) == (7, 0, 0o660)
    assert mem.ischr()
    assert (mem.devmajor, mem.devminor, mem.mode) == (1, 1, 0o640)
    assert "probe" in _layer_members(out, 2)


def test_header_bomb_layer_is_a_short_image_error_naming_the_layer(
    tmp_path: Path, registry_plain: RegistryServer, busybox_layout: BuiltLayout
) -> None:
    bomb = tarfile.TarInfo("x")
    bomb.pax_headers = {"comment": "c" * (3 << 20)}  # 3 MiB: over the 1 MiB cap
    ref, digest = _push_base(tmp_path, registry_plain, busybox_layout, "bomb", _tar([bomb]))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nRUN true\n")
    err = _build(tmp_path, registry_plain, f"--context={ctx}", expect=4)
    assert digest in err
    assert "PAX extended header" in err
    assert len(err) < 4000


def _build_in_place(
    tmp_path: Path, registry: RegistryServer, dockerfile: str
) -> tuple[Path, list[dict[str, tarfile.TarInfo]]]:
    """``--isolation=none`` with a test root (RUN chrooted into it): the root and the
    members of every layer of the result."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    client = RegistryClient(
        RegistryOptions(insecure_registries=frozenset({registry.host})), docker_config_dir=None
    )
    try:
        result = build_image(
            BuildOptions(
                dockerfile=str(ctx / "Dockerfile"), context=str(ctx), kaniko_dir=root / "kaniko"
            ),
            CacheOptions(),
            OutputOptions(no_push=True),
            registry=client,
            runner=InPlaceRunner(root=root),
            log=logging.getLogger("lamina.tests.hostile"),
        )
        try:
            layers = []
            for layer in result.image.layers():
                with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
                    layers.append({m.name.removeprefix("./"): m for m in tar})
        finally:
            result.cleanup()
    finally:
        client.close()
    return root, layers


def test_in_place_devices_are_inert_and_round_trip(
    tmp_path: Path, registry_plain: RegistryServer, busybox_layout: BuiltLayout
) -> None:
    ref, _ = _push_base(tmp_path, registry_plain, busybox_layout, "devices-none", _tar(_devices()))
    root, layers = _build_in_place(
        tmp_path,
        registry_plain,
        f"FROM {ref} AS devs\n"
        "RUN test ! -b /devs/loop0 && test ! -s /devs/loop0 && echo inert > /probe\n"
        "FROM devs\n"
        "COPY --from=devs /devs /copied/\n",
    )
    assert stat.S_ISREG((root / "copied" / "loop0").lstat().st_mode)
    loop = layers[-1]["copied/loop0"]
    assert loop.isblk()
    assert (loop.devmajor, loop.devminor, loop.mode) == (7, 0, 0o660)
    assert "probe" in layers[-2]


def test_in_place_dir_metadata_through_a_later_symlink(
    tmp_path: Path, registry_plain: RegistryServer, busybox_layout: BuiltLayout
) -> None:
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    ref, _ = _push_base(
        tmp_path,
        registry_plain,
        busybox_layout,
        "dirmeta-none",
        _tar(_through_later_symlink(canary)),
    )
    _build_in_place(tmp_path, registry_plain, f"FROM {ref}\nRUN true\n")
    assert_unchanged(before, canary)
