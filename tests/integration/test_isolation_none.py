"""``--isolation=none`` in the builder: one shared root, kaniko's wipe and ignore list.

The builder is given an :class:`InPlaceRunner` whose root is a directory, so
the in-place code path (wipe, extract, snapshot, stage copies) runs without
touching this machine's ``/``; RUN steps in place are exercised in the
executor image (``test_executor_image.py``).
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, CacheOptions, OutputOptions, build_image
from lamina.errors import NotSupportedError
from lamina.oci import Digest, Image
from lamina.registry import RegistryClient, RegistryOptions
from lamina.sandbox import InPlaceRunner
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.registry]

LOG = logging.getLogger("lamina.tests.none")

if os.geteuid() != 0:  # pragma: no cover - environment guard
    pytest.skip("extracting base images needs root", allow_module_level=True)


@pytest.fixture
def client(registry_plain: RegistryServer) -> Iterator[RegistryClient]:
    c = RegistryClient(
        RegistryOptions(insecure_registries=frozenset({registry_plain.host})),
        docker_config_dir=None,
    )
    try:
        yield c
    finally:
        c.close()


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name in ("a.txt", "b.txt", "c.txt"):
        (ctx / name).write_text(f"{name}\n")
    return ctx


@dataclass(frozen=True, slots=True)
class Built:
    digest: Digest
    diff_ids: list[Digest]
    names: list[list[str]]


def _build(
    ctx: Path, kaniko_dir: Path, client: RegistryClient, runner: InPlaceRunner | None, **kw: object
) -> Built:
    options = BuildOptions(
        dockerfile=str(ctx / "Dockerfile"),
        context=str(ctx),
        kaniko_dir=kaniko_dir,
        reproducible=True,
        **kw,  # type: ignore[arg-type]
    )
    result = build_image(
        options,
        CacheOptions(),
        OutputOptions(no_push=True),
        registry=client,
        runner=runner,
        log=LOG,
    )
    try:  # read the layers now: new blobs live in the build directory
        image = result.image
        layers = image.layers()
        return Built(
            digest=image.digest(),
            diff_ids=[layer.diff_id() for layer in layers],
            names=[_names(image, i) for i in range(len(layers))],
        )
    finally:
        result.cleanup()


def _names(image: Image, index: int) -> list[str]:
    with image.layers()[index].uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
        return [m.name.removeprefix("./") for m in tar]


def test_in_place_build_matches_a_private_rootfs_build(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    dockerfile = f"""\
FROM {busybox_image} AS base
COPY a.txt /opt/a.txt
WORKDIR /srv/app
FROM base AS second
COPY b.txt /srv/app/b.txt
FROM {busybox_image}
COPY --from=second /srv/app /app
COPY c.txt /c.txt
"""
    ctx = _context(tmp_path, dockerfile)
    private = _build(ctx, tmp_path / "private-kaniko", client, None)

    root = tmp_path / "root"
    for d in ("kaniko", "stale/dir", "opt/keep", "var/run"):
        (root / d).mkdir(parents=True)
    (root / "stale/dir/file").write_text("from an earlier build\n")
    (root / "opt/keep/file").write_text("kept by --ignore-path\n")
    (root / "var/run/pid").write_text("1\n")
    in_place = _build(
        ctx,
        root / "kaniko",
        client,
        InPlaceRunner(root=root),
        ignore_paths=("/opt/keep",),
    )
    # the same layers, byte for byte, as a build in private rootfs directories
    assert in_place.diff_ids == private.diff_ids
    assert in_place.digest == private.digest
    assert in_place.names[-2:] == [["app", "app/b.txt"], ["c.txt"]]
    # the root now holds the last stage; the wipe kept only the ignore list
    assert (root / "c.txt").read_text() == "c.txt\n"
    assert (root / "app/b.txt").is_file()
    assert (root / "bin/sh").is_symlink()
    assert not (root / "stale").exists()
    assert not (root / "opt/a.txt").exists()  # stage 0's file, gone with its stage
    assert (root / "opt/keep/file").read_text() == "kept by --ignore-path\n"
    assert (root / "var/run/pid").exists()
    assert (root / "kaniko").is_dir()
    assert not any((root / "kaniko").iterdir())


def test_in_place_run_needs_the_real_root(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN true\n")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(NotSupportedError, match="other than /"):
        _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))


def test_cleanup_empties_the_root_after_an_in_place_build(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root), cleanup=True)
    assert built.names[-1] == ["a.txt"]  # the layers were written before the wipe
    assert sorted(p.name for p in root.iterdir()) == ["kaniko"]
