"""RUN --mount helpers: targets, cache store, unsupported types, plan dependencies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.builder._mounts import CacheStore, mount_target, unsupported_mount
from lamina.builder._plan import make_plan
from lamina.dockerfile import parse_mount
from lamina.errors import DockerfileError, SourceLocation

LOC = SourceLocation(file="Dockerfile", line=3)


@pytest.mark.parametrize(
    ("target", "workdir", "want"),
    [
        ("/abs", "/w", "/abs"),
        ("rel", "/w", "/w/rel"),
        ("", "/w", "/w"),
        (None, "/w/x", "/w/x"),
        ("a/../b/", "/w", "/w/b"),
    ],
)
def test_mount_target(target: str | None, workdir: str, want: str) -> None:
    assert mount_target(target, workdir, LOC) == want


def test_mount_target_root_refused() -> None:
    with pytest.raises(DockerfileError):
        mount_target("/", "/w", LOC)
    with pytest.raises(DockerfileError):
        mount_target("", "/", LOC)


def test_unsupported_types() -> None:
    # secret and ssh mounts: tests/unit/builder/test_secrets.py
    for spec in ("type=bind,target=/x", "type=cache,target=/c", "type=tmpfs,target=/t"):
        assert unsupported_mount(parse_mount(spec)) is None


def test_cache_store_creates_with_mode_and_seed(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "f").write_text("seeded")
    store = CacheStore(tmp_path / "caches")
    m = parse_mount("type=cache,target=/c,mode=0700,uid=5,gid=6")
    lease = store.acquire(m, "/c", seed=seed, location=LOC)
    try:
        st = lease.data.stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o700, 5, 6)
        assert (lease.data / "f").read_text() == "seeded"
        (lease.data / "g").write_text("kept")
    finally:
        lease.release()
    again = store.acquire(m, "/c", seed=None, location=LOC)
    try:
        assert again.data == lease.data
        assert (again.data / "g").read_text() == "kept"
    finally:
        again.release()


def test_private_cache_in_use_gets_a_fresh_directory(tmp_path: Path) -> None:
    store = CacheStore(tmp_path)
    shared = parse_mount("type=cache,target=/c,sharing=locked")
    private = parse_mount("type=cache,target=/c,sharing=private")
    held = store.acquire(shared, "x", seed=None, location=LOC)
    try:
        (held.data / "f").write_text("1")
        other = store.acquire(private, "x", seed=None, location=LOC)
        assert other.data != held.data
        assert os.listdir(other.data) == []
        other.release()
        assert not other.data.exists()
    finally:
        held.release()


def test_plan_counts_mount_from_stages() -> None:
    plan = make_plan(
        "FROM scratch AS tools\nFROM scratch AS unused\nFROM scratch\n"
        "RUN --mount=from=tools,target=/t --mount=type=cache,from=img:1,target=/c true\n"
    )
    assert plan.order == (0, 2)
    assert plan.stages[2].copy_from_stages == (0,)
    assert plan.stages[2].copy_from_images == ("img:1",)
