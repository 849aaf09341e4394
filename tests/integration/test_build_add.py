"""Real builds: ADD of http(s) URLs and local archives, and ``--single-snapshot``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import BuildStepError
from tests.integration.test_build_engine import BUSYBOX, make_context, run_build
from tests.unit.builder.test_add_url import (
    COMPRESSORS,
    LAST_MODIFIED,
    LAST_MODIFIED_EPOCH,
    FileServer,
    Reply,
    tar_bytes,
)

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

PAYLOAD = b"downloaded\n" * 5000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
ARCHIVE = COMPRESSORS["gzip"](tar_bytes({"inside.txt": b"inside"}))


@pytest.fixture
def server() -> Iterator[FileServer]:
    routes = {
        "/f/payload.bin": Reply(body=PAYLOAD, headers={"Last-Modified": LAST_MODIFIED}),
        "/f/plain.txt": Reply(body=b"plain\n"),
        "/f/a.tar.gz": Reply(body=ARCHIVE),
        "/moved": Reply(status=301, headers={"Location": "/f/plain.txt"}),
    }
    with FileServer(routes) as s:
        yield s


def test_add_urls(tmp_path: Path, server: FileServer) -> None:
    base = server.base
    dockerfile = f"""\
FROM scratch
ADD {base}/f/payload.bin /dl/
ADD --checksum=sha256:{PAYLOAD_SHA} {base}/f/payload.bin /dl/checked
ADD --chown=5:6 --chmod=644 {base}/f/plain.txt /opt/plain
ADD {base}/f/a.tar.gz {base}/moved /dl/
"""
    built = run_build(tmp_path, make_context(tmp_path / "ctx", dockerfile))
    assert len(built.image.layers()) == 4
    files0 = built.layer_files(0)
    entry = files0["dl/payload.bin"]
    assert (entry.mode, entry.uid, entry.gid) == (0o600, 0, 0)
    assert int(entry.mtime) == LAST_MODIFIED_EPOCH
    assert built.read_file(0, "dl/payload.bin") == PAYLOAD
    assert built.read_file(1, "dl/checked") == PAYLOAD
    plain = built.layer_files(2)["opt/plain"]
    assert (plain.mode, plain.uid, plain.gid) == (0o644, 5, 6)
    files3 = built.layer_files(3)
    assert built.read_file(3, "dl/a.tar.gz") == ARCHIVE  # never extracted
    assert "dl/inside.txt" not in files3
    assert built.read_file(3, "dl/moved") == b"plain\n"
    history = [h.created_by for h in built.config.history]
    assert history[0] == f"ADD {base}/f/payload.bin /dl/ # buildkit"
    assert history[1] == f"ADD {base}/f/payload.bin /dl/checked # buildkit"  # no --checksum
    assert history[2] == f"ADD --chown=5:6 --chmod=644 {base}/f/plain.txt /opt/plain # buildkit"
    assert not any((tmp_path / "kaniko").iterdir())  # downloads cleaned up


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("ADD --checksum=sha256:{zero} {base}/f/payload.bin /x", "checksum mismatch"),
        ("ADD {base}/f/missing.bin /x", "HTTP 404"),
    ],
)
def test_add_url_failures_name_url_and_line(
    tmp_path: Path, server: FileServer, line: str, match: str
) -> None:
    text = "FROM scratch\nENV A=1\n" + line.format(base=server.base, zero="0" * 64) + "\n"
    with pytest.raises(BuildStepError, match=match) as info:
        run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert server.base in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 3
    if "checksum" in match:
        assert f"got sha256:{PAYLOAD_SHA}" in info.value.message


def test_add_git_over_ssh_needs_an_agent(tmp_path: Path) -> None:
    text = "FROM scratch\nADD git@github.com:moby/buildkit.git#v0.12.0 /src\n"
    with pytest.raises(BuildStepError, match="over SSH needs an SSH agent") as info:
        run_build(tmp_path, make_context(tmp_path / "ctx", text))
    assert info.value.location is not None
    assert info.value.location.line == 2


def test_add_local_archives_of_every_format(tmp_path: Path) -> None:
    formats = sorted(COMPRESSORS)
    files: dict[str, bytes | str] = {
        f"arch-{fmt}": COMPRESSORS[fmt](tar_bytes({f"{fmt}/file.txt": fmt.encode()}))
        for fmt in formats
    }
    files["note.xz"] = COMPRESSORS["xz"](b"compressed, but not a tar")
    lines = [f"ADD arch-{fmt} /x/" for fmt in formats]
    lines += ["ADD note.xz /x/", "ADD --unpack=false arch-gzip /kept/"]
    built = run_build(
        tmp_path, make_context(tmp_path / "ctx", "FROM scratch\n" + "\n".join(lines) + "\n", files)
    )
    for i, fmt in enumerate(formats):
        assert built.read_file(i, f"x/{fmt}/file.txt") == fmt.encode()
        assert f"x/arch-{fmt}" not in built.layer_files(i)
    n = len(formats)
    assert built.read_file(n, "x/note.xz") == files["note.xz"]
    assert built.read_file(n + 1, "kept/arch-gzip") == files["arch-gzip"]


SINGLE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /etc /gone && \
/bin/busybox echo old > /etc/old && /bin/busybox echo keep > /etc/keep && \
/bin/busybox echo x > /gone/f"]

FROM base
ENV A=1
RUN ["/bin/busybox", "rm", "-rf", "/etc/old", "/gone"]
COPY hello.txt /hello.txt
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo new > /new.txt"]
WORKDIR /work
LABEL x=y
"""


def test_single_snapshot_gives_one_layer_with_whiteouts(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx", SINGLE, {"busybox": BUSYBOX.read_bytes(), "hello.txt": "hello\n"}
    )
    os.chmod(ctx / "busybox", 0o755)
    normal = run_build(tmp_path / "normal", ctx, reproducible=True)
    assert len(normal.image.layers()) == 2 + 4  # RUN, COPY, RUN, WORKDIR
    built = run_build(tmp_path / "single", ctx, single_snapshot=True, reproducible=True)
    layers = built.image.layers()
    assert len(layers) == 3  # the base stage keeps its two layers; one for the final stage
    base_layers = normal.image.layers()[:2]
    assert [lay.digest() for lay in layers[:2]] == [lay.digest() for lay in base_layers]
    files = built.layer_files(2)
    assert "etc/.wh.old" in files
    assert ".wh.gone" in files
    assert "etc/keep" not in files
    assert "bin/busybox" not in files
    assert built.read_file(2, "hello.txt") == b"hello\n"
    assert built.read_file(2, "new.txt") == b"new\n"
    assert files["work"].isdir()
    history = built.config.history
    assert [h.created_by for h in history[2:]] == [
        "ENV A=1",
        "RUN /bin/busybox rm -rf /etc/old /gone # buildkit",
        "COPY hello.txt /hello.txt # buildkit",
        "RUN /bin/busybox sh -c /bin/busybox echo new > /new.txt # buildkit",
        "WORKDIR /work",
        "LABEL x=y",
    ]
    # kaniko: the snapshot is taken at the last instruction, which carries the layer
    assert [h.empty_layer for h in history[2:]] == [True] * 5 + [False]
    assert sum(1 for h in history if not h.empty_layer) == len(built.config.diff_ids)
    assert built.config.config.env[-1] == "A=1"
    assert built.config.config.working_dir == "/work"


def test_single_snapshot_without_changes_adds_no_layer(tmp_path: Path) -> None:
    text = "FROM scratch AS base\nCOPY f /f\nFROM base\nENV A=1\nLABEL b=2\n"
    built = run_build(
        tmp_path, make_context(tmp_path / "ctx", text, {"f": "f"}), single_snapshot=True
    )
    assert len(built.image.layers()) == 1
    assert [h.empty_layer for h in built.config.history] == [False, True, True]
