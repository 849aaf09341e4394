"""kaniko users' CI recipes, run unchanged but for the image name, against lamina's images.

Each recipe runs the executor image (``executor``, ``debug`` or ``warmer``) as its CI system
would, with ``podman run --rm --network=host`` and no ``--privileged``, in up to three
capability profiles:

* ``podman``: podman's default set (11 capabilities);
* ``docker``: Docker's and containerd's default set (podman's plus MKNOD, NET_RAW,
  AUDIT_WRITE), what a Kubernetes pod gets;
* ``minimal``: ``--cap-drop=ALL --cap-add=CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID``.

GitLab CI and Buildkite (both forms) run in all three profiles: they cover what depends on
the capabilities (how RUN is isolated). The other recipes add a feature each (the layer
cache over two runs, a git context, the warmer, a tar on stdin, a TLS registry) that does
not depend on them, and each builds for several seconds; each runs in one profile, a
different one per recipe, so every profile also sees a cache, a git fetch and TLS.

What is not the recipe is test plumbing: podman's storage and runtime (a private
``containers.conf`` also lowers the ulimits this nested machine cannot raise), the
loopback registries (plain HTTP or TLS with a throw-away CA; lamina tries HTTPS then HTTP
on loopback, so no ``--insecure`` flag is needed) and ``GIT_PULL_METHOD=http`` for the git
server, which speaks plain HTTP only.

Every test checks the image itself (its config with ``skopeo inspect --config`` or from the
archive, the files of its new layers, the output of ``podman run``) and that its new layers
hold no host or runtime file (``/proc``, ``/sys``, ``/dev``, ``/etc/hosts``,
``/etc/resolv.conf``, ``/etc/hostname``, ``/kaniko``, ``/workspace``, ``/builds``,
``/busybox``, ``/cache``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.executor_images import ExecutorImages, tag_of
from tests.support.git_server import GitHttpServer, git
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.registry]

if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("patchelf"):
    pytest.skip("needs root, podman and patchelf", allow_module_level=True)

PROFILES: dict[str, tuple[str, ...]] = {
    "podman": (),
    "docker": ("--cap-add=MKNOD,NET_RAW,AUDIT_WRITE",),
    "minimal": ("--cap-drop=ALL", "--cap-add=CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID"),
}
ALL_PROFILES = pytest.mark.parametrize("profile", list(PROFILES))

#: entries of the executor container that must never reach a layer (and what is beneath)
FORBIDDEN = (
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "kaniko",
    "workspace",
    "builds",
    "busybox",
    "cache",
    "run/.containerenv",
    ".dockerenv",
)

APP_SH = '#!/bin/sh\necho "$GREETING from $(cat /app/built.txt)"\n'


def dockerfile(base: str) -> str:
    """The project's Dockerfile: a COPY, a RUN that uses /dev/null and /proc, ENV and CMD."""
    return f"""\
FROM {base}
COPY app.sh /app/app.sh
RUN echo built > /app/built.txt && echo discarded > /dev/null && test -c /dev/null \\
 && test -r /proc/self/status && chmod 0755 /app/app.sh
ENV GREETING=hello
CMD ["/app/app.sh"]
"""


#: what ``podman run`` of the built image prints
EXPECTED_OUTPUT = "hello from built\n"


def write_project(directory: Path, base: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.sh").write_text(APP_SH)
    (directory / "Dockerfile").write_text(dockerfile(base))
    return directory


# ------------------------------------------------------------------------------ podman


@dataclass(frozen=True, slots=True)
class Podman:
    """podman with private storage (overlay, as containerd's pods) and runc."""

    env: Mapping[str, str]

    def __call__(
        self, *args: str, stdin: bytes | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, **self.env},
            check=False,
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    def run(
        self,
        image: str,
        *args: str,
        profile: str,
        volumes: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        entrypoint: str | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm --network=host`` with the profile's capabilities, as a CI job."""
        options = ["--rm", "--network=host", *PROFILES[profile]]
        if stdin is not None:
            options.append("-i")
        for volume in volumes:
            options += ["-v", volume]
        for key, value in (env or {}).items():
            options += ["-e", f"{key}={value}"]
        if entrypoint is not None:
            options.append(f"--entrypoint={entrypoint}")
        if workdir is not None:
            options += ["-w", workdir]
        return self("run", *options, image, *args, stdin=stdin)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    work = tmp_path_factory.mktemp("podman")
    runroot = Path(tempfile.mkdtemp(prefix="lamina-pm-"))  # podman wants a short runroot
    storage = work / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{work / "graph"}"\nrunroot = "{runroot}"\n'
    )
    conf = work / "containers.conf"
    lines = ["[containers]", 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]']
    if shutil.which("runc"):  # crun refuses this machine's hybrid cgroup hierarchy
        lines += ["[engine]", 'runtime = "runc"']
    conf.write_text("\n".join(lines) + "\n")
    tool = Podman({"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)})
    try:
        yield tool
    finally:
        tool("rm", "-a", "-f")
        tool("rmi", "-a", "-f")
        _unmount_below(work)  # podman leaves its storage's overlay directory mounted
        shutil.rmtree(runroot, ignore_errors=True)


def _unmount_below(directory: Path) -> None:
    prefix = str(directory) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture(scope="session")
def images(executor_images: ExecutorImages, podman: Podman) -> Callable[[str], str]:
    """``images("executor" | "debug" | "warmer")``: the variant's tag in this module's podman.

    The archives come from the shared ``executor_images`` fixture (built by
    deploy/executor/build-image.sh, cached between sessions); they are loaded into this
    module's own podman storage (overlay, as containerd's pods use).
    """
    loaded: dict[str, str] = {}

    def get(variant: str) -> str:
        if variant not in loaded:
            load = podman("load", "-i", str(executor_images.archive(variant)))
            assert load.returncode == 0, load.stderr
            loaded[variant] = tag_of(variant)
        return loaded[variant]

    return get


# ------------------------------------------------------------------------------ images


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer's entries (name without ``./``) and the contents of its regular files."""

    names: frozenset[str]
    files: Mapping[str, bytes]


def _read_layer(blob: Path) -> Layer:
    names: set[str] = set()
    files: dict[str, bytes] = {}
    with tarfile.open(blob, mode="r:*") as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            names.add(name)
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                files[name] = f.read()
    return Layer(frozenset(names), files)


@dataclass(frozen=True, slots=True)
class BuiltImage:
    config: Mapping[str, object]
    #: the layers the build added (the base image's are left out)
    new_layers: Sequence[Layer]


def _base_layer_count(base: str, registry: RegistryServer) -> int:
    out = subprocess.run(
        ["skopeo", "inspect", *registry.skopeo_args(), f"docker://{base}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(json.loads(out)["Layers"])


def pulled_image(ref: str, registry: RegistryServer, base_layers: int, tmp: Path) -> BuiltImage:
    """The pushed image, copied out of the registry with skopeo."""
    target = tmp / "pulled"
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(
        ["skopeo", "copy", "-q", *registry.skopeo_src_args(), f"docker://{ref}", f"dir:{target}"],
        check=True,
        capture_output=True,
    )
    manifest = json.loads((target / "manifest.json").read_text())
    config = json.loads((target / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    layers = [_read_layer(target / d["digest"].removeprefix("sha256:")) for d in manifest["layers"]]
    return BuiltImage(config, layers[base_layers:])


def archived_image(archive: Path, base_layers: int, tmp: Path) -> BuiltImage:
    """The image in a ``docker save`` tarball, and its RepoTags."""
    target = tmp / "archive"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    manifest = json.loads((target / "manifest.json").read_text())[0]
    config = json.loads((target / manifest["Config"]).read_text())
    layers = [_read_layer(target / name) for name in manifest["Layers"]]
    return BuiltImage(config, layers[base_layers:])


def check_image(image: BuiltImage) -> None:
    """The project's image: config, files, and nothing of the build container."""
    config = image.config["config"]
    assert isinstance(config, dict)
    assert config["Cmd"] == ["/app/app.sh"]
    assert "GREETING=hello" in config["Env"]
    files: dict[str, bytes] = {}
    for layer in image.new_layers:
        files.update(layer.files)
        leaked = sorted(
            name
            for name in layer.names
            if any(name == bad or name.startswith(bad + "/") for bad in FORBIDDEN)
        )
        assert not leaked, f"host or runtime files in a layer: {leaked}"
    assert files.get("app/app.sh") == APP_SH.encode()
    assert files.get("app/built.txt") == b"built\n"


def run_pushed(podman: Podman, ref: str, registry: RegistryServer) -> str:
    """``podman run`` of the pushed image: what it prints."""
    pull = ["pull", "-q", "--tls-verify=false"]
    if registry.username is not None:
        pull.append(f"--creds={registry.username}:{registry.password}")
    proc = podman(*pull, ref)
    assert proc.returncode == 0, proc.stderr
    proc = podman("run", "--rm", ref)
    assert proc.returncode == 0, proc.stderr
    podman("rmi", "-f", ref)
    return proc.stdout


def docker_config(registry: RegistryServer) -> str:
    """A config.json for ``registry`` with kaniko's ``auths`` layout."""
    entry = {"username": registry.username, "password": registry.password}
    return json.dumps({"auths": {registry.host: entry}})


@pytest.fixture(scope="session")
def base(busybox_image: str, registry_plain: RegistryServer) -> tuple[str, int]:
    """The project's base image and its layer count."""
    return busybox_image, _base_layer_count(busybox_image, registry_plain)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-6000:]}"
    return proc.stderr


# ------------------------------------------------------------------------------ recipes


def _gitlab_job(
    config_file: str,
    *,
    profile: str,
    tmp_path: Path,
    podman: Podman,
    image: str,
    base: tuple[str, int],
    registry: RegistryServer,
) -> str:
    """GitLab's job script, writing the credentials to ``config_file``; its stderr."""
    project = write_project(tmp_path / "project", base[0])
    script = (
        f"mkdir -p {Path(config_file).parent}\n"
        'echo "{\\"auths\\":{\\"$CI_REGISTRY\\":{\\"username\\":\\"$CI_REGISTRY_USER\\",'
        f'\\"password\\":\\"$CI_REGISTRY_PASSWORD\\"}}}}}}" > {config_file}\n'
        "/kaniko/executor --context $CI_PROJECT_DIR --dockerfile $CI_PROJECT_DIR/Dockerfile "
        "--destination $IMAGE:$CI_COMMIT_SHA\n"
    )
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = f"{registry.host}/group/project-{profile}-{Path(config_file).parts[1]}"
    env = {
        "CI_REGISTRY": registry.host,
        "CI_REGISTRY_USER": str(registry.username),
        "CI_REGISTRY_PASSWORD": str(registry.password),
        "CI_PROJECT_DIR": "/builds/group/project",
        "CI_COMMIT_SHA": sha,
        "IMAGE": repo,
    }
    err = _ok(
        podman.run(
            image,
            "/busybox/sh",
            "-c",
            script,
            profile=profile,
            entrypoint="",
            volumes=[f"{project}:/builds/group/project"],
            env=env,
            workdir="/builds/group/project",
        )
    )
    ref = f"{repo}:{sha}"
    assert sorted(p.name for p in project.iterdir()) == ["Dockerfile", "app.sh"]
    check_image(pulled_image(ref, registry, base[1], tmp_path))
    assert run_pushed(podman, ref, registry) == EXPECTED_OUTPUT
    return err


@ALL_PROFILES
def test_gitlab_ci(  # noqa: PLR0917 - fixtures
    profile: str,
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_htpasswd: RegistryServer,
) -> None:
    """GitLab's documented job: ``:debug`` image, ``entrypoint: [""]``, the script run by
    sh: ``echo "{\\"auths\\": …}" > /kaniko/.docker/config.json``, then the executor."""
    _gitlab_job(
        "/kaniko/.docker/config.json",
        profile=profile,
        tmp_path=tmp_path,
        podman=podman,
        image=images("debug"),
        base=base,
        registry=registry_htpasswd,
    )


def test_gitlab_ci_older_docs_root_docker_config(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_htpasswd: RegistryServer,
) -> None:
    """Older GitLab docs write ``/root/.docker/config.json`` (``DOCKER_CONFIG`` is
    /kaniko/.docker in the image): read, and said. podman's capability profile."""
    err = _gitlab_job(
        "/root/.docker/config.json",
        profile="podman",
        tmp_path=tmp_path,
        podman=podman,
        image=images("debug"),
        base=base,
        registry=registry_htpasswd,
    )
    assert "reading credentials from /root/.docker/config.json" in err


def _buildkite_workspace(tmp_path: Path, base: str) -> Path:
    """/workspace with the checkout at build/buildkite/src (Buildkite's agent layout)."""
    workspace = tmp_path / "workspace"
    src = workspace / "build" / "buildkite" / "src"
    write_project(src, base)
    # the context is /workspace (the default): the Dockerfile names its files from there
    text = (
        (src / "Dockerfile").read_text().replace("COPY app.sh", "COPY build/buildkite/src/app.sh")
    )
    (src / "Dockerfile").write_text(text)
    return workspace


def _check_buildkite_tar(podman: Podman, workspace: Path, base_layers: int, tmp_path: Path) -> None:
    archive = workspace / "image.tar"
    assert sorted(p.name for p in workspace.iterdir()) == ["build", "image.tar"]
    image = archived_image(archive, base_layers, tmp_path)
    check_image(image)
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        tags = json.load(member)[0]["RepoTags"]
    assert tags == ["docker.io/library/lamina-build:latest"]
    load = podman("load", "-i", str(archive))
    assert load.returncode == 0, load.stderr
    run = podman("run", "--rm", "lamina-build:latest")
    assert run.returncode == 0, run.stderr
    assert run.stdout == EXPECTED_OUTPUT
    podman("rmi", "-f", "docker.io/library/lamina-build:latest")


@ALL_PROFILES
def test_buildkite_kubernetes(
    profile: str,
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
) -> None:
    """Buildkite's pod spec: ``command: ["/kaniko/executor"]``, ``args: ["/kaniko/executor",
    "--dockerfile=…", "--no-push", "--tarPath", "/workspace/image.tar"]`` (the executor's
    own path repeated, no ``--context``: ``/workspace``)."""
    workspace = _buildkite_workspace(tmp_path, base[0])
    _ok(
        podman.run(
            images("executor"),
            "/kaniko/executor",
            "--dockerfile=/workspace/build/buildkite/src/Dockerfile",
            "--no-push",
            "--tarPath",
            "/workspace/image.tar",
            profile=profile,
            entrypoint="/kaniko/executor",
            volumes=[f"{workspace}:/workspace"],
        )
    )
    _check_buildkite_tar(podman, workspace, base[1], tmp_path)


@ALL_PROFILES
def test_buildkite_shell_form(
    profile: str,
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
) -> None:
    """``command: ["/busybox/sh"]``, ``args: ["-c", "… /kaniko/executor …"]`` (debug image)."""
    workspace = _buildkite_workspace(tmp_path, base[0])
    _ok(
        podman.run(
            images("debug"),
            "-c",
            "cd /workspace && /kaniko/executor "
            "--dockerfile=/workspace/build/buildkite/src/Dockerfile "
            "--no-push --tarPath /workspace/image.tar",
            profile=profile,
            entrypoint="/busybox/sh",
            volumes=[f"{workspace}:/workspace"],
        )
    )
    _check_buildkite_tar(podman, workspace, base[1], tmp_path)


def test_jenkins_kubernetes(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_htpasswd: RegistryServer,
) -> None:
    """Jenkins' kubernetes plugin: the debug container (``workingDir: /workspace``), the
    ``sh`` step ``/kaniko/executor --context `pwd` --dockerfile `pwd`/Dockerfile
    --destination … --cache=true``, credentials (a secret) mounted at /kaniko/.docker; the
    second build hits the cache. Docker's capability profile (a pod's)."""
    workspace = write_project(tmp_path / "workspace", base[0])
    registry = registry_htpasswd
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "config.json").write_text(docker_config(registry))
    dest = f"{registry.host}/jenkins/app:1"
    step = (
        "/kaniko/executor --context `pwd` --dockerfile `pwd`/Dockerfile "
        f"--destination {dest} --cache=true"
    )

    def build() -> str:
        return _ok(
            podman.run(
                images("debug"),
                "-c",
                step,
                profile="docker",
                entrypoint="/busybox/sh",
                workdir="/workspace",
                volumes=[f"{workspace}:/workspace", f"{secret}:/kaniko/.docker:ro"],
            )
        )

    first = build()
    assert "MISS" in first
    check_image(pulled_image(dest, registry, base[1], tmp_path))
    second = build()
    hits = [line for line in second.splitlines() if "HIT" in line]
    assert hits, second
    assert not [line for line in second.splitlines() if "MISS" in line]
    check_image(pulled_image(dest, registry, base[1], tmp_path))
    assert run_pushed(podman, dest, registry) == EXPECTED_OUTPUT


def _git_repo(root: Path, base: str) -> str:
    """A bare repository ``repo.git`` under ``root`` holding the project at its root."""
    work = write_project(root / "work", base)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "project", cwd=work, when=1_700_000_000)
    git("clone", "-q", "--bare", str(work), str(root / "repo.git"))
    return "repo.git"


def test_kubernetes_job_git_context(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_htpasswd: RegistryServer,
) -> None:
    """kaniko's Kubernetes Job: ``--context=git://…``, ``--dockerfile=Dockerfile``,
    ``--cache=true``, credentials from a ``kubernetes.io/dockerconfigjson`` secret mounted
    whole at /kaniko/.docker (a file named ``.dockerconfigjson``). Minimal capabilities."""
    registry = registry_htpasswd
    root = tmp_path / "git"
    name = _git_repo(root, base[0])
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / ".dockerconfigjson").write_text(docker_config(registry))
    dest = f"{registry.host}/job/app:1"
    with GitHttpServer(root) as server:
        host = server.base.removeprefix("http://")
        err = _ok(
            podman.run(
                images("executor"),
                f"--context=git://{host}/{name}",
                "--dockerfile=Dockerfile",
                f"--destination={dest}",
                "--cache=true",
                profile="minimal",
                volumes=[f"{secret}:/kaniko/.docker:ro"],
                env={"GIT_PULL_METHOD": "http"},
            )
        )
    assert "reading credentials from /kaniko/.docker/.dockerconfigjson" in err
    check_image(pulled_image(dest, registry, base[1], tmp_path))
    assert run_pushed(podman, dest, registry) == EXPECTED_OUTPUT


def test_minikube_local_cache(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_plain: RegistryServer,
) -> None:
    """kaniko's minikube recipe: the warmer fills a ``/cache`` volume (``--cache-dir=/cache
    --image=…``), then the build reads its base image from there (``--cache-dir=/cache
    --cache=true``). podman's capability profile."""
    cache = tmp_path / "cache"
    cache.mkdir()
    _ok(
        podman.run(
            images("warmer"),
            "--cache-dir=/cache",
            f"--image={base[0]}",
            profile="podman",
            volumes=[f"{cache}:/cache"],
        )
    )
    assert any(cache.iterdir())
    # kaniko's examples/pod.yaml: --dockerfile=/workspace/dockerfile --context=dir://workspace
    workspace = write_project(tmp_path / "workspace", base[0])
    (workspace / "Dockerfile").rename(workspace / "dockerfile")
    dest = f"{registry_plain.host}/minikube/app:1"
    err = _ok(
        podman.run(
            images("executor"),
            "--dockerfile=/workspace/dockerfile",
            "--context=dir://workspace",
            f"--destination={dest}",
            "--cache=true",
            "--cache-dir=/cache",
            profile="podman",
            volumes=[f"{workspace}:/workspace", f"{cache}:/cache"],
        )
    )
    assert "using the warmed base image" in err
    check_image(pulled_image(dest, registry_plain, base[1], tmp_path))
    assert run_pushed(podman, dest, registry_plain) == EXPECTED_OUTPUT


def test_context_from_stdin(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_plain: RegistryServer,
) -> None:
    """``tar -czf - . | podman run -i … --context tar://stdin``. Minimal capabilities."""
    project = write_project(tmp_path / "project", base[0])
    archive = subprocess.run(
        ["tar", "-C", str(project), "-czf", "-", "."], capture_output=True, check=True
    ).stdout
    dest = f"{registry_plain.host}/stdin/app:1"
    _ok(
        podman.run(
            images("executor"),
            "--context",
            "tar://stdin",
            f"--destination={dest}",
            profile="minimal",
            stdin=archive,
        )
    )
    check_image(pulled_image(dest, registry_plain, base[1], tmp_path))
    assert run_pushed(podman, dest, registry_plain) == EXPECTED_OUTPUT


def test_tls_registry_ca_in_kaniko_ssl_certs_and_read_only_context(
    tmp_path: Path,
    podman: Podman,
    images: Callable[[str], str],
    base: tuple[str, int],
    registry_tls: RegistryServer,
) -> None:
    """A registry signed by a private CA, added the kaniko way (a file mounted into
    /kaniko/ssl/certs/), and the context mounted read-only. Docker's capability profile."""
    assert registry_tls.ca_cert is not None
    project = write_project(tmp_path / "project", base[0])
    dest = f"{registry_tls.host}/tls/app:1"
    _ok(
        podman.run(
            images("executor"),
            "--dockerfile=Dockerfile",
            f"--destination={dest}",
            profile="docker",
            volumes=[
                f"{project}:/workspace:ro",
                f"{registry_tls.ca_cert}:/kaniko/ssl/certs/company-ca.crt:ro",
            ],
        )
    )
    assert sorted(p.name for p in project.iterdir()) == ["Dockerfile", "app.sh"]
    check_image(pulled_image(dest, registry_tls, base[1], tmp_path))
    assert run_pushed(podman, dest, registry_tls) == EXPECTED_OUTPUT


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("script", "status", "message"),
    [
        # GitLab's runner runs a job's script with set -e: the first failing line ends it
        (
            "set -e; echo start; no-such-command --flag; echo never",
            127,
            "no-such-command: not found",
        ),
        ("if then fi", 2, "syntax error"),
        ("/kaniko/executor --no-such-flag", 2, "unknown flag: --no-such-flag"),
    ],
)
def test_debug_image_bad_script_fails_like_a_shell_job(
    script: str,
    status: int,
    message: str,
    podman: Podman,
    images: Callable[[str], str],
) -> None:
    """A bad job script in the ``:debug`` image fails as in any shell job."""
    proc = podman.run(images("debug"), "/busybox/sh", "-c", script, profile="podman", entrypoint="")
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr
    assert "never" not in proc.stdout
