"""COPY/ADD flags: symbolic --chmod, --exclude, --parents (the ./ pivot), created-dir times."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lamina.builder._copy import (
    CopyRequest,
    SymbolicMode,
    apply_chmod,
    copy_into,
    parse_chmod,
    resolve_sources,
)
from lamina.context import LocalContext
from lamina.dockerfile import parse_dockerignore
from lamina.errors import DockerfileError, NotSupportedError


@pytest.mark.parametrize(
    ("spec", "mode", "is_dir", "expected"),
    [
        ("u+x", 0o644, False, 0o744),
        ("go-w", 0o666, False, 0o644),
        ("a=r,u+w", 0o777, False, 0o644),
        ("+x", 0o644, False, 0o755),
        ("=", 0o4755, False, 0o000),
        ("u=rwX,go=rX", 0o600, False, 0o644),
        ("u=rwX,go=rX", 0o700, True, 0o755),
        ("u=rwX,go=rX", 0o710, False, 0o755),
        ("g=u", 0o640, False, 0o660),
        ("o=g", 0o750, False, 0o755),
        ("u+s,g+s", 0o755, False, 0o6755),
        ("+t", 0o777, True, 0o1777),
        ("o-t", 0o1777, True, 0o777),
        ("u+x-w", 0o644, False, 0o544),
        ("ug+rw,o=", 0o604, False, 0o660),
    ],
)
def test_symbolic_chmod(spec: str, mode: int, is_dir: bool, expected: int) -> None:
    parsed = parse_chmod(spec, None)
    assert isinstance(parsed, SymbolicMode)
    assert oct(parsed.apply(mode, is_dir=is_dir)) == oct(expected)


def test_apply_chmod_octal_symbolic_and_none() -> None:
    assert apply_chmod(None, stat.S_IFREG | 0o640, is_dir=False) == 0o640
    assert apply_chmod(0o700, 0o644, is_dir=False) == 0o700
    assert apply_chmod(parse_chmod("a+x", None), 0o644, is_dir=False) == 0o755


@pytest.mark.parametrize("bad", ["u+q", "x+r", "u+x,", "rwx", "u", "+rw+u ", "a=ug"])
def test_invalid_symbolic_chmod(bad: str) -> None:
    with pytest.raises(DockerfileError):
        parse_chmod(bad, None)


def _context(tmp_path: Path) -> LocalContext:
    ctx = tmp_path / "ctx"
    files = {
        "src/main.go": "m",
        "src/main_test.go": "t",
        "src/pkg/util.go": "u",
        "src/pkg/util_test.go": "ut",
        "src/docs/readme.md": "r",
        "home.txt": "h",
        "homer.bin": "b",
        "a/b/c.txt": "c",
        "a/b/d/e.txt": "e",
        "x/a.txt": "xa",
        "y/a.txt": "ya",
        "y/z/a.txt": "yza",
    }
    for name, data in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(data)
    os.chmod(ctx / "a", 0o750)
    os.chmod(ctx / "a" / "b", 0o711)
    return LocalContext(ctx)


def _copy(
    tmp_path: Path, tree: LocalContext, sources: list[str], **kw: object
) -> tuple[Path, set[str]]:
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    parents = bool(kw.pop("parents", False))
    found, bases = resolve_sources(tree, sources, parents=parents)
    req = CopyRequest(
        tree=tree,
        sources=tuple(found),
        dest="/dst",
        dest_is_dir=True,
        owner=(0, 0),
        chmod=None,
        bases=tuple(bases),
        parents=parents,
        **kw,  # type: ignore[arg-type]
    )
    copy_into(root, req, warn=lambda _m: None)
    out = set()
    for dirpath, _dirs, names in os.walk(root / "dst"):
        for n in names:
            out.add(str(Path(dirpath, n).relative_to(root / "dst")))
    return root, out


def test_exclude_below_a_directory_source(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    rules = parse_dockerignore("**/*_test.go\ndocs\n")
    _, files = _copy(tmp_path, tree, ["src"], excludes=rules)
    assert files == {"main.go", "pkg/util.go"}


def test_exclude_reinclusion_and_anchoring(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    # patterns are relative to the source: "*_test.go" only at its top level
    rules = parse_dockerignore("*_test.go\npkg\n!pkg/util_test.go\n")
    _, files = _copy(tmp_path, tree, ["src"], excludes=rules)
    assert files == {"main.go", "docs/readme.md", "pkg/util_test.go"}


def test_exclude_applies_to_wildcard_matches_but_not_literal_sources(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    rules = parse_dockerignore("*.txt\n")
    _, files = _copy(tmp_path, tree, ["hom*"], excludes=rules)
    assert files == {"homer.bin"}
    _, files = _copy(tmp_path / "2", tree, ["home.txt"], excludes=rules)
    assert files == {"home.txt"}
    rules = parse_dockerignore("*_test.go\n")
    _, files = _copy(tmp_path / "3", tree, ["src/*.go"], excludes=rules)
    assert files == {"main.go"}


def test_parents_keep_the_path_and_pivot(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    root, files = _copy(tmp_path, tree, ["a/b/c.txt", "./a/./b/d/e.txt"], parents=True)
    assert files == {"a/b/c.txt", "b/d/e.txt"}
    # kept parents carry the source directories' modes
    assert stat.S_IMODE(os.stat(root / "dst/a").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(root / "dst/a/b").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(root / "dst/b").st_mode) == 0o711


def test_parents_through_a_symlinked_directory_read_no_host_directory(tmp_path: Path) -> None:
    """``a/b/l -> /`` (the tree's root): the kept parents' metadata comes from the
    tree's own directories, never from the host directories above the tree."""
    outer = tmp_path / "outer"
    ctx = outer / "ctx"
    (ctx / "a/b").mkdir(parents=True)
    (ctx / "f").write_text("f")
    (ctx / "a/b/l").symlink_to("/")
    os.chmod(ctx / "a", 0o750)
    os.chmod(ctx / "a/b", 0o711)
    os.chmod(outer, 0o713)  # a host directory the tree's walk up would reach
    os.chmod(tmp_path, 0o705)
    root, files = _copy(tmp_path, LocalContext(ctx), ["a/b/l/f"], parents=True)
    assert files == {"a/b/l/f"}
    assert stat.S_IMODE(os.stat(root / "dst/a").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(root / "dst/a/b").st_mode) == 0o711
    assert stat.S_IMODE(os.stat(root / "dst/a/b/l").st_mode) == stat.S_IMODE(ctx.stat().st_mode)


def test_parents_with_globs_double_star_and_directories(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    _, files = _copy(tmp_path / "1", tree, ["*/a.txt"], parents=True)
    assert files == {"x/a.txt", "y/a.txt"}
    _, files = _copy(tmp_path / "2", tree, ["**/a.txt"], parents=True)
    assert files == {"x/a.txt", "y/a.txt", "y/z/a.txt"}
    _, files = _copy(tmp_path / "3", tree, ["./y/./**/a.txt"], parents=True)
    assert files == {"a.txt", "z/a.txt"}
    _, files = _copy(tmp_path / "4", tree, ["a/b"], parents=True)
    assert files == {"a/b/c.txt", "a/b/d/e.txt"}
    rules = parse_dockerignore("a/b/d\n")
    _, files = _copy(tmp_path / "5", tree, ["a"], parents=True, excludes=rules)
    assert files == {"a/b/c.txt"}


def test_parents_refuses_wildcards_before_the_pivot(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    with pytest.raises(NotSupportedError):
        resolve_sources(tree, ["*/./a.txt"], parents=True)


def test_resolve_sources_gives_wildcard_bases(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    found, bases = resolve_sources(tree, ["src/*.go", "home.txt", "./a/./b/c.txt"])
    assert [s.path for s in found] == ["src/main.go", "src/main_test.go", "home.txt", "a/b/c.txt"]
    assert bases == ["src", "src", None, None]
    found, bases = resolve_sources(tree, ["./a/./b/c.txt"], parents=True)
    assert bases == ["a"]


def test_created_dirs_get_the_fixed_mtime(tmp_path: Path) -> None:
    tree = _context(tmp_path)
    root, _ = _copy(tmp_path, tree, ["home.txt"], created_dir_mtime=12345)
    assert os.stat(root / "dst").st_mtime == 12345
    assert os.stat(root / "dst" / "home.txt").st_mtime != 12345
