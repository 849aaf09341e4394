"""inotify snapshots in the executor image under podman: the layers of full scans.

The executor image runs in an unprivileged podman container (an overlay root as
in a pod) and builds, with ``--isolation=none``, ``chroot`` and what ``auto``
picks without ``CAP_SETFCAP`` (in-place), a Dockerfile whose RUN steps create,
delete, rename, chmod and hard-link files, rewrite one keeping its size and
mtime and write through the second name of a hard link. Each build runs twice:
as shipped (the snapshots follow inotify) and with inotify taken away (a
``.pth`` file makes ``inotify_init1`` fail: every snapshot is a full scan, the
code before inotify snapshots). The layers must hold the same entries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.oci import Image, Platform, Reference
from lamina.registry import RegistryClient
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.registry]

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/lamina-executor:watch-test"
SITE = "/kaniko/python/lib/python3.11/site-packages"

if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("patchelf"):
    pytest.skip("needs root, podman and patchelf", allow_module_level=True)

#: imported at interpreter start (a .pth line): inotify refused, as without watches left
NO_INOTIFY = """\
import lamina.fs._watch as w

def _refused(self):
    raise OSError(24, "inotify refused by the test")

w._Notify.__init__ = _refused
"""

DOCKERFILE = """\
FROM {base}
RUN mkdir -p /w/a /w/b /w/c /w/mv/deep && echo one > /w/a/f && ln /w/a/f /w/b/g \\
 && echo two > /w/c/h && ln -s a/f /w/lnk && echo d > /w/mv/deep/x
RUN echo more >> /w/b/g
RUN chmod 600 /w/c/h && mv /w/mv /w/moved && echo n > /w/moved/deep/y
RUN touch -r /w/c/h /w/ref && echo TWO > /w/c/h && touch -r /w/ref /w/c/h && rm /w/ref
RUN rm /w/b/g && ln -sf c/h /w/lnk && rm -rf /w/moved/deep && mkdir /w/moved/deep \\
 && echo z > /w/moved/deep/z && mkdir -p /tmp/t && echo t > /tmp/t/f && rm -rf /tmp/t
RUN echo last > /w/last
"""


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """podman with private overlay storage and the executor image loaded."""
    work = tmp_path_factory.mktemp("watch-podman")
    archive = work / "executor.tar"
    proc = subprocess.run(
        [
            str(REPO / "deploy/executor/build-image.sh"),
            *("--variant", "executor", "--tar", str(archive), "--tag", TAG),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runroot = Path(tempfile.mkdtemp(prefix="lamina-pw-"))  # podman wants a short runroot
    base = ["podman", "--root", str(work / "storage"), "--runroot", str(runroot)]
    base += ["--storage-driver", "overlay"]
    if shutil.which("runc"):
        base += ["--runtime", "runc"]
    try:
        load = subprocess.run([*base, "load", "-i", str(archive)], capture_output=True, check=False)
        assert load.returncode == 0, load.stderr
        yield base
    finally:
        subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True, check=False)
        shutil.rmtree(runroot, ignore_errors=True)


def _layers(image: Image) -> list[list[tuple[str, int, int, int, int, str]]]:
    out = []
    for layer in image.layers()[1:]:  # the build's layers
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            out.append(
                sorted(
                    (
                        m.name.removeprefix("./").rstrip("/"),
                        m.mode,
                        m.uid,
                        m.size,
                        int.from_bytes(m.type, "big"),
                        m.linkname,
                    )
                    for m in tar
                )
            )
    return out


#: isolation -> (podman flags, executor flags): auto picks in-place itself without SETFCAP
MODES = {
    "none": ((), ("--isolation=none",)),
    "chroot": ((), ("--isolation=chroot",)),
    "auto-minimal-caps": (
        ("--cap-drop=ALL", "--cap-add=CHOWN,DAC_OVERRIDE,FOWNER,SETUID,SETGID"),
        (),
    ),
}


@pytest.mark.parametrize("isolation", sorted(MODES))
def test_watched_layers_equal_full_scan_layers(  # noqa: PLR0917 - fixtures
    tmp_path: Path,
    podman: list[str],
    registry_plain: RegistryServer,
    busybox_image: str,
    client: RegistryClient,
    isolation: str,
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "lamina_no_inotify.py").write_text(NO_INOTIFY)
    (patch / "lamina-no-inotify.pth").write_text("import lamina_no_inotify\n")
    host = registry_plain.host
    images = {}
    for variant in ("watched", "scanned"):
        extra: list[str] = []
        if variant == "scanned":
            extra = [
                "-v",
                f"{patch / 'lamina_no_inotify.py'}:{SITE}/lamina_no_inotify.py:ro",
                "-v",
                f"{patch / 'lamina-no-inotify.pth'}:{SITE}/lamina-no-inotify.pth:ro",
            ]
        dest = f"{host}/lamina/watch-{isolation}:{variant}"
        run = subprocess.run(
            [
                *podman,
                "run",
                "--rm",
                "--network=host",
                "--ulimit=nofile=4096:4096",
                "--ulimit=nproc=4096:4096",
                "-v",
                f"{ctx}:/workspace",
                *extra,
                *MODES[isolation][0],
                TAG,
                "--dockerfile=/workspace/Dockerfile",
                f"--destination={dest}",
                f"--insecure-registry={host}",
                *MODES[isolation][1],
                "--verbosity=debug",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-6000:]
        if isolation.startswith("auto"):
            assert "isolation: none (in place" in run.stderr
        snapshots = [line for line in run.stderr.splitlines() if "snapshot: " in line]
        assert len(snapshots) == 6, run.stderr[-6000:]
        want = "(inotify)" if variant == "watched" else "(full scans)"
        assert all(want in line for line in snapshots), snapshots
        images[variant] = client.pull(Reference.parse(dest), platform=Platform.host())
    watched, scanned = (_layers(images[v]) for v in ("watched", "scanned"))
    assert watched == scanned
    names = [{entry[0] for entry in layer} for layer in watched]
    assert {"w/a/f", "w/b/g"} <= names[1]  # a write through one name: both names
    assert "w/c/h" in names[3]  # same size, same mtime, other content
    assert {"w/a/f", "w/b/.wh.g", "w/moved/deep/z"} <= names[4]  # the link count of w/a/f
    assert not any(n.startswith("tmp/t") for n in names[4])
    assert names[5] == {"w", "w/last"}
