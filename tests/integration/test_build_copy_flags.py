"""Real builds with COPY/ADD --exclude, COPY --parents, --link and symbolic --chmod."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_build_engine import BUSYBOX, make_context, run_build

pytestmark = [pytest.mark.root, pytest.mark.namespaces]

if os.geteuid() != 0 or not BUSYBOX.exists():  # pragma: no cover - environment guard
    pytest.skip("builds need root and /bin/busybox", allow_module_level=True)


def test_exclude_parents_and_symbolic_chmod(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        "FROM scratch\n"
        "COPY --exclude=**/*.log --exclude=cache src /app/\n"
        "ADD --exclude=*.tmp hom* /home/\n"
        "COPY --parents --chmod=u=rwX,go=rX ./proj/./pkg/*/mod.txt /parents/\n"
        "COPY --chmod=+x --chown=5:6 run.sh /bin/run\n",
        {
            "src/keep.txt": "k",
            "src/sub/drop.log": "d",
            "src/sub/keep.md": "m",
            "src/cache/x": "x",
            "home.txt": "h",
            "home.tmp": "t",
            "proj/pkg/a/mod.txt": "a",
            "proj/pkg/b/mod.txt": "b",
            "proj/pkg/b/other.txt": "o",
            "run.sh": "#!/bin/sh\n",
        },
    )
    os.chmod(ctx / "proj/pkg/a/mod.txt", 0o600)
    os.chmod(ctx / "proj/pkg/b", 0o700)
    os.chmod(ctx / "run.sh", 0o640)
    built = run_build(tmp_path, ctx)
    app = built.layer_files(0)
    assert {n for n, m in app.items() if m.isfile()} == {"app/keep.txt", "app/sub/keep.md"}
    home = built.layer_files(1)
    assert {n for n, m in home.items() if m.isfile()} == {"home/home.txt"}
    parents = built.layer_files(2)
    assert {n for n, m in parents.items() if m.isfile()} == {
        "parents/pkg/a/mod.txt",
        "parents/pkg/b/mod.txt",
    }
    assert parents["parents/pkg/a/mod.txt"].mode == 0o644  # u=rwX,go=rX on 0600
    assert parents["parents/pkg/b"].mode == 0o755  # X on a directory (0700 in the context)
    run = built.layer_files(3)["bin/run"]
    assert (run.mode, run.uid, run.gid) == (0o751, 5, 6)
    history = [h.created_by for h in built.config.history]
    assert history[2] == (
        "COPY --parents --chmod=u=rwX,go=rX ./proj/./pkg/*/mod.txt /parents/ # buildkit"
    )
    assert history[0] == "COPY src /app/ # buildkit"


def _link_context(root: Path, first: str) -> Path:
    ctx = make_context(
        root,
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY first.txt /first.txt\n"
        "COPY --parents tmp /\n"
        "COPY --link f.txt /tmp/sub/f.txt\n"
        'RUN ["/bin/busybox", "cp", "/tmp/sub/f.txt", "/seen"]\n',
        {"busybox": BUSYBOX.read_bytes(), "first.txt": first, "f.txt": "linked", "tmp/.k": ""},
    )
    os.chmod(ctx / "busybox", 0o755)
    os.chmod(ctx / "tmp", 0o1777)
    for name in ("f.txt", "tmp/.k", "tmp", "busybox"):
        os.utime(ctx / name, (1_600_000_000, 1_600_000_000))
    return ctx


def test_link_layer_is_independent_and_visible_to_later_steps(tmp_path: Path) -> None:
    one = run_build(tmp_path / "one", _link_context(tmp_path / "ctx1", "first"))
    two = run_build(tmp_path / "two", _link_context(tmp_path / "ctx2", "changed"))
    assert one.image.layers()[1].digest() != two.image.layers()[1].digest()
    # the --link layer does not depend on what came before: same digest
    assert one.image.layers()[3].digest() == two.image.layers()[3].digest()
    layer = one.layer_files(3)
    assert set(layer) == {"tmp", "tmp/sub", "tmp/sub/f.txt"}
    tmp = layer["tmp"]
    # BuildKit's default metadata for the parents, not the image's 1777 /tmp
    assert (tmp.mode, tmp.uid, tmp.gid, tmp.mtime) == (0o755, 0, 0, 0)
    assert one.layer_files(2)["tmp"].mode == 0o1777
    # merged into the rootfs: RUN sees the file
    assert one.read_file(4, "seen") == b"linked"


def test_link_with_chmod_is_a_plain_copy(tmp_path: Path) -> None:
    ctx = make_context(
        tmp_path / "ctx",
        "FROM scratch\nCOPY --parents tmp /\nCOPY --link --chmod=go-rwx f.txt /tmp/f.txt\n",
        {"f.txt": "x", "tmp/.k": ""},
    )
    os.chmod(ctx / "tmp", 0o1777)
    os.chmod(ctx / "f.txt", 0o644)
    built = run_build(tmp_path, ctx)
    layer = built.layer_files(1)
    assert layer["tmp/f.txt"].mode == 0o600
    assert layer["tmp"].mode == 0o1777  # the existing directory is kept
