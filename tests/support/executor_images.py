"""The executor images (deploy/executor/build-image.sh), built once and loaded into podman.

Use the session fixture ``executor_images`` (registered in ``tests/conftest.py``)::

    def test_gitlab(executor_images: ExecutorImages) -> None:
        tag = executor_images.build_variant("debug")      # "localhost/lamina-executor:debug-test"
        run = executor_images.podman("run", "--rm", "--network=host", "--entrypoint=", tag,
                                     "/busybox/sh", "-c", "echo ok")

* ``build_variant(variant) -> tag``: ``variant`` is ``executor``, ``debug`` or ``warmer``;
  builds the image with the script (``--variant``), loads it into the private podman
  storage and returns its tag; later calls return at once.
* ``archive(variant) -> Path``: the docker-archive the script wrote (for ``podman load``
  elsewhere, or to compare digests).
* ``podman(*args)``: podman on a private storage (``--root`` in the session's temporary
  directory, vfs driver, runc where available), so tests never touch the machine's images.
* ``podman.executor(tag, context, *flags, volumes=...)``: ``podman run --rm --network=host``
  of ``tag`` with ``context`` mounted at ``/workspace`` and the entrypoint's ``flags``.

Built archives are cached under ``$LAMINA_TEST_CACHE/executor-images/<key>/`` (default
``~/.cache/lamina-tests``), ``<key>`` a digest of every input of the image (the files in
``deploy/executor``, ``src/lamina``, ``pyproject.toml``, the Python that runs the
script and the last commit's time, the images' mtimes), so an unchanged tree loads the
previous session's images; a file lock keeps concurrent sessions from building the same
key twice. ``LAMINA_TEST_REBUILD_IMAGES=1``
ignores the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO",
    "SCRIPT",
    "VARIANTS",
    "ExecutorImages",
    "Podman",
    "build_archive",
    "executor_images_session",
    "inputs_key",
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "executor" / "build-image.sh"
VARIANTS = ("executor", "debug", "warmer")
#: what the images need on this machine
REQUIRED_PROGRAMS = ("podman", "patchelf", "git", "busybox", "strip")


def inputs_key() -> str:
    """A digest of everything the image is built from (cache key)."""
    h = hashlib.sha256()
    h.update(sys.version.encode())
    h.update(sys.executable.encode())
    # the script's SOURCE_DATE_EPOCH: every mtime in the image
    epoch = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    h.update(os.environ.get("SOURCE_DATE_EPOCH", epoch).encode())
    roots = [REPO / "deploy" / "executor", REPO / "src" / "lamina"]
    files = [REPO / "pyproject.toml"]
    for root in roots:
        files += sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        h.update(str(path.relative_to(REPO)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:24]


def _cache_root() -> Path:
    base = Path(os.environ.get("LAMINA_TEST_CACHE", Path.home() / ".cache" / "lamina-tests"))
    return base / "executor-images"


def build_archive(variant: str, target: Path, *, work: Path | None = None) -> None:
    """Run build-image.sh for ``variant``, writing a docker-archive to ``target``."""
    args = [str(SCRIPT), "--variant", variant, "--tar", str(target), "--tag", tag_of(variant)]
    if work is not None:
        args += ["--work", str(work)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"build-image.sh --variant {variant} failed:\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-6000:]}"
        )


def tag_of(variant: str) -> str:
    return f"localhost/lamina-executor:{variant}-test"


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
        tag: str,
        context: Path,
        *flags: str,
        volumes: tuple[str, ...] = (),
        podman_args: tuple[str, ...] = (),
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm --network=host`` of ``tag`` with ``context`` at ``/workspace``.

        ``volumes``: more ``HOST:CONTAINER[:OPTS]`` bind mounts; ``podman_args``: more
        ``podman run`` options (``--entrypoint``, ``--read-only``, ``--cap-drop`` ...).
        """
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
            *podman_args,
            tag,
            *flags,
            timeout=timeout,
        )


def make_podman(root: Path) -> tuple[Podman, Path]:
    """A :class:`Podman` storing under ``root``; and its runroot (remove it when done)."""
    runroot = Path(tempfile.mkdtemp(prefix="lamina-pm-"))  # podman wants a short runroot
    base = ["podman", "--root", str(root), "--runroot", str(runroot)]
    base += ["--storage-driver", "vfs"]
    if shutil.which("runc"):  # crun refuses hybrid cgroup hierarchies
        base += ["--runtime", "runc"]
    return Podman(tuple(base)), runroot


@dataclass(slots=True)
class ExecutorImages:
    """The three images of one session (see the module docstring)."""

    podman: Podman
    work: Path
    _archives: dict[str, Path] = field(default_factory=dict)
    _loaded: dict[str, str] = field(default_factory=dict)

    def archive(self, variant: str) -> Path:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
        found = self._archives.get(variant)
        if found is not None:
            return found
        rebuild = os.environ.get("LAMINA_TEST_REBUILD_IMAGES") == "1"
        cache = self.work / "archives" if rebuild else _cache_root() / inputs_key()
        cache.mkdir(parents=True, exist_ok=True)
        target = cache / f"{variant}.tar"
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not target.is_file():
                tmp = cache / f".{variant}.tar.tmp"
                build_archive(variant, tmp, work=cache / "work")
                tmp.rename(target)
        if not rebuild:
            _prune(cache)
        self._archives[variant] = target
        return target

    def build_variant(self, variant: str) -> str:
        """The tag of ``variant``'s image, built (or taken from the cache) and loaded."""
        tag = self._loaded.get(variant)
        if tag is not None:
            return tag
        archive = self.archive(variant)
        load = self.podman("load", "-i", str(archive))
        if load.returncode != 0:
            raise AssertionError(f"podman load {archive}: {load.stderr}")
        tag = tag_of(variant)
        self._loaded[variant] = tag
        return tag


#: a cached set unused for this long is deleted (another session may still be using a
#: younger one: its inputs changed under it, e.g. by a commit)
_PRUNE_AFTER = 3600


def _prune(keep: Path) -> None:
    """Drop cached images of older inputs (each set is ~100 MB)."""
    now = time.time()
    os.utime(keep)
    for other in keep.parent.iterdir():
        if other == keep or not other.is_dir():
            continue
        with contextlib.suppress(OSError):
            if now - other.stat().st_mtime < _PRUNE_AFTER:
                continue
        with contextlib.suppress(OSError), open(other / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # another session is building it
            shutil.rmtree(other, ignore_errors=True)


@contextlib.contextmanager
def executor_images_session(tmp: Path) -> Iterator[ExecutorImages]:
    """An :class:`ExecutorImages` whose podman storage lives under ``tmp``."""
    podman, runroot = make_podman(tmp / "storage")
    images = ExecutorImages(podman, tmp)
    try:
        yield images
    finally:
        podman("rmi", "-a", "-f")
        shutil.rmtree(runroot, ignore_errors=True)
