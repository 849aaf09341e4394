"""ADD of http(s) URLs (download, checksum, naming) and of local archives in every format."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from lamina.builder._copy import CopyRequest, copy_into, is_tar_archive
from lamina.builder._fetch import (
    check_add_sources,
    fetch_url,
    is_git_source,
    is_url_source,
    parse_checksum,
    url_file_name,
)
from lamina.context import LocalContext
from lamina.dockerfile import AddInstruction, instruction_from_node, parse
from lamina.errors import BuildStepError, DockerfileError, NotSupportedError

LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"  # 1700000000
LAST_MODIFIED_EPOCH = 1700000000


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class FileServer:
    """A loopback HTTP server answering GETs from a ``path → Reply`` table."""

    def __init__(self, routes: Mapping[str, Reply]) -> None:
        self.routes = dict(routes)
        self.requests: list[str] = []
        table = self.routes
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                reply = table.get(self.path, Reply(status=404, body=b"not found"))
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


PAYLOAD = b"payload bytes\n" * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def tar_bytes(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1600000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: compressor per format, as ADD must recognise them (by content, never by name)
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "tar": lambda b: b,
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.fixture
def server() -> Iterator[FileServer]:
    routes = {
        "/files/payload.bin": Reply(body=PAYLOAD, headers={"Last-Modified": LAST_MODIFIED}),
        "/files/plain.txt": Reply(body=b"no date\n"),
        "/old": Reply(status=302, headers={"Location": "/files/payload.bin"}),
        "/boom": Reply(status=500, body=b"server error"),
        "/files/a.tar.gz": Reply(body=COMPRESSORS["gzip"](tar_bytes({"in.txt": b"x"}))),
    }
    with FileServer(routes) as s:
        yield s


def _add(line: str) -> AddInstruction:
    node = parse(f"FROM scratch\n{line}\n", filename="Dockerfile").nodes[-1]
    instr = instruction_from_node(node)
    assert isinstance(instr, AddInstruction)
    return instr


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("src", "url", "git"),
    [
        ("https://example.com/x.tar.gz", True, False),
        ("HTTP://example.com/", True, False),
        ("https://github.com/org/repo.git", True, True),
        ("https://github.com/org/repo.git#main:sub", True, True),
        ("git@github.com:org/repo.git", False, True),
        ("git://host/repo", False, True),
        ("ssh://git@host/repo.git", False, True),
        ("local/file.txt", False, False),
    ],
)
def test_source_kinds(src: str, url: bool, git: bool) -> None:
    assert is_url_source(src) is url
    assert is_git_source(src) is git


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h/dir/file.tar.gz", "file.tar.gz"),
        ("https://h/dir/file.txt?x=1#frag", "file.txt"),
        ("https://h/a%20b", "a b"),
        ("https://h/", "__unnamed__"),
        ("https://h", "__unnamed__"),
        ("https://h/dir/", "dir"),
    ],
)
def test_url_file_name(url: str, name: str) -> None:
    assert url_file_name(url) == name


def test_parse_checksum() -> None:
    assert parse_checksum("sha256:" + "A" * 64, None) == ("sha256", "a" * 64)
    assert parse_checksum("sha512:" + "0" * 128, None)[0] == "sha512"
    for bad in ("md5:00", "sha256:abc", "sha256:" + "g" * 64, "deadbeef"):
        with pytest.raises(DockerfileError, match="checksum"):
            parse_checksum(bad, None)


def test_check_add_sources_rules() -> None:
    assert check_add_sources(_add("ADD a b https://h/x /d/")) == ["https://h/x"]
    # git sources are checked out by the caller (builder/_git.py), not downloaded
    assert check_add_sources(_add("ADD https://github.com/o/r.git#v1 https://h/x /d/")) == [
        "https://h/x"
    ]
    assert check_add_sources(_add("ADD --keep-git-dir=true https://h/r.git /src")) == []
    assert check_add_sources(_add("ADD --checksum=abcdef1 https://h/r.git#v1 /src")) == []
    with pytest.raises(NotSupportedError, match="ftp") as info:
        check_add_sources(_add("ADD ftp://h/x /x"))
    assert info.value.location is not None
    assert info.value.location.line == 2
    sha = "sha256:" + PAYLOAD_SHA
    assert check_add_sources(_add(f"ADD --checksum={sha} https://h/x /x")) == ["https://h/x"]
    with pytest.raises(DockerfileError, match="multiple sources"):
        check_add_sources(_add(f"ADD --checksum={sha} https://h/x https://h/y /d/"))
    with pytest.raises(DockerfileError, match="non-HTTP"):
        check_add_sources(_add(f"ADD --checksum={sha} local.txt /x"))
    with pytest.raises(DockerfileError, match="checksum"):
        check_add_sources(_add("ADD --checksum=sha256:nothex https://h/x /x"))


# ------------------------------------------------------------------ downloads


def test_fetch_streams_the_file_with_mode_0600_and_last_modified(
    server: FileServer, tmp_path: Path
) -> None:
    got = fetch_url(f"{server.base}/files/payload.bin", tmp_path)
    assert got.host.read_bytes() == PAYLOAD
    assert got.name == "payload.bin"
    assert got.digest == f"sha256:{PAYLOAD_SHA}"
    assert got.size == len(PAYLOAD)
    st = got.host.stat()
    assert st.st_mode & 0o7777 == 0o600
    assert int(st.st_mtime) == LAST_MODIFIED_EPOCH
    plain = fetch_url(f"{server.base}/files/plain.txt", tmp_path)
    assert plain.mtime is None
    assert plain.host.read_bytes() == b"no date\n"


def test_fetch_follows_redirects_and_keeps_the_requested_name(
    server: FileServer, tmp_path: Path
) -> None:
    got = fetch_url(f"{server.base}/old", tmp_path)
    assert got.host.read_bytes() == PAYLOAD
    assert got.name == "old"  # named from the URL as written (BuildKit)
    assert server.requests == ["/old", "/files/payload.bin"]


def test_fetch_checksum_match_and_mismatch(server: FileServer, tmp_path: Path) -> None:
    url = f"{server.base}/files/payload.bin"
    ok = fetch_url(url, tmp_path / ".", checksum=f"sha256:{PAYLOAD_SHA}")
    assert ok.host.exists()
    ok.host.unlink()
    wrong = "0" * 64
    with pytest.raises(BuildStepError) as info:
        fetch_url(url, tmp_path, checksum=f"sha256:{wrong}")
    msg = info.value.message
    assert url in msg
    assert f"expected sha256:{wrong}" in msg
    assert f"got sha256:{PAYLOAD_SHA}" in msg
    assert list(tmp_path.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize(("path", "status"), [("/missing", "404"), ("/boom", "500")])
def test_fetch_http_errors_name_the_url(
    server: FileServer, tmp_path: Path, path: str, status: str
) -> None:
    url = f"{server.base}{path}"
    with pytest.raises(BuildStepError, match=status) as info:
        fetch_url(url, tmp_path)
    assert url in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_fetch_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(BuildStepError, match="cannot download") as info:
        fetch_url(url, tmp_path, timeout=5)
    assert url in info.value.message
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ into a rootfs


def _empty_ctx(tmp_path: Path) -> LocalContext:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    return LocalContext(ctx)


def test_downloaded_files_are_named_and_not_extracted(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    dl = tmp_path / "dl"
    dl.mkdir()
    archive = fetch_url(f"{server.base}/files/a.tar.gz", dl)
    payload = fetch_url(f"{server.base}/files/payload.bin", dl)
    req = CopyRequest(
        tree=_empty_ctx(tmp_path),
        sources=(),
        dest="/dl",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        extract_archives=True,
        remote=(archive, payload),
    )
    copy_into(root, req, warn=lambda _m: None)
    assert (root / "dl" / "a.tar.gz").read_bytes()[:2] == b"\x1f\x8b"  # kept as is
    st = (root / "dl" / "payload.bin").stat()
    assert (st.st_mode & 0o7777, int(st.st_mtime)) == (0o600, LAST_MODIFIED_EPOCH)
    # a destination without a trailing slash is the file name; --chown/--chmod apply
    req2 = CopyRequest(
        tree=_empty_ctx(tmp_path),
        sources=(),
        dest="/opt/renamed",
        dest_is_dir=False,
        owner=(12, 34),
        chmod=0o755,
        remote=(payload,),
    )
    copy_into(root, req2, warn=lambda _m: None)
    st2 = (root / "opt" / "renamed").stat()
    assert (st2.st_uid, st2.st_gid, st2.st_mode & 0o7777) == (12, 34, 0o755)
    # --unpack=true extracts a downloaded archive
    req3 = CopyRequest(
        tree=_empty_ctx(tmp_path),
        sources=(),
        dest="/unpacked",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        remote=(archive,),
        unpack_remote=True,
    )
    copy_into(root, req3, warn=lambda _m: None)
    assert (root / "unpacked" / "in.txt").read_bytes() == b"x"


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_local_archives_of_every_format_are_extracted(tmp_path: Path, fmt: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    data = COMPRESSORS[fmt](tar_bytes({"top.txt": b"top", "sub/deep.txt": b"deep"}))
    (ctx / "archive.bin").write_bytes(data)  # the name says nothing: content decides
    assert is_tar_archive(ctx / "archive.bin")
    tree = LocalContext(ctx)
    root = tmp_path / "rootfs"
    root.mkdir()
    req = CopyRequest(
        tree=tree,
        sources=tuple(tree.resolve("archive.bin")),
        dest="/opt/x",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        extract_archives=True,
    )
    copy_into(root, req, warn=lambda _m: None)
    assert (root / "opt/x/top.txt").read_bytes() == b"top"
    assert (root / "opt/x/sub/deep.txt").read_bytes() == b"deep"
    assert not (root / "opt/x/archive.bin").exists()


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_compressed_non_tars_and_empty_files_are_copied(tmp_path: Path, fmt: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "notar.gz").write_bytes(COMPRESSORS[fmt](b"just text, not a tar\n" * 40))
    (ctx / "empty.tar.gz").write_bytes(b"")
    for name in ("notar.gz", "empty.tar.gz"):
        assert not is_tar_archive(ctx / name)
    tree = LocalContext(ctx)
    root = tmp_path / "rootfs"
    root.mkdir()
    req = CopyRequest(
        tree=tree,
        sources=(*tree.resolve("notar.gz"), *tree.resolve("empty.tar.gz")),
        dest="/d",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        extract_archives=True,
    )
    copy_into(root, req, warn=lambda _m: None)
    assert (root / "d/notar.gz").read_bytes() == (ctx / "notar.gz").read_bytes()
    assert (root / "d/empty.tar.gz").stat().st_size == 0


def test_archive_entries_cannot_escape_the_destination(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("../escape.txt", "/abs.txt", "ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"!"))
        link = tarfile.TarInfo("up")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../.."
        tar.addfile(link)
        through = tarfile.TarInfo("up/through.txt")
        through.size = 1
        tar.addfile(through, io.BytesIO(b"!"))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(buf.getvalue())
    tree = LocalContext(ctx)
    root = tmp_path / "rootfs"
    root.mkdir()
    warnings: list[str] = []
    req = CopyRequest(
        tree=tree,
        sources=tuple(tree.resolve("evil.tar")),
        dest="/in",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        extract_archives=True,
    )
    copy_into(root, req, warn=warnings.append)
    # absolute names and symlinks resolve inside the destination; ".." is refused
    assert sorted(os.listdir(root / "in")) == ["abs.txt", "ok.txt", "through.txt", "up"]
    assert os.listdir(root) == ["in"]
    assert sorted(os.listdir(tmp_path)) == ["ctx", "rootfs"]
    assert any("escape.txt" in w for w in warnings)
