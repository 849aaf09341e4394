"""Real builds: Dockerfile + context → image, checked with lamina.oci, umoci and skopeo."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.builder import (
    BuildOptions,
    BuildResult,
    CacheOptions,
    OutputOptions,
    build_and_output,
    build_image,
)
from lamina.errors import BuildStepError, ContextError, DockerfileError, NotSupportedError
from lamina.oci import Image, ImageConfig, Reference
from lamina.oci.oci_layout import OCILayout
from lamina.registry import RegistryClient
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

EXAMPLE = Path(__file__).resolve().parents[2] / "example" / "Dockerfile"
BUSYBOX = Path("/bin/busybox")
LOG = logging.getLogger("lamina.tests.build")

if os.geteuid() != 0 or not BUSYBOX.exists():  # pragma: no cover - environment guard
    pytest.skip("builds need root and /bin/busybox", allow_module_level=True)


@dataclass(frozen=True, slots=True)
class Built:
    result: BuildResult
    layout: Path
    image: Image

    @property
    def config(self) -> ImageConfig:
        return self.image.config()

    def layer_files(self, index: int) -> dict[str, tarfile.TarInfo]:
        """Members of layer ``index`` by name (without a leading ./)."""
        out: dict[str, tarfile.TarInfo] = {}
        with (
            self.image.layers()[index].uncompressed() as f,
            tarfile.open(fileobj=f, mode="r|") as tar,
        ):
            for m in tar:
                out[m.name.removeprefix("./").rstrip("/")] = m
        return out

    def read_file(self, index: int, name: str) -> bytes:
        with (
            self.image.layers()[index].uncompressed() as f,
            tarfile.open(fileobj=f, mode="r|") as tar,
        ):
            for m in tar:
                if m.name.removeprefix("./") == name:
                    data = tar.extractfile(m)
                    assert data is not None
                    return data.read()
        raise AssertionError(f"{name} not in layer {index}")


def make_context(
    root: Path, dockerfile: str, files: Mapping[str, bytes | str] | None = None
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            p.write_text(data)
        else:
            p.write_bytes(data)
    return root


def run_build(
    tmp_path: Path,
    context: Path,
    *,
    registry: RegistryClient | None = None,
    output: OutputOptions | None = None,
    **build: object,
) -> Built:
    layout = tmp_path / "out" / "oci"
    if output is None:
        output = OutputOptions(no_push=True, oci_layout_path=str(layout))
    options = BuildOptions(
        dockerfile=str(context / "Dockerfile"),
        context=str(context),
        kaniko_dir=tmp_path / "kaniko",
        **build,  # type: ignore[arg-type]
    )
    result = build_and_output(
        options, CacheOptions(), output, registry=registry, runner=None, log=LOG
    )
    image = OCILayout.open(Path(output.oci_layout_path)).image()
    assert image.digest() == result.digest
    return Built(result=result, layout=Path(output.oci_layout_path), image=image)


def skopeo_inspect_oci(layout: Path, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        ["skopeo", "inspect", *extra, f"oci:{layout}:latest"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


# ------------------------------------------------------------------ from scratch


def test_bundled_example_builds(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(EXAMPLE, ctx / "Dockerfile")
    shutil.copy(BUSYBOX, ctx / "busybox")
    tar_path = tmp_path / "out" / "image.tar"
    digest_file = tmp_path / "out" / "digest"
    output = OutputOptions(
        no_push=True,
        oci_layout_path=str(tmp_path / "out" / "oci"),
        tar_path=str(tar_path),
        digest_file=str(digest_file),
        destinations=("lamina-example:latest",),
    )
    built = run_build(tmp_path, ctx, output=output)
    cfg = built.config
    assert cfg.config.env == ("PATH=/bin",)
    assert cfg.config.cmd == ("/bin/sh", "-c", "cat /hello.txt")
    assert cfg.os == "linux"
    assert len(built.image.layers()) == 3
    assert [h.created_by for h in cfg.history] == [
        "COPY busybox /bin/busybox # buildkit",
        "RUN /bin/busybox --install -s /bin # buildkit",
        'RUN /bin/sh -c echo "hello from lamina" > /hello.txt && mkdir -p /tmp '
        "&& chmod 1777 /tmp # buildkit",
        "ENV PATH=/bin",
        'CMD ["/bin/sh" "-c" "cat /hello.txt"]',
    ]
    assert [h.empty_layer for h in cfg.history] == [False, False, False, True, True]
    # layer 0: exactly the copied file (plus its parent directory), owned by root
    files0 = built.layer_files(0)
    assert set(files0) == {"bin", "bin/busybox"}
    assert (files0["bin/busybox"].uid, files0["bin/busybox"].gid) == (0, 0)
    assert files0["bin/busybox"].size == BUSYBOX.stat().st_size
    # layer 1: applet symlinks only
    files1 = built.layer_files(1)
    assert files1["bin/sh"].issym()
    assert "bin/busybox" not in files1
    # layer 2: the RUN's changes
    assert built.read_file(2, "hello.txt") == b"hello from lamina\n"
    assert built.layer_files(2)["tmp"].mode == 0o1777
    # outputs
    assert digest_file.read_text() == str(built.result.digest)
    with tarfile.open(tar_path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["docker.io/library/lamina-example:latest"]
    info = skopeo_inspect_oci(built.layout)
    assert info["Digest"] == str(built.result.digest)
    assert info["Env"] == ["PATH=/bin"]
    stat = subprocess.run(
        ["umoci", "stat", "--image", f"{built.layout}:latest", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    history = json.loads(stat.stdout)["history"]
    assert len(history) == 5
    # the build directory is gone afterwards
    assert not any((tmp_path / "kaniko").iterdir())


def test_reproducible_builds_give_the_same_digest(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "mkdir", "/data"]\n'
        "LABEL a=b\n",
        {"busybox": BUSYBOX.read_bytes()},
    )
    os.chmod(ctx / "busybox", 0o755)
    first = run_build(tmp_path / "one", ctx, reproducible=True)
    second = run_build(tmp_path / "two", ctx, reproducible=True)
    assert first.result.digest == second.result.digest
    assert first.config.created == "1970-01-01T00:00:00Z"
    assert all(m.mtime == 0 for m in first.layer_files(1).values())
    epoch = run_build(tmp_path / "three", ctx, reproducible=True, source_date_epoch=1700000000)
    assert epoch.config.created == "2023-11-14T22:13:20Z"
    assert epoch.result.digest != first.result.digest


def test_dockerignore_and_missing_source(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        "FROM scratch\nCOPY . /app/\n",
        {"keep.txt": "k", "drop.log": "d", ".dockerignore": "*.log\n"},
    )
    built = run_build(tmp_path, ctx)
    names = set(built.layer_files(0))
    assert "app/keep.txt" in names
    assert "app/drop.log" not in names
    ctx2 = make_context(tmp_path / "ctx2", "FROM scratch\n\nCOPY missing.txt /\n")
    with pytest.raises(ContextError) as info:
        run_build(tmp_path / "b2", ctx2)
    assert "missing.txt" in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 3


def test_unsupported_features_are_refused_with_the_line(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "ctx", "FROM scratch\nRUN --device=/dev/fuse true\n")
    with pytest.raises(NotSupportedError) as info:
        run_build(tmp_path, ctx)
    assert info.value.location is not None
    assert info.value.location.line == 2
    ctx2 = make_context(tmp_path / "ctx2", "FROM scratch\n\nRUN --device=/dev/fuse true\n")
    with pytest.raises(NotSupportedError, match="device") as info:
        run_build(tmp_path / "b2", ctx2)
    assert info.value.location is not None
    assert info.value.location.line == 3


# ------------------------------------------------------------- from a registry


def test_from_busybox_image_config_and_layers(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    dockerfile = f"""\
FROM {busybox_image}
ARG GREETING=hello
ENV APP_HOME=/srv/app LANG=C.UTF-8
WORKDIR $APP_HOME
COPY --chown=www-data:www-data --chmod=0640 conf.txt ./conf/
RUN echo "$GREETING from $(id -un)" > greeting.txt && rm /etc/group
USER www-data
LABEL org.example.name=demo
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt"]
"""
    ctx = make_context(tmp_path / "ctx", dockerfile, {"conf.txt": "x=1\n"})
    built = run_build(tmp_path, ctx, registry=client, labels=(("org.example.extra", "yes"),))
    cfg = built.config
    base = client.pull(Reference.parse(busybox_image), platform=cfg.platform)
    # base layers kept as they are, new layers appended
    assert built.image.layers()[0].digest() == base.layers()[0].digest()
    assert len(built.image.layers()) == 1 + 3  # WORKDIR, COPY, RUN
    c = cfg.config
    assert "APP_HOME=/srv/app" in c.env
    assert not any(e.startswith("GREETING=") for e in c.env)  # ARGs never persist
    assert c.working_dir == "/srv/app"
    assert c.user == "www-data"
    assert c.entrypoint == ("/bin/sh", "-c")
    assert c.cmd == ("cat greeting.txt",)
    assert c.labels == {"org.example.name": "demo", "org.example.extra": "yes"}
    assert c.exposed_ports == ("8080/tcp",)
    created_by = [h.created_by for h in cfg.history]
    assert created_by[-10:] == [
        "ARG GREETING=hello",
        "ENV APP_HOME=/srv/app LANG=C.UTF-8",
        "WORKDIR /srv/app",
        "COPY --chown=www-data:www-data --chmod=0640 conf.txt ./conf/ # buildkit",
        'RUN |1 GREETING=hello /bin/sh -c echo "$GREETING from $(id -un)" > greeting.txt '
        "&& rm /etc/group # buildkit",
        "USER www-data",
        "LABEL org.example.name=demo",
        "EXPOSE [8080/tcp]",
        'ENTRYPOINT ["/bin/sh" "-c"]',
        'CMD ["cat greeting.txt"]',
    ]
    copy_layer = built.layer_files(2)
    conf = copy_layer["srv/app/conf/conf.txt"]
    assert (conf.uid, conf.gid, conf.mode) == (33, 33, 0o640)
    assert built.read_file(3, "srv/app/greeting.txt") == b"hello from root\n"
    run_layer = built.layer_files(3)
    assert "etc/.wh.group" in run_layer  # the deletion is a whiteout
    info = skopeo_inspect_oci(built.layout)
    assert info["Labels"] == {"org.example.name": "demo", "org.example.extra": "yes"}


def test_multi_stage_copy_from_and_target(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    dockerfile = f"""\
FROM {busybox_image} AS build
RUN mkdir /out && echo built > /out/artifact && echo never > /unused
FROM scratch AS broken
RUN exit 1
FROM scratch
COPY --from=build /out/artifact /artifact
COPY --from=0 /bin/busybox /bin/
"""
    ctx = make_context(tmp_path / "ctx", dockerfile)
    built = run_build(tmp_path, ctx, registry=client)
    assert len(built.image.layers()) == 2
    assert built.read_file(0, "artifact") == b"built\n"
    assert set(built.layer_files(1)) == {"bin", "bin/busybox"}
    assert [s.index for s in built.result.stages] == [0, 2]
    # --target picks the first stage; its image has the base layer plus the RUN
    target = run_build(tmp_path / "t", ctx, registry=client, target="build")
    assert len(target.image.layers()) == 2
    assert "out/artifact" in target.layer_files(1)


def test_failing_run_reports_line_and_exit_code(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        f"FROM {busybox_image}\nRUN true\nRUN echo about to fail && exit 3\n",
    )
    options = BuildOptions(
        dockerfile=str(ctx / "Dockerfile"), context=str(ctx), kaniko_dir=tmp_path / "k"
    )
    with pytest.raises(BuildStepError) as info:
        build_image(options, CacheOptions(), OutputOptions(), registry=client, runner=None, log=LOG)
    err = info.value
    assert err.location is not None
    assert err.location.line == 3
    assert "exited with code 3" in err.message
    assert "about to fail" in err.message
    assert not any((tmp_path / "k").iterdir())  # the build directory was removed


def test_push_to_registry(
    tmp_path: Path, busybox_image: str, client: RegistryClient, registry_plain: RegistryServer
) -> None:
    ctx = make_context(tmp_path / "ctx", f"FROM {busybox_image}\nRUN echo pushed > /pushed.txt\n")
    dest = f"{registry_plain.host}/lamina/built:v1"
    image_name_file = tmp_path / "out" / "names"
    output = OutputOptions(
        destinations=(dest,),
        oci_layout_path=str(tmp_path / "out" / "oci"),
        image_name_tag_with_digest_file=str(image_name_file),
    )
    built = run_build(tmp_path, ctx, registry=client, output=output)
    proc = subprocess.run(
        ["skopeo", "inspect", *registry_plain.skopeo_args(), f"docker://{dest}"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["Digest"] == str(built.result.digest)
    assert len(info["Layers"]) == 2
    assert (
        image_name_file.read_text()
        == f"{registry_plain.host}/lamina/built:v1@{built.result.digest}\n"
    )


def test_from_stage_add_archive_zstd_and_chroot(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    src = tmp_path / "payload"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "data.txt").write_text("inside the archive\n")
    ctx = make_context(
        tmp_path / "ctx",
        f"""\
FROM {busybox_image} AS base
RUN echo base > /base.txt
FROM base
ADD payload.tar.gz /opt/
RUN cat /base.txt /opt/pkg/data.txt > /combined.txt
""",
    )
    with tarfile.open(ctx / "payload.tar.gz", "w:gz") as tar:
        tar.add(src / "pkg", arcname="pkg")
    built = run_build(
        tmp_path,
        ctx,
        registry=client,
        isolation="chroot",
        output=OutputOptions(
            no_push=True, oci_layout_path=str(tmp_path / "out" / "oci"), compression="zstd"
        ),
    )
    layers = built.image.layers()
    assert len(layers) == 4  # base + RUN (stage base) + ADD + RUN
    assert layers[0].media_type().endswith("gzip")  # base layer untouched
    assert all(lyr.media_type().endswith("zstd") for lyr in layers[1:])
    assert "opt/pkg/data.txt" in built.layer_files(2)
    assert built.read_file(3, "combined.txt") == b"base\ninside the archive\n"
    info = skopeo_inspect_oci(built.layout)
    assert len(info["Layers"]) == 4  # type: ignore[arg-type]


def test_docker_base_keeps_docker_media_types(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    docker_ref = busybox_image.rsplit(":", 1)[0] + ":docker-v2s2"
    ctx = make_context(
        tmp_path / "ctx",
        f"FROM {docker_ref}\nCOPY a.txt b.txt /dir/\n",
        {"a.txt": "a", "b.txt": "b"},
    )
    built = run_build(
        tmp_path,
        ctx,
        registry=client,
        output=OutputOptions(
            no_push=True, oci_layout_path=str(tmp_path / "out" / "oci"), compression="zstd"
        ),
    )
    assert built.image.media_type() == "application/vnd.docker.distribution.manifest.v2+json"
    assert built.image.layers()[-1].media_type() == (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    assert {"dir/a.txt", "dir/b.txt"} <= set(built.layer_files(1))
    bad = make_context(
        tmp_path / "bad", "FROM scratch\nCOPY a.txt b.txt /dir\n", {"a.txt": "a", "b.txt": "b"}
    )
    with pytest.raises(DockerfileError, match="must be a directory"):
        run_build(tmp_path / "b", bad)
