"""Real builds with here-documents and RUN --mount (bind, tmpfs, cache)."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from lamina.errors import NotSupportedError
from tests.integration.test_build_engine import BUSYBOX, Built, make_context, run_build

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

BASE = """FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


def _ctx(tmp_path: Path, body: str, files: dict[str, bytes | str] | None = None) -> Path:
    ctx = make_context(tmp_path / "ctx", BASE + body, {**(files or {})})
    shutil.copy(BUSYBOX, ctx / "busybox")
    os.chmod(ctx / "busybox", 0o755)
    return ctx


def _all_members(built: Built) -> list[tuple[int, tarfile.TarInfo, bytes]]:
    out: list[tuple[int, tarfile.TarInfo, bytes]] = []
    for i, layer in enumerate(built.image.layers()):
        with layer.uncompressed() as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                data = b""
                if m.isfile():
                    ex = tar.extractfile(m)
                    assert ex is not None
                    data = ex.read()
                out.append((i, m, data))
    return out


def _names(built: Built, index: int) -> set[str]:
    return set(built.layer_files(index))


def test_run_heredocs(tmp_path: Path) -> None:
    ctx = _ctx(
        tmp_path,
        """FROM base
ARG NAME=world
RUN <<EOF
echo "hello $NAME" > /plain
echo second >> /plain
EOF
RUN <<'EOF'
echo "quoted $NAME" > /quoted
EOF
RUN <<EOF
#!/bin/sh
set -e
echo "script $0" > /script
EOF
RUN <<-EOF1 cat > /a && <<"EOF2" cat > /b
\tone $NAME
\tEOF1
two $NAME
EOF2
""",
    )
    built = run_build(tmp_path, ctx)
    n = len(built.image.layers())
    # base: COPY + RUN; then four RUN layers
    assert built.read_file(n - 4, "plain") == b"hello world\nsecond\n"
    # RUN ignores the quoting of the delimiter: the shell expands the body
    assert built.read_file(n - 3, "quoted") == b"quoted world\n"
    # run as a file (BuildKit: /dev/pipes/EOF; lamina mounts it elsewhere, see _mounts)
    assert built.read_file(n - 2, "script") == b"script /.lamina-pipes/EOF\n"
    assert built.read_file(n - 1, "a") == b"one world\n"
    assert built.read_file(n - 1, "b") == b"two $NAME\n"
    for i in range(n - 4, n):
        names = _names(built, i)
        assert not any(x.startswith("dev") for x in names), names
    history = [h.created_by or "" for h in built.config.history]
    assert history[-2] == "RUN |1 NAME=world /bin/sh -c /dev/pipes/EOF # buildkit"
    assert history[-3] == 'RUN |1 NAME=world /bin/sh -c echo "quoted $NAME" > /quoted\n # buildkit'
    assert history[-1].startswith("RUN |1 NAME=world /bin/sh -c <<-EOF1 cat > /a")


def test_copy_and_add_heredocs(tmp_path: Path) -> None:
    ctx = _ctx(
        tmp_path,
        """FROM base
ENV WHO=env-value
COPY <<EOF /etc/plain.txt
hi ${WHO} 'q' \\$x
EOF
COPY --chmod=0755 --chown=7:8 <<'EOF' <<X /opt/
raw ${WHO}
EOF
x
X
ADD <<-EOF /added
\ttabbed
\tEOF
""",
    )
    built = run_build(tmp_path, ctx)
    n = len(built.image.layers())
    f0 = built.layer_files(n - 3)
    assert built.read_file(n - 3, "etc/plain.txt") == b"hi env-value 'q' $x\n"
    assert f0["etc/plain.txt"].mode & 0o7777 == 0o644
    assert (f0["etc/plain.txt"].uid, f0["etc/plain.txt"].gid) == (0, 0)
    f1 = built.layer_files(n - 2)
    assert built.read_file(n - 2, "opt/EOF") == b"raw ${WHO}\n"
    assert built.read_file(n - 2, "opt/X") == b"x\n"
    assert f1["opt/EOF"].mode & 0o7777 == 0o755
    assert (f1["opt/EOF"].uid, f1["opt/EOF"].gid) == (7, 8)
    assert built.read_file(n - 1, "added") == b"tabbed\n"
    history = [h.created_by for h in built.config.history]
    assert history[-2] == "COPY --chown=7:8 --chmod=0755 <<EOF <<X /opt/ # buildkit"


def test_tmpfs_and_bind_mounts(tmp_path: Path) -> None:
    ctx = _ctx(
        tmp_path,
        """FROM base AS other
RUN echo from-stage > /stage-file
FROM base
WORKDIR /w
RUN --mount=type=tmpfs,target=/scratch/tmp,size=1m \\
    echo t > /scratch/tmp/x && grep -q tmpfs /proc/mounts && echo ok > /tmpfs-ok
RUN --mount=type=bind,source=secret.txt,target=/in/secret.txt \\
    cat /in/secret.txt > /copied
RUN --mount=target=ctx,rw touch ctx/new-file && echo changed > ctx/secret.txt \\
    && ls ctx > /listing
RUN --mount=from=other,source=/stage-file,target=/m/f cat /m/f > /from-stage
RUN --mount=target=/ro cat /ro/secret.txt > /ro-read && ! touch /ro/nope
""",
        {"secret.txt": "s3cret\n", ".dockerignore": "ignored.txt\n", "ignored.txt": "no\n"},
    )
    built = run_build(tmp_path, ctx)
    n = len(built.image.layers())
    assert _names(built, n - 5) == {"tmpfs-ok"}
    assert _names(built, n - 4) == {"copied"}
    assert built.read_file(n - 4, "copied") == b"s3cret\n"
    assert _names(built, n - 3) == {"listing"}
    listing = built.read_file(n - 3, "listing").decode().split()
    assert "new-file" in listing
    assert "secret.txt" in listing
    assert "ignored.txt" not in listing  # .dockerignore applies to the context mount
    assert (ctx / "secret.txt").read_text() == "s3cret\n"  # rw: changes discarded
    assert not (ctx / "new-file").exists()
    assert _names(built, n - 2) == {"from-stage"}
    assert built.read_file(n - 2, "from-stage") == b"from-stage\n"
    assert _names(built, n - 1) == {"ro-read"}


COUNTER = """FROM base
RUN --mount=type=cache,target=/var/cache/app \\
    n=$(cat /var/cache/app/count 2>/dev/null || echo 0); n=$((n+1)); \\
    echo $n > /var/cache/app/count; echo $n > /seen
RUN --mount=type=cache,target=/var/cache/app,sharing=locked,id=/var/cache/app \\
    cat /var/cache/app/count > /seen-again
RUN --mount=type=cache,target=/c2,ro cat /var/cache/app/count 2>/dev/null; ls /c2 > /ls-ro
"""


def test_cache_mount_survives_builds_and_never_reaches_a_layer(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, COUNTER)
    cache_dir = tmp_path / "cache-mounts"
    first = run_build(tmp_path / "b1", ctx, cache_mount_dir=cache_dir)
    n = len(first.image.layers())
    assert first.read_file(n - 3, "seen") == b"1\n"
    assert first.read_file(n - 2, "seen-again") == b"1\n"
    second = run_build(tmp_path / "b2", ctx, cache_mount_dir=cache_dir)
    assert second.read_file(n - 3, "seen") == b"2\n"
    assert second.read_file(n - 2, "seen-again") == b"2\n"
    for built in (first, second):
        assert _names(built, n - 3) == {"seen"}
        assert _names(built, n - 2) == {"seen-again"}
        assert _names(built, n - 1) == {"ls-ro"}
        for _, member, data in _all_members(built):
            assert not member.name.removeprefix("./").startswith(("var", "c2")), member.name
            assert b"count" not in member.name.encode()
            del data


def test_cache_mount_default_dir_under_kaniko_dir(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base\nRUN --mount=type=cache,target=/c echo 1 > /c/f\n")
    run_build(tmp_path, ctx)
    found = list((tmp_path / "kaniko" / "cache-mounts").glob("*/data/f"))
    assert len(found) == 1
    assert found[0].read_text() == "1\n"


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("RUN --device=/dev/fuse true", "--device"),
    ],
)
def test_refused_mounts(tmp_path: Path, line: str, what: str) -> None:
    ctx = _ctx(tmp_path, f"FROM base\n{line}\n")
    with pytest.raises(NotSupportedError) as info:
        run_build(tmp_path, ctx)
    assert what in info.value.message
    assert info.value.location is not None
    assert info.value.location.line == 5


def test_network_none(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM base\nRUN --network=none cat /proc/net/dev > /nets\n")
    built = run_build(tmp_path, ctx)
    lines = built.read_file(len(built.image.layers()) - 1, "nets").decode().splitlines()
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["lo"]


def test_cache_mount_hides_the_image_directory(tmp_path: Path) -> None:
    ctx = _ctx(
        tmp_path,
        """FROM base
RUN mkdir -p /data && echo image > /data/in-image
RUN --mount=type=cache,target=/data ls -A /data > /seen && echo c > /data/from-cache
RUN ls -A /data > /after
""",
    )
    built = run_build(tmp_path, ctx, cache_mount_dir=tmp_path / "cm")
    n = len(built.image.layers())
    assert built.read_file(n - 2, "seen") == b""
    assert _names(built, n - 2) == {"seen"}
    assert built.read_file(n - 1, "after") == b"in-image\n"
