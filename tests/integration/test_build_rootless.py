"""A whole build as an unprivileged user: RUN in a user namespace, owners mapped back.

The test process is root; the build runs as uid/gid 65534 (``setpriv``) in a
private mount namespace whose ``/etc/subuid``/``/etc/subgid`` give it the
range 200000-265535 (see ``test_sandbox_rootless``). Files a RUN creates are
owned by host ids in the overlay upper directory (65534 for the sandbox's
root, 200000+N-1 for uid N); the layer must record the in-container ids.
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

from lamina.builder import OutputOptions
from lamina.oci.oci_layout import OCILayout
from lamina.registry import RegistryClient, RegistryOptions
from tests.integration.test_build_engine import make_context, run_build
from tests.integration.test_sandbox_rootless import NOBODY, PYTHON, SETPRIV, SRC, UNSHARE
from tests.support.registry import RegistryServer

#: the dependencies (zstandard, httpx ...) for the system Python nobody runs
SITE = next((p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()), str(SRC))

pytestmark = [
    pytest.mark.namespaces,
    pytest.mark.root,
    pytest.mark.registry,
    pytest.mark.skipif(os.geteuid() != 0, reason="switches to uid 65534 with setpriv"),
    pytest.mark.skipif(SETPRIV is None or UNSHARE is None, reason="needs util-linux"),
    pytest.mark.skipif(
        not (shutil.which("newuidmap") and shutil.which("newgidmap")),
        reason="needs newuidmap/newgidmap (uidmap)",
    ),
    pytest.mark.timeout(300),
]


@pytest.fixture
def base() -> Iterator[Path]:
    if PYTHON is None:
        pytest.skip("no Python >= 3.11 that uid 65534 can run")
    path = Path(tempfile.mkdtemp(prefix="lamina-rootless-build-"))
    try:
        (path / "tmp").mkdir()
        (path / "ctx").mkdir()
        (path / "subuid").write_text(f"nobody:200000:65536\n{NOBODY}:200000:65536\n")
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _build_as_nobody(
    base: Path, registry: RegistryServer, dockerfile: str, *, subids: bool = True
) -> OCILayout:
    assert PYTHON is not None
    (base / "ctx" / "Dockerfile").write_text(dockerfile)
    (base / "ctx" / "conf.txt").write_text("conf\n")
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, NOBODY, NOBODY)
    build = [
        SETPRIV or "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "env",
        f"PYTHONPATH={SRC}:{SITE}",
        f"TMPDIR={base / 'tmp'}",
        f"HOME={base / 'tmp'}",
        PYTHON,
        "-m",
        "lamina",
        "build",
        f"--context={base / 'ctx'}",
        f"--dockerfile={base / 'ctx' / 'Dockerfile'}",
        "--no-push",
        "--insecure-pull",
        "--isolation=namespace",
        f"--oci-layout-path={base / 'out'}",
        f"--kaniko-dir={base / 'tmp' / 'kaniko'}",
    ]
    if not subids:
        (base / "subuid").write_text("")
    script = (
        f'mount --bind "{base}/subuid" /etc/subuid && '
        f'mount --bind "{base}/subuid" /etc/subgid && exec "$@"'
    )
    command = [UNSHARE or "unshare", "--mount", "sh", "-c", script, "sh", *build]
    proc = subprocess.run(command, capture_output=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-4000:]
    return OCILayout.open(base / "out")


def _owners(layout: OCILayout, index: int) -> dict[str, tuple[int, int]]:
    image = layout.image()
    out: dict[str, tuple[int, int]] = {}
    with image.layers()[index].uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for m in tar:
            out[m.name.removeprefix("./").rstrip("/")] = (m.uid, m.gid)
    return out


def test_rootless_build_records_container_owners(
    base: Path, registry_plain: RegistryServer, busybox_image: str
) -> None:
    layout = _build_as_nobody(
        base,
        registry_plain,
        f"FROM {busybox_image}\n"
        # the busybox-static of the fixture image has no adduser applet: its effect by hand
        "RUN echo app:x:1234:1234::/home/app:/bin/sh >> /etc/passwd "
        "&& echo app:x:1234: >> /etc/group && mkdir -p /home/app && chown app:app /home/app "
        "&& touch /home/app/f && chown app /home/app/f "
        "&& ln /home/app/f /home/app/hard && ln -s f /home/app/sym\n"
        "RUN touch /root-owned\n"
        "COPY --chown=1234:1234 conf.txt /home/app/conf.txt\n"
        "COPY --link --chown=1234:1234 conf.txt /home/app/linked/conf.txt\n"
        "USER app\n"
        "WORKDIR /home/app/work\n"
        "RUN touch mine && test -O /home/app/conf.txt\n"
        # unreadable to the builder outside the user namespace
        "RUN mkdir -m 700 private && echo s > private/key && chmod 600 private/key\n",
    )
    base_layers = 1
    first = _owners(layout, base_layers)
    assert first["home/app"] == (1234, 1234)
    assert first["home/app/f"] == (1234, 0)
    assert first["home/app/hard"] == (1234, 0)
    assert first["home/app/sym"] == (0, 0)
    assert first["etc/passwd"] == (0, 0)
    assert first["home"] == (0, 0)
    assert _owners(layout, base_layers + 1)["root-owned"] == (0, 0)
    copied = _owners(layout, base_layers + 2)
    assert copied["home/app/conf.txt"] == (1234, 1234)
    assert copied["home/app"] == (1234, 1234)  # the parent as it is in the image
    linked = _owners(layout, base_layers + 3)
    assert linked["home/app/linked/conf.txt"] == (1234, 1234)
    assert linked["home/app/linked"] == (1234, 1234)
    assert _owners(layout, base_layers + 4)["home/app/work"] == (1234, 1234)
    assert _owners(layout, base_layers + 5)["home/app/work/mine"] == (1234, 1234)
    private = _owners(layout, base_layers + 6)
    assert private["home/app/work/private"] == (1234, 1234)
    assert private["home/app/work/private/key"] == (1234, 1234)


def test_rootless_build_without_subordinate_ids(
    base: Path, registry_plain: RegistryServer, busybox_image: str
) -> None:
    """Only the caller's own ids are mapped: the layer writer maps them back to 0."""
    layout = _build_as_nobody(
        base,
        registry_plain,
        f"FROM {busybox_image}\nRUN mkdir /made && touch /made/f\nCOPY conf.txt /conf.txt\n",
        subids=False,
    )
    made = _owners(layout, 1)
    assert made["made"] == (0, 0)
    assert made["made/f"] == (0, 0)
    assert _owners(layout, 2)["conf.txt"] == (0, 0)


def test_rootless_base_layers_keep_their_owners(
    base: Path, registry_plain: RegistryServer, busybox_image: str, tmp_path: Path
) -> None:
    """Base layers are extracted in the user namespace: a RUN sees (and a copy-up
    records) their non-root owners."""
    ref = f"{registry_plain.host}/rootless/owned:1"
    ctx = make_context(
        tmp_path / "ctx",
        f"FROM {busybox_image}\nRUN echo a > /owned && chown 1234:99 /owned && chmod 600 /owned\n",
    )
    client = RegistryClient(
        RegistryOptions(insecure_registries=frozenset({registry_plain.host})),
        docker_config_dir=None,
    )
    try:
        run_build(
            tmp_path,
            ctx,
            registry=client,
            output=OutputOptions(destinations=(ref,), oci_layout_path=str(tmp_path / "pushed")),
        )
    finally:
        client.close()
    layout = _build_as_nobody(
        base,
        registry_plain,
        f"FROM {ref}\nRUN test \"$(stat -c '%u %g' /owned)\" = '1234 99' && echo b >> /owned\n",
    )
    assert _owners(layout, 2)["owned"] == (1234, 99)


def test_rootless_stage_from_a_stage_with_private_files(
    base: Path, registry_plain: RegistryServer, busybox_image: str
) -> None:
    _build_as_nobody(
        base,
        registry_plain,
        f"FROM {busybox_image} AS a\nRUN mkdir -m 700 /p && chown 1234 /p\n"
        "FROM a\nRUN touch /x\nCOPY --from=a /p /p2\n",
    )
