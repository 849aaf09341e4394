"""Cache keys are a pure, stable function of explicit inputs; misses are explained."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lamina.cache import KeyInputs, cache_key, explain_miss, hash_sources


def _tree(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app/main.py").write_text("print('hi')\n")
    (root / "app/util.py").write_text("X = 1\n")
    (root / "app/link").symlink_to("main.py")
    for p in (root / "app", root / "app/main.py", root / "app/util.py"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def _inputs(root: Path, **over: object) -> KeyInputs:
    base: dict[str, object] = {
        "parent": "sha256:" + "a" * 64,
        "instruction": "COPY app /srv/app",
        "platform": "linux/amd64",
        "args": {"VERSION": "1"},
        "sources": hash_sources(root, ["app"]),
    }
    base.update(over)
    return KeyInputs(**base)  # type: ignore[arg-type]


def test_same_inputs_same_key_across_checkouts_and_mtimes(tmp_path: Path) -> None:
    a = _tree(tmp_path / "one")
    b = _tree(tmp_path / "elsewhere" / "two")
    os.utime(b / "app/main.py", (1, 1))
    assert cache_key(_inputs(a)) == cache_key(_inputs(b))


def test_key_is_stable_across_processes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    here = cache_key(_inputs(root))
    code = (
        "import sys; from pathlib import Path; from lamina.cache import KeyInputs, cache_key, "
        "hash_sources; r = Path(sys.argv[1]); print(cache_key(KeyInputs(parent='sha256:' + "
        "'a' * 64, instruction='COPY app /srv/app', platform='linux/amd64', "
        "args={'VERSION': '1'}, sources=hash_sources(r, ['app']))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert out == here
    assert len(here) == 64


def test_each_input_changes_the_key(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    key = cache_key(_inputs(root))
    assert cache_key(_inputs(root, parent="sha256:" + "b" * 64)) != key
    assert cache_key(_inputs(root, instruction="COPY app /srv/other")) != key
    assert cache_key(_inputs(root, platform="linux/arm64")) != key
    assert cache_key(_inputs(root, args={"VERSION": "2"})) != key
    # renaming a file changes the key even though the contents are the same
    renamed = _tree(tmp_path / "renamed")
    (renamed / "app/util.py").rename(renamed / "app/helpers.py")
    assert cache_key(_inputs(renamed)) != key
    # so does a mode change
    moded = _tree(tmp_path / "moded")
    (moded / "app/util.py").chmod(0o600)
    assert cache_key(_inputs(moded)) != key


def test_explanations_name_the_input(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    before = _inputs(root)
    (root / "app/main.py").write_text("print('changed')\n")
    assert explain_miss(before, _inputs(root)) == "source file app/main.py changed"
    changed_arg = explain_miss(_inputs(root), _inputs(root, args={"VERSION": "2"}))
    assert changed_arg == "build arg VERSION changed"
    shutil.copy(root / "app/util.py", root / "app/new.py")
    assert "source file app/new.py was added" in explain_miss(before, _inputs(root))
    assert explain_miss(before, before).startswith("no input differs")


def test_only_the_args_given_enter_the_key(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx")
    # the builder passes only the args a step uses, so an unused --build-arg is simply
    # absent here; args given in another order give the same key
    two = {"A": "1", "B": "2"}
    assert cache_key(_inputs(root, args=two)) == cache_key(
        _inputs(root, args=dict(reversed(list(two.items()))))
    )
    assert cache_key(_inputs(root, args={})) != cache_key(_inputs(root))
