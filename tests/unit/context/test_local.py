"""LocalContext: source resolution, globs, .dockerignore, symlinks, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.context import LocalContext, glob_regex, has_glob
from lamina.dockerfile import parse_dockerignore
from lamina.errors import ContextError, SourceLocation

LOC = SourceLocation(file="Dockerfile", line=7, text="COPY x /")


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a")
    (root / "src" / "b.txt").write_text("b")
    (root / "src" / "pkg" / "c.py").write_text("c")
    (root / "file[1].txt").write_text("bracket")
    (root / "secret.key").write_text("k")
    (root / "logs").mkdir()
    (root / "logs" / "x.log").write_text("log")
    (root / "logs" / "keep.log").write_text("keep")
    os.symlink("src/a.py", root / "link.py")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("/src", root / "srcdir")
    (tmp_path / "outside.txt").write_text("outside")
    return root


def test_literal_file_and_directory(ctx_dir: Path) -> None:
    ctx = LocalContext(ctx_dir)
    [f] = ctx.resolve("src/a.py", location=LOC)
    assert (f.path, f.kind) == ("src/a.py", "file")
    [d] = ctx.resolve("src/", location=LOC)
    assert (d.path, d.kind) == ("src", "dir")
    [root] = ctx.resolve(".", location=LOC)
    assert root.path == ""
    assert root.kind == "dir"
    # a leading slash is relative to the context root
    [g] = ctx.resolve("/src/b.txt", location=LOC)
    assert g.host == ctx_dir / "src" / "b.txt"


def test_missing_source_names_it_and_the_line(ctx_dir: Path) -> None:
    ctx = LocalContext(ctx_dir)
    with pytest.raises(ContextError) as info:
        ctx.resolve("nope.txt", location=LOC)
    assert "nope.txt" in str(info.value)
    assert info.value.location is LOC
    assert "Dockerfile:7" in str(info.value)


def test_outside_the_context_is_refused(ctx_dir: Path) -> None:
    ctx = LocalContext(ctx_dir)
    with pytest.raises(ContextError, match="outside"):
        ctx.resolve("../outside.txt", location=LOC)


def test_symlink_source_is_followed_inside_and_never_out(ctx_dir: Path) -> None:
    ctx = LocalContext(ctx_dir)
    # as BuildKit: a source that is a symlink is followed when it leads into the context
    [link] = ctx.resolve("link.py", location=LOC)
    assert (link.kind, link.path) == ("file", "link.py")
    assert link.host == ctx_dir / "src" / "a.py"
    # /etc/passwd resolves to <context>/etc/passwd, which does not exist: copied as a link
    [abs_link] = ctx.resolve("abs-link", location=LOC)
    assert abs_link.kind == "symlink"
    assert abs_link.host == ctx_dir / "abs-link"
    # a symlinked directory along the path resolves inside the context root
    [via] = ctx.resolve("srcdir/a.py", location=LOC)
    assert via.host == ctx_dir / "src" / "a.py"


def test_globs_match_per_segment(ctx_dir: Path) -> None:
    ctx = LocalContext(ctx_dir)
    assert [s.path for s in ctx.resolve("src/*.py")] == ["src/a.py"]
    # srcdir -> /src is followed inside the context root
    assert [s.path for s in ctx.resolve("*/*.py")] == ["src/a.py", "srcdir/a.py"]
    assert [s.path for s in ctx.resolve("src/?.*")] == ["src/a.py", "src/b.txt"]
    assert [s.path for s in ctx.resolve("file[[]1].txt")] == ["file[1].txt"]
    assert ctx.resolve("*.nothing") == []


def test_dockerignore_hides_sources_and_walk_entries(ctx_dir: Path) -> None:
    rules = parse_dockerignore("*.key\nlogs\n!logs/keep.log\nsrc/**/*.py\n")
    ctx = LocalContext(ctx_dir, rules)
    with pytest.raises(ContextError, match="dockerignore"):
        ctx.resolve("secret.key", location=LOC)
    assert [s.path for s in ctx.resolve("*")] == [
        "abs-link",
        "file[1].txt",
        "link.py",
        "src",
        "srcdir",
    ]
    [src] = ctx.resolve("src")
    assert sorted(e.rel for e in ctx.walk(src)) == ["b.txt", "pkg"]
    [root] = ctx.resolve(".")
    rels = {e.rel for e in ctx.walk(root)}
    assert "logs/keep.log" in rels
    assert "logs/x.log" not in rels
    assert "secret.key" not in rels


def test_open_reads_dockerignore(ctx_dir: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("secret.key\n")
    ctx = LocalContext.open(ctx_dir)
    assert ctx.is_ignored("secret.key")
    assert not ctx.is_ignored("src/a.py")
    # <Dockerfile>.dockerignore wins over the root file
    df = ctx_dir / "app.Dockerfile"
    df.write_text("FROM scratch\n")
    (ctx_dir / "app.Dockerfile.dockerignore").write_text("src\n")
    ctx2 = LocalContext.open(ctx_dir, dockerfile=df)
    assert ctx2.is_ignored("src/a.py")
    assert not ctx2.is_ignored("secret.key")


def test_open_rejects_a_missing_context(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not a directory"):
        LocalContext.open(tmp_path / "missing")


def test_glob_regex() -> None:
    assert has_glob("a*")
    assert has_glob("a[b]")
    assert not has_glob("plain/path")
    assert glob_regex("*.py") == "[^/]*\\.py"
    with pytest.raises(ValueError, match="class"):
        glob_regex("[abc")
