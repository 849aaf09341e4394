"""The executor image (deploy/executor): lamina run like kaniko, in place, under podman.

podman's default capabilities allow neither namespaces nor mounts, like a
Kubernetes pod; the build runs with ``--isolation=none`` in the container's
own ``/`` and pushes to the ``registry_plain`` fixture. The pushed image is
checked with skopeo and lamina's own reader, and its layers are compared
with a namespace-mode build of the same Dockerfile on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.builder import BuildOptions, CacheOptions, OutputOptions, build_and_output
from lamina.oci import Image, Platform, Reference
from lamina.registry import RegistryClient
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.registry]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "executor" / "build-image.sh"
TAG = "localhost/lamina-executor:test"
LOG = logging.getLogger("lamina.tests.executor")
#: paths of the executor container that must never reach a layer
FORBIDDEN = (
    "kaniko",
    "workspace",
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "run/.containerenv",
    "var/run",
)

if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("patchelf"):
    pytest.skip("needs root, podman and patchelf", allow_module_level=True)


_MEASURE = """\
import resource, subprocess, sys
code = subprocess.run(["/kaniko/executor", *sys.argv[1:]]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@dataclass(frozen=True, slots=True)
class Podman:
    """podman with private storage, set up for this (nested, cgroup-hybrid) machine."""

    base: tuple[str, ...]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def executor(
        self,
        context: Path,
        *flags: str,
        measure: bool = False,
        volumes: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run /kaniko/executor; ``measure``: print its peak RSS (KiB) as the last stdout line.

        ``volumes``: more ``HOST:CONTAINER`` bind mounts for podman.
        """
        wrap: tuple[str, ...] = ()
        if measure:
            wrap = ("--entrypoint", "/kaniko/python/bin/python3.11")
            flags = ("-I", "-c", _MEASURE, *flags)
        return self(
            "run",
            "--rm",
            "--network=host",
            # lowering limits is always allowed; podman's defaults would raise them
            "--ulimit=nofile=4096:4096",
            "--ulimit=nproc=4096:4096",
            "-v",
            f"{context}:/workspace",
            *(arg for v in volumes for arg in ("-v", v)),
            *wrap,
            TAG,
            *flags,
        )


@pytest.fixture(scope="session")
def executor_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """The executor image, built once per session with build-image.sh and loaded into podman."""
    work = tmp_path_factory.mktemp("executor")
    archive = work / "executor.tar"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(SCRIPT), "--tar", str(archive), "--tag", TAG, "--work", str(work / "tree")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runroot = Path(tempfile.mkdtemp(prefix="lamina-pm-"))  # podman wants a short runroot
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(runroot)]
    base += ["--storage-driver", "vfs"]
    if shutil.which("runc"):  # crun refuses hybrid cgroup hierarchies
        base += ["--runtime", "runc"]
    podman = Podman(tuple(base))
    try:
        load = podman("load", "-i", str(archive))
        assert load.returncode == 0, load.stderr
        yield podman
    finally:
        podman("rmi", "-a", "-f")
        shutil.rmtree(runroot, ignore_errors=True)


def _members(image: Image) -> list[dict[str, tarfile.TarInfo]]:
    out: list[dict[str, tarfile.TarInfo]] = []
    for layer in image.layers():
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            out.append({m.name.removeprefix("./").rstrip("/"): m for m in tar})
    return out


def _summary(members: dict[str, tarfile.TarInfo]) -> list[tuple[str, int, int, int, int, str]]:
    return sorted(
        (name, m.mode, m.uid, m.size, int.from_bytes(m.type, "big"), m.linkname)
        for name, m in members.items()
    )


def test_executor_image_layout(executor_image: Podman) -> None:
    inspect = executor_image("image", "inspect", TAG)
    assert inspect.returncode == 0, inspect.stderr
    doc = json.loads(inspect.stdout)[0]
    config = doc["Config"]
    assert config["Entrypoint"] == ["/kaniko/executor"]
    assert config["WorkingDir"] == "/workspace"
    assert "DOCKER_CONFIG=/kaniko/.docker/" in config["Env"]
    assert "SSL_CERT_DIR=/kaniko/ssl/certs" in config["Env"]
    version = executor_image(
        "run", "--rm", "--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096", TAG, "version"
    )
    assert version.returncode == 0, version.stderr
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert version.stdout == f"lamina {pyproject['project']['version']}\n"


def test_executor_builds_in_place(  # noqa: PLR0917 - fixtures
    tmp_path: Path,
    executor_image: Podman,
    registry_plain: RegistryServer,
    busybox_image: str,
    debian_image: str,
    client: RegistryClient,
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(f"""\
FROM {busybox_image} AS build
RUN mkdir -p /out && echo artifact > /out/artifact && echo 1 > /tmp/build-only
FROM {busybox_image}
COPY hello.txt /hello.txt
VOLUME /vol
RUN echo ran > /ran.txt && rm /etc/group && mkdir -p /data /var/run /vol \\
 && echo no > /data/ignored && echo no > /var/run/x.pid && echo no > /vol/x
COPY --from=build /out/artifact /artifact
""")
    (ctx / "Dockerfile.debian").write_text(f"""\
FROM {debian_image}
RUN echo deb > /deb.txt && rm /etc/debian_version
""")
    host = registry_plain.host
    dest = f"{host}/lamina/in-place:v1"
    common = ["--isolation=none", f"--insecure-registry={host}", "--reproducible"]
    run = executor_image.executor(
        ctx,
        "--dockerfile=/workspace/Dockerfile",
        f"--destination={dest}",
        "--ignore-path=/data",
        *common,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    assert "building in place in /" in run.stderr

    # skopeo sees the pushed image
    skopeo = subprocess.run(
        ["skopeo", "inspect", *registry_plain.skopeo_args(), f"docker://{dest}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert skopeo.returncode == 0, skopeo.stderr
    assert len(json.loads(skopeo.stdout)["Layers"]) == 4

    image = client.pull(Reference.parse(dest), platform=Platform.host())
    layers = _members(image)
    assert set(layers[1]) == {"hello.txt"}
    run_layer = layers[2]
    assert "ran.txt" in run_layer
    assert "etc/.wh.group" in run_layer  # the deletion, as a whiteout
    assert "data/ignored" not in run_layer  # --ignore-path
    assert "var/run/x.pid" not in run_layer  # --ignore-var-run (default true)
    assert not any(n.startswith("vol") for n in run_layer)  # a VOLUME (kaniko)
    assert set(layers[3]) == {"artifact"}
    for layer in layers[1:]:  # the new layers (the busybox base has its own /dev)
        for name in layer:
            assert not any(name == f or name.startswith(f + "/") for f in FORBIDDEN), name
            assert name != "tmp/build-only"

    # the same Dockerfile in namespace mode on this machine: the same layers
    # (the namespace build keeps /var/run and /data; --ignore-path only matters in place)
    same = tmp_path / "same"
    same.mkdir()
    (same / "hello.txt").write_text("hello\n")
    (same / "Dockerfile").write_text(f"""\
FROM {busybox_image} AS build
RUN mkdir -p /out && echo artifact > /out/artifact && echo 1 > /tmp/build-only
FROM {busybox_image}
COPY hello.txt /hello.txt
RUN echo ran > /ran.txt && rm /etc/group
COPY --from=build /out/artifact /artifact
RUN <<EOF
echo heredoc > /heredoc.txt
EOF
""")
    # no --isolation flag, as kaniko users run it: auto picks a user namespace under
    # podman's default capabilities and seccomp profile, in place where that is refused
    local = executor_image.executor(
        same,
        "--dockerfile=/workspace/Dockerfile",
        f"--destination={host}/lamina/in-place:v2",
        *common[1:],
    )
    assert local.returncode == 0, local.stderr[-6000:]
    assert "isolation: namespace (a user namespace" in local.stderr or (
        "isolation: none (in place" in local.stderr
    )
    result = build_and_output(
        BuildOptions(
            dockerfile=str(same / "Dockerfile"),
            context=str(same),
            kaniko_dir=tmp_path / "kaniko",
            isolation="namespace",
            reproducible=True,
        ),
        CacheOptions(),
        OutputOptions(destinations=(f"{host}/lamina/namespace:v2",)),
        registry=client,
        runner=None,
        log=LOG,
    )
    in_place = client.pull(Reference.parse(f"{host}/lamina/in-place:v2"), platform=Platform.host())
    assert [_summary(m) for m in _members(in_place)] == [
        _summary(m)
        for m in _members(
            client.pull(Reference.parse(f"{host}/lamina/namespace:v2"), platform=Platform.host())
        )
    ]
    assert in_place.digest() == result.digest
    assert "heredoc.txt" in _members(in_place)[-1]

    # a Debian base in place
    deb = executor_image.executor(
        ctx,
        "--dockerfile=/workspace/Dockerfile.debian",
        f"--destination={host}/lamina/in-place-debian:v1",
        *common,
        measure=True,
    )
    assert deb.returncode == 0, deb.stderr[-6000:]
    peak_kib = int(deb.stdout.split()[-1])
    print(f"in-place Debian build: peak RSS {peak_kib // 1024} MiB")
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"  # issue 5's bound, in place
    deb_image = client.pull(
        Reference.parse(f"{host}/lamina/in-place-debian:v1"), platform=Platform.host()
    )
    top = _members(deb_image)[-1]
    assert "deb.txt" in top
    assert "etc/.wh.debian_version" in top
    for name in top:
        assert not any(name == f or name.startswith(f + "/") for f in FORBIDDEN), name


def test_executor_emulates_secret_and_cache_mounts(
    tmp_path: Path,
    executor_image: Podman,
    registry_plain: RegistryServer,
    busybox_image: str,
    client: RegistryClient,
) -> None:
    """In ``/`` without mount rights: a secret is copied in and out, a cache (on another
    filesystem: a podman volume) is moved in and back; neither reaches a layer or the log."""
    value = b"lamina-executor-secret-" + os.urandom(8).hex().encode()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "tok").write_bytes(value)
    caches = tmp_path / "caches"
    caches.mkdir()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"""\
FROM {busybox_image}
RUN --mount=type=secret,id=tok,mode=0400 sha256sum /run/secrets/tok | cut -c1-64 > /sum
RUN --mount=type=cache,target=/root/.cache,id=deps echo fetched > /root/.cache/dep && \\
    touch /step2
RUN --mount=type=cache,target=/root/.cache,id=deps cat /root/.cache/dep > /seen && \\
    test ! -e /run/secrets
""")
    host = registry_plain.host
    dest = f"{host}/lamina/in-place-mounts:v1"
    run = executor_image.executor(
        ctx,
        "--dockerfile=/workspace/Dockerfile",
        f"--destination={dest}",
        "--isolation=none",
        f"--insecure-registry={host}",
        "--secret=id=tok,src=/secrets/tok",
        "--cache-mount-dir=/caches",
        volumes=(f"{secrets_dir}:/secrets", f"{caches}:/caches"),
    )
    assert run.returncode == 0, run.stderr[-6000:]
    assert value.decode() not in run.stderr + run.stdout
    image = client.pull(Reference.parse(dest), platform=Platform.host())
    assert value not in image.raw_config()
    layers = _members(image)
    assert set(layers[-3]) == {"sum"}
    assert set(layers[-2]) == {"step2"}  # not root/.cache, nor root/
    assert set(layers[-1]) == {"seen"}
    for layer in image.layers():
        with layer.uncompressed() as f:
            assert value not in f.read()
    # the cache is back on the host volume it came from
    assert [p.read_text() for p in caches.glob("*/data/dep")] == ["fetched\n"]
