"""``--isolation=none`` in the builder: one shared root, kaniko's wipe and ignore list.

The builder is given an :class:`InPlaceRunner` whose root is a directory, so
the in-place code path (wipe, extract, snapshot, stage copies, RUN mount
emulation) runs without touching this machine's ``/``: RUN steps are
chrooted into that root (the runner's test facility). The real thing, in
``/`` of the executor image, is in ``test_executor_image.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lamina.builder import (
    BuildOptions,
    CacheOptions,
    OutputOptions,
    SecretSource,
    SSHSource,
    build_image,
)
from lamina.errors import BuildStepError, NotSupportedError
from lamina.oci import Digest, Image
from lamina.registry import RegistryClient
from lamina.sandbox import InPlaceRunner, RunResult, RunSpec

pytestmark = [pytest.mark.root, pytest.mark.registry]

LOG = logging.getLogger("lamina.tests.none")

if os.geteuid() != 0:  # pragma: no cover - environment guard
    pytest.skip("extracting base images needs root", allow_module_level=True)


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
    blobs: list[bytes]
    config: bytes


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
            blobs=[_blob(image, i) for i in range(len(layers))],
            config=image.raw_config(),
        )
    finally:
        result.cleanup()


def _blob(image: Image, index: int) -> bytes:
    with image.layers()[index].uncompressed() as f:
        return f.read()


def _file(built: Built, index: int, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(built.blobs[index])) as tar:
        f = tar.extractfile(name)
        assert f is not None, (index, name)
        return f.read()


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


def test_in_place_run_in_a_test_root_is_chrooted(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN echo ran > /ran.txt\n")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    assert built.names[-1] == ["ran.txt"]
    assert (root / "ran.txt").read_text() == "ran\n"


def test_cleanup_empties_the_root_after_an_in_place_build(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nCOPY a.txt /a.txt\n")
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root), cleanup=True)
    assert built.names[-1] == ["a.txt"]  # the layers were written before the wipe
    assert sorted(p.name for p in root.iterdir()) == ["kaniko"]


# ---------------------------------------------------------------------------- RUN --mount in place


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "kaniko").mkdir(parents=True)
    return root


def test_secret_is_copied_in_and_removed_before_the_snapshot(
    tmp_path: Path,
    busybox_image: str,
    client: RegistryClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = b"lamina-none-secret-" + os.urandom(8).hex().encode()
    src = tmp_path / "tok"
    src.write_bytes(value)
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image}
COPY a.txt /etc/existing
RUN --mount=type=secret,id=tok,mode=0440,uid=7,gid=8 \\
    sha256sum /run/secrets/tok | cut -c1-64 > /sum && stat -c '%a %u %g' /run/secrets/tok > /perm
RUN --mount=type=secret,id=tok,target=/etc/existing cut -c1-6 /etc/existing > /head && \\
    echo leftover > /etc/existing
RUN --mount=type=secret,id=tok,env=TOK printf %s "$TOK" | sha256sum | cut -c1-64 > /env-sum
RUN test ! -e /run/secrets && cat /etc/existing > /after
""",
    )
    root = _root(tmp_path)
    caplog.set_level(logging.DEBUG)
    built = _build(
        ctx,
        root / "kaniko",
        client,
        InPlaceRunner(root=root),
        secrets=(SecretSource(id="tok", path=src),),
    )
    n = len(built.names)
    assert built.names[n - 4] == ["perm", "sum"]
    assert _file(built, n - 4, "sum") == hashlib.sha256(value).hexdigest().encode() + b"\n"
    assert _file(built, n - 4, "perm") == b"440 7 8\n"
    assert built.names[n - 3] == ["head"]  # not /etc/existing, not etc/
    assert _file(built, n - 3, "head") == value[:6] + b"\n"
    assert built.names[n - 1] == ["after"]
    assert _file(built, n - 1, "after") == b"a.txt\n"  # the image's file restored
    assert (root / "etc/existing").read_text() == "a.txt\n"
    assert not (root / "run/secrets").exists()
    assert _file(built, n - 2, "env-sum") == _file(built, n - 4, "sum")
    # the secret is in no layer, config (history included), log line or build file
    for i, blob in enumerate(built.blobs):
        assert value not in blob, i
    assert value not in built.config
    assert len(json.loads(built.config)["history"]) >= n
    assert value.decode() not in caplog.text
    assert not any(value in p.read_bytes() for p in (root / "kaniko").rglob("*") if p.is_file())


def test_cache_mount_persists_between_builds_and_never_reaches_a_layer(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image}
RUN mkdir -p /var/cache/app && echo image > /var/cache/app/image-file
RUN --mount=type=cache,target=/var/cache/app,id=c1 \\
    ls /var/cache/app > /seen && date +%s%N > /var/cache/app/stamp-$$ && touch /var/cache/app/x
RUN --mount=type=cache,target=/ro,id=c1,ro ls /ro > /seen-ro
RUN --mount=type=cache,target=/tmp/priv,sharing=private ls /tmp/priv > /seen-priv && \\
    touch /tmp/priv/p
RUN --mount=type=cache,target=/tmp/locked,sharing=locked,mode=0700,uid=5 \\
    stat -c '%a %u' /tmp/locked > /locked-perm
RUN ls /var/cache/app > /after && test ! -e /ro
""",
    )
    root = _root(tmp_path)
    cache_dir = tmp_path / "cache-mounts"
    first = _build(
        ctx, root / "kaniko", client, InPlaceRunner(root=root), cache_mount_dir=cache_dir
    )
    n = len(first.names)
    assert _file(first, n - 5, "seen") == b""
    assert first.names[n - 5] == ["seen"]
    assert first.names[n - 4] == ["seen-ro"]
    assert _file(first, n - 4, "seen-ro").split() == [b"stamp-" + _stamp(first, n - 4), b"x"]
    assert first.names[n - 3] == ["seen-priv"]
    assert _file(first, n - 2, "locked-perm") == b"700 5\n"
    assert _file(first, n - 1, "after") == b"image-file\n"
    for names in first.names[n - 5 :]:
        assert not any(x.startswith(("var/", "ro", "tmp")) for x in names), names

    second = _build(
        ctx, root / "kaniko", client, InPlaceRunner(root=root), cache_mount_dir=cache_dir
    )
    m = len(second.names)
    seen = _file(second, m - 5, "seen").split()
    assert b"x" in seen
    assert len([s for s in seen if s.startswith(b"stamp-")]) == 1
    assert _file(second, m - 3, "seen-priv") == b"p\n"  # the private cache kept its file
    assert _file(second, m - 1, "after") == b"image-file\n"


def _stamp(built: Built, index: int) -> bytes:
    for word in _file(built, index, "seen-ro").split():
        if word.startswith(b"stamp-"):
            return word.removeprefix(b"stamp-")
    raise AssertionError("no stamp")


def test_bind_and_tmpfs_mounts_are_emulated(
    tmp_path: Path,
    busybox_image: str,
    client: RegistryClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image} AS tools
RUN mkdir -p /opt/tool && echo tool > /opt/tool/t.txt
FROM {busybox_image}
RUN mkdir -p /work && echo mine > /work/mine
RUN --mount=type=bind,target=/work cat /work/a.txt > /from-ctx && echo junk > /work/junk && \\
    ls /work | tr '\\n' ' ' > /ls-ctx
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool cat /mnt/tool/t.txt > /from-stage
RUN --mount=type=bind,source=b.txt,target=/etc/b.txt,rw cat /etc/b.txt > /file-bind
RUN --mount=type=tmpfs,target=/work,size=1m stat -c '%a' /work > /tmpfs-mode && \\
    ls -A /work > /tmpfs-ls && touch /work/gone
RUN ls /work > /after && test ! -e /mnt && test ! -e /etc/b.txt
""",
    )
    root = _root(tmp_path)
    caplog.set_level(logging.INFO)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    n = len(built.names)
    assert "size is not enforced" in caplog.text
    assert "RUN --mount at /mnt/tool: copied 1 file(s)" in caplog.text
    assert _file(built, n - 5, "from-ctx") == b"a.txt\n"
    assert b"Dockerfile" in _file(built, n - 5, "ls-ctx")
    assert b"mine" not in _file(built, n - 5, "ls-ctx")
    assert _file(built, n - 4, "from-stage") == b"tool\n"
    assert _file(built, n - 3, "file-bind") == b"b.txt\n"
    assert _file(built, n - 2, "tmpfs-mode") == b"1777\n"
    assert _file(built, n - 2, "tmpfs-ls") == b""
    assert _file(built, n - 1, "after") == b"mine\n"
    assert built.names[n - 5] == ["from-ctx", "ls-ctx"]
    assert built.names[n - 4] == ["from-stage"]
    assert built.names[n - 3] == ["file-bind"]
    assert built.names[n - 2] == ["tmpfs-ls", "tmpfs-mode"]
    assert sorted(os.listdir(root / "work")) == ["mine"]


def test_network_none_is_refused_in_place_with_the_line(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN --network=none true\n")
    root = _root(tmp_path)
    with pytest.raises(NotSupportedError, match="network=none with --isolation=none") as info:
        _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    assert info.value.location is not None
    assert info.value.location.line == 2
    assert "namespace" in (info.value.hint or "")


def test_failed_step_still_restores_the_targets(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image}
RUN mkdir -p /work && echo mine > /work/mine
RUN --mount=type=tmpfs,target=/work --mount=type=cache,target=/c,id=f touch /c/kept && exit 3
""",
    )
    root = _root(tmp_path)
    cache_dir = tmp_path / "cache-mounts"
    with pytest.raises(BuildStepError):
        _build(ctx, root / "kaniko", client, InPlaceRunner(root=root), cache_mount_dir=cache_dir)
    assert sorted(os.listdir(root / "work")) == ["mine"]
    assert not (root / "c").exists()
    assert not any(p.name.startswith(".lamina-aside") for p in root.rglob(".lamina-*"))
    kept = list(cache_dir.glob("*/data/kept"))
    assert len(kept) == 1


def test_ssh_agent_is_a_symlink_when_the_socket_is_kept(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image}
RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && readlink "$SSH_AUTH_SOCK" > /link && \\
    echo "$SSH_AUTH_SOCK" > /sock
RUN test ! -e /run/buildkit && test -z "${{SSH_AUTH_SOCK+set}}" && touch /after
""",
    )
    root = _root(tmp_path)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "kaniko/agent.sock"))
        built = _build(
            ctx,
            root / "kaniko",
            client,
            InPlaceRunner(root=root),
            ssh=(SSHSource(id="default", socket=root / "kaniko/agent.sock"),),
        )
    n = len(built.names)
    assert built.names[n - 2] == ["link", "sock"]
    assert _file(built, n - 2, "link") == b"/kaniko/agent.sock\n"
    assert _file(built, n - 2, "sock") == b"/run/buildkit/ssh_agent.0\n"
    assert built.names[n - 1] == ["after"]


def test_ssh_agent_outside_the_kept_paths_is_refused(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN --mount=type=ssh true\n")
    root = _root(tmp_path)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "agent.sock"))
        with pytest.raises(NotSupportedError, match="type=ssh") as info:
            _build(
                ctx,
                root / "kaniko",
                client,
                InPlaceRunner(root=root),
                ssh=(SSHSource(id="default", socket=tmp_path / "agent.sock"),),
            )
    assert info.value.location is not None
    assert info.value.location.line == 2
    assert "symlink" in (info.value.hint or "")
    assert not (root / "run/buildkit").exists()


def test_heredoc_script_runs_in_place(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN <<EOF\n#!/bin/sh\necho hi > /hd\nEOF\n")
    root = _root(tmp_path)
    built = _build(ctx, root / "kaniko", client, InPlaceRunner(root=root))
    assert built.names[-1] == ["hd"]
    assert _file(built, len(built.names) - 1, "hd") == b"hi\n"


class _Interrupted(InPlaceRunner):
    """Sees the emulated mounts in place, then is interrupted (as by Ctrl-C) mid-step."""

    def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
        assert os.listdir(self.root / "work") == []  # the tmpfs stand-in
        assert (self.root / "c/old").is_file()  # the cache, renamed in
        (self.root / "c/new").write_text("new\n")
        raise KeyboardInterrupt


def test_interrupted_step_still_restores_the_targets(
    tmp_path: Path, busybox_image: str, client: RegistryClient
) -> None:
    ctx = _context(
        tmp_path,
        f"""FROM {busybox_image}
RUN mkdir -p /work && echo mine > /work/mine
RUN --mount=type=cache,target=/c,id=i touch /c/old
RUN --mount=type=tmpfs,target=/work --mount=type=cache,target=/c,id=i true
""",
    )
    root = _root(tmp_path)
    cache_dir = tmp_path / "cache-mounts"
    runner = InPlaceRunner(root=root)
    _build(ctx, root / "kaniko", client, runner, cache_mount_dir=cache_dir)

    calls = iter((runner, runner, _Interrupted(root=root)))

    class _Steps(InPlaceRunner):
        def run(self, spec: RunSpec, *, on_output: Callable[[bytes], None]) -> RunResult:
            return next(calls).run(spec, on_output=on_output)

    with pytest.raises(KeyboardInterrupt):
        _build(ctx, root / "kaniko", client, _Steps(root=root), cache_mount_dir=cache_dir)
    assert sorted(os.listdir(root / "work")) == ["mine"]
    assert not (root / "c").exists()
    assert not list(root.rglob(".lamina-aside-*"))
    assert sorted(p.name for p in cache_dir.glob("*/data/*")) == ["new", "old"]


def test_copy_into_the_ignore_list_is_not_written_in_place(
    tmp_path: Path,
    busybox_image: str,
    client: RegistryClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kaniko does not copy into ignored paths ("Not adding ... because it is ignored"):
    in place, a COPY/ADD into /var/run, an --ignore-path or a VOLUME leaves the live file
    alone and puts nothing of it in the layer; the rest of the step is copied."""
    dockerfile = f"""\
FROM {busybox_image}
VOLUME /data
COPY a.txt /var/run/a.txt
COPY b.txt /opt/keep/b.txt
COPY c.txt /data/c.txt
COPY a.txt b.txt /files/
COPY . /tree/
"""
    ctx = _context(tmp_path, dockerfile)
    root = tmp_path / "root"
    for d in ("kaniko", "var/run", "opt/keep"):
        (root / d).mkdir(parents=True)
    (root / "opt/keep/b.txt").write_text("the live file\n")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        built = _build(
            ctx, root / "kaniko", client, InPlaceRunner(root=root), ignore_paths=("/opt/keep",)
        )
    assert (root / "opt/keep/b.txt").read_text() == "the live file\n"
    assert not (root / "var/run/a.txt").exists()
    assert not (root / "data/c.txt").exists()
    layers = [n for n in built.names if n]
    everything = {name for names in layers for name in names}
    assert not {"var/run/a.txt", "opt/keep/b.txt", "data/c.txt"} & everything
    assert {"files/a.txt", "files/b.txt", "tree/Dockerfile", "tree/c.txt"} <= everything
    assert (root / "files/b.txt").read_text() == "b.txt\n"
    assert "not written because an in-place build leaves its ignore list alone" in caplog.text
