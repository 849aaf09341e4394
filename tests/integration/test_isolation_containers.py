"""``--isolation=auto`` in unprivileged containers, as users run the executor image.

The executor image (the ``executor_images`` fixture) runs under podman with
``--network=host`` and no ``--privileged``, its root on overlay storage (as in
a pod), in the capability profiles users meet: podman's default, Docker's
default (podman's + MKNOD, NET_RAW, AUDIT_WRITE), a minimal set, and a
pod-like one (seccomp unconfined; runc's masked /proc paths), also unmasked.
In each, a Debian RUN checks what it needs (/proc, the /dev nodes, /dev/shm),
the image is saved with ``--tarPath`` and its layers are checked: the RUN's
files and deletions are there, nothing of /dev, /proc or /sys is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.executor_images import ExecutorImages, tag_of
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.registry, pytest.mark.timeout(900)]

TAG = tag_of("executor")

if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("patchelf"):
    pytest.skip("needs root, podman and patchelf", allow_module_level=True)

DOCKER_CAPS = "--cap-add=MKNOD,NET_RAW,AUDIT_WRITE"
#: profile -> (podman flags, the isolation line auto must log)
PROFILES: dict[str, tuple[tuple[str, ...], str]] = {
    "podman-default": (
        (),
        "isolation: namespace (a user namespace, the container's /proc, changes staged on a tmpfs)",
    ),
    "docker-default": (
        (DOCKER_CAPS,),
        "isolation: namespace (a user namespace, the container's /proc, changes staged on a tmpfs)",
    ),
    "minimal": (
        ("--cap-drop=ALL", "--cap-add=CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID"),
        "isolation: none (in place, as kaniko; "
        "mapping root into a user namespace is refused (needs CAP_SETFCAP))",
    ),
    "pod-like": (
        (DOCKER_CAPS, "--security-opt=seccomp=unconfined"),
        "isolation: namespace (a user namespace, the container's /proc, changes staged on a tmpfs)",
    ),
    "unmasked": (
        (DOCKER_CAPS, "--security-opt=seccomp=unconfined", "--security-opt=unmask=ALL"),
        "isolation: namespace (a user namespace, changes staged on a tmpfs)",
    ),
}

CHECKS = (
    "grep -q '^Pid:' /proc/self/status && head -c 64 /proc/cpuinfo > /dev/null && ls /dev"
    " && echo x > /dev/null && test -c /dev/null && test -c /dev/zero && test -c /dev/full"
    " && test -c /dev/random && test -c /dev/urandom && test -c /dev/tty"
    " && dd if=/dev/urandom bs=1 count=1 of=/dev/null 2>/dev/null"
    " && head -c 1 /dev/zero > /dev/null"
    " && mkdir -p /dev/shm && touch /dev/shm/x"
)


@dataclass(frozen=True, slots=True)
class Podman:
    """podman with private overlay storage (the container's root is an overlay, as in a pod)."""

    base: tuple[str, ...]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def executor(
        self, profile: tuple[str, ...], volumes: dict[Path, str], *flags: str
    ) -> subprocess.CompletedProcess[str]:
        return self(
            "run",
            "--rm",
            "--network=host",
            # lowering limits is always allowed; podman's defaults would raise them
            "--ulimit=nofile=4096:4096",
            "--ulimit=nproc=4096:4096",
            *profile,
            *(arg for host, inside in volumes.items() for arg in ("-v", f"{host}:{inside}")),
            TAG,
            *flags,
        )


@pytest.fixture(scope="module")
def podman(
    tmp_path_factory: pytest.TempPathFactory, executor_images: ExecutorImages
) -> Iterator[Podman]:
    """The executor image of this checkout, in private *overlay* storage: the container's
    root is then an overlay, as in a pod (the shared fixture's podman uses vfs)."""
    work = tmp_path_factory.mktemp("overlay-podman")
    runroot = Path(tempfile.mkdtemp(prefix="lamina-pm-"))  # podman wants a short runroot
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(runroot)]
    base += ["--storage-driver", "overlay"]
    if shutil.which("runc"):  # crun refuses hybrid cgroup hierarchies
        base += ["--runtime", "runc"]
    pm = Podman(tuple(base))
    try:
        load = pm("load", "-i", str(executor_images.archive("executor")))
        assert load.returncode == 0, load.stderr
        yield pm
    finally:
        pm("rmi", "-a", "-f")
        shutil.rmtree(runroot, ignore_errors=True)


def _layers(archive: Path) -> list[dict[str, tarfile.TarInfo]]:
    """The members of each layer of a docker-archive, names without ``./``."""
    out: list[dict[str, tarfile.TarInfo]] = []
    with tarfile.open(archive) as outer:
        manifest_file = outer.extractfile("manifest.json")
        assert manifest_file is not None
        manifest = json.load(manifest_file)
        for name in manifest[0]["Layers"]:
            blob = outer.extractfile(name)
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r:*") as layer:
                out.append({m.name.removeprefix("./").rstrip("/"): m for m in layer})
    return out


def _isolation_lines(stderr: str) -> list[str]:
    return [
        line[line.index("isolation: ") :] for line in stderr.splitlines() if "isolation: " in line
    ]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_auto_gives_run_a_working_environment(
    tmp_path: Path,
    podman: Podman,
    registry_plain: RegistryServer,
    debian_image: str,
    profile: str,
) -> None:
    flags, expected = PROFILES[profile]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (ctx / "Dockerfile").write_text(f"""\
FROM {debian_image}
RUN {CHECKS} && echo ok > /ran && rm /etc/debian_version && mkdir /owned && chown 1234:1234 /owned
RUN echo y > /dev/null; echo second > /ran2 && cat /proc/self/status > /dev/null
""")
    run = podman.executor(
        flags,
        {ctx: "/workspace", out: "/out"},
        "--dockerfile=/workspace/Dockerfile",
        "--no-push",
        "--tarPath=/out/image.tar",
        "--destination=lamina/isolation:test",
        f"--insecure-registry={registry_plain.host}",
    )
    assert run.returncode == 0, run.stderr[-6000:]
    print(f"{profile}: {_isolation_lines(run.stderr)}")
    assert _isolation_lines(run.stderr) == [expected]  # logged once, one short line
    layers = _layers(out / "image.tar")
    assert len(layers) == 3
    first, second = layers[1], layers[2]
    assert "ran" in first
    assert "etc/.wh.debian_version" in first  # a deletion, through every mode's snapshot
    assert (first["owned"].uid, first["owned"].gid) == (1234, 1234)
    assert "ran2" in second
    for layer in (first, second):
        for name in layer:
            top = name.split("/", 1)[0]
            assert top not in ("dev", "proc", "sys"), name


def test_no_isolation_at_all_is_a_clear_error(
    tmp_path: Path, podman: Podman, registry_plain: RegistryServer, busybox_image: str
) -> None:
    """No user namespace and no executor-image layout (lamina not under /kaniko): refused."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN true\n")
    run = podman(
        "run",
        "--rm",
        "--network=host",
        "--ulimit=nofile=4096:4096",
        "--ulimit=nproc=4096:4096",
        "--cap-drop=ALL",
        "--cap-add=CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID",
        "-v",
        f"{ctx}:/workspace",
        # lamina run from a copy outside /kaniko, as a CI image with lamina installed would
        "--entrypoint",
        "/kaniko/python/bin/python3.11",
        TAG,
        "-I",
        "-c",
        "import shutil, sys, runpy; "
        "shutil.copytree('/kaniko/python/lib/python3.11/site-packages/lamina', "
        "'/lamina-copy/lamina'); "
        "sys.path.insert(0, '/lamina-copy'); "
        "sys.path.insert(1, '/kaniko/python/lib/python3.11/site-packages'); "
        "sys.argv = ['lamina', 'build', '--no-push', '--dockerfile=/workspace/Dockerfile', "
        f"'--context=/workspace', '--insecure-registry={registry_plain.host}']; "
        "runpy.run_module('lamina', run_name='__main__')",
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    assert "found no way to isolate RUN steps" in run.stderr, run.stderr[-4000:]
    assert "mapping root into a user namespace is refused (needs CAP_SETFCAP)" in run.stderr
    assert "lamina is not installed under /kaniko" in run.stderr
    assert "--isolation=chroot" in run.stderr


@pytest.mark.parametrize("isolation", ["chroot", "none", "auto"])
def test_dev_null_never_reaches_a_layer(
    tmp_path: Path,
    podman: Podman,
    registry_plain: RegistryServer,
    busybox_image: str,
    isolation: str,
) -> None:
    """A root ``RUN ... > /dev/null`` under podman's default capabilities (no CAP_MKNOD:
    chroot cannot make the node and the shell makes a regular file): not in the layer."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN echo x > /dev/null; mkdir -p /dev/shm; echo ok > /ok\n"
    )
    run = podman.executor(
        (),
        {ctx: "/workspace", out: "/out"},
        "--dockerfile=/workspace/Dockerfile",
        "--no-push",
        "--tar-path=/out/image.tar",
        "--destination=lamina/devnull:test",
        f"--insecure-registry={registry_plain.host}",
        f"--isolation={isolation}",
    )
    assert run.returncode == 0, run.stderr[-6000:]
    top = _layers(out / "image.tar")[-1]
    assert "ok" in top
    assert not [n for n in top if n.split("/", 1)[0] in ("dev", "proc", "sys")], sorted(top)


def test_namespace_in_a_container_keeps_caches_users_and_mounts(
    tmp_path: Path, podman: Podman, registry_plain: RegistryServer, debian_image: str
) -> None:
    """With the upper staged on a tmpfs: a cache mount is seeded into the step and copied
    back (the next step reads it; no layer has it), USER runs as itself, binds work."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data.txt").write_text("from the context\n")
    out = tmp_path / "out"
    out.mkdir()
    (ctx / "Dockerfile").write_text(f"""\
FROM {debian_image}
RUN --mount=type=cache,target=/cache echo cached > /cache/c && echo one > /one
RUN --mount=type=cache,target=/cache --mount=type=bind,target=/ctx \\
    cat /cache/c > /seen && cat /ctx/data.txt > /bound
RUN useradd -u 1500 -m bob
USER bob
RUN id -u > /home/bob/uid && touch /tmp/bobfile
""")
    run = podman.executor(
        (),
        {ctx: "/workspace", out: "/out"},
        "--dockerfile=/workspace/Dockerfile",
        "--no-push",
        "--tar-path=/out/image.tar",
        "--destination=lamina/caches:test",
        f"--insecure-registry={registry_plain.host}",
    )
    assert run.returncode == 0, run.stderr[-6000:]
    assert "changes staged on a tmpfs" in run.stderr
    layers = _layers(out / "image.tar")
    names = set().union(*layers[1:])
    assert not any(n == "cache" or n.startswith("cache/") for n in names)
    assert not any(n == "ctx" or n.startswith("ctx/") for n in names)
    assert "one" in layers[1]
    assert {"seen", "bound"} <= set(layers[2])
    assert layers[2]["seen"].size == len("cached\n")  # the first step's cache write came back
    assert layers[2]["bound"].size == len("from the context\n")
    last = layers[-1]
    assert (last["tmp/bobfile"].uid, last["tmp/bobfile"].gid) == (1500, 1500)
    assert (last["home/bob/uid"].uid, last["home/bob/uid"].size) == (1500, len("1500\n"))
