"""BackgroundCache, the composite and read-only tiers, and open_layer_cache's rules."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lamina.cache import (
    BackgroundCache,
    CacheHit,
    CacheLookup,
    CompositeLayerCache,
    DirLayerCache,
    KeyInputs,
    OCILayoutLayerCache,
    ReadOnlyLayerCache,
    RegistryLayerCache,
    open_layer_cache,
)
from lamina.errors import RegistryError, UsageError
from lamina.oci import Layer, Reference
from lamina.registry import RegistryClient

LOG = logging.getLogger("test.cachewrap")
TTL = timedelta(hours=1)
INPUTS = KeyInputs(parent="p", instruction="RUN x", platform="linux/amd64")


class FakeCache:
    """In-memory LayerCache; ``fail`` makes stores raise, ``gate`` makes them wait."""

    def __init__(self, name: str = "fake", *, fail: bool = False) -> None:
        self.description = name
        self.fail = fail
        self.gate: threading.Event | None = None
        self.entries: dict[str, KeyInputs] = {}
        self.slots: dict[str, KeyInputs] = {}
        self.closed = False

    def lookup(self, key: str) -> CacheLookup:
        if key not in self.entries:
            return CacheLookup(hit=None, reason="no entry")
        hit = CacheHit(
            key=key,
            layer=None,
            inputs=self.entries[key],
            created=datetime(2026, 1, 1, tzinfo=UTC),
            source=self.description,
        )
        return CacheLookup(hit=hit)

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RegistryError(f"{self.description} refuses {key}")
        self.entries[key] = inputs
        self.slots[slot] = inputs

    def previous(self, slot: str) -> KeyInputs | None:
        return self.slots.get(slot)

    def close(self) -> None:
        self.closed = True


def test_background_writes_happen_off_thread_and_close_waits() -> None:
    inner = FakeCache()
    inner.gate = threading.Event()
    bg = BackgroundCache(inner, LOG)
    bg.store("k1", None, INPUTS, slot="s")  # returns while the worker is blocked
    assert "k1" not in inner.entries
    inner.gate.set()
    bg.close()
    assert inner.entries == {"k1": INPUTS}
    assert (bg.stored, bg.failed, bg.abandoned) == (1, 0, 0)
    assert inner.closed


def test_background_failures_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    bg = BackgroundCache(FakeCache("remote", fail=True), LOG)
    with caplog.at_level(logging.WARNING, logger="test.cachewrap"):
        for i in range(3):
            bg.store(f"k{i}", None, INPUTS, slot="s")
        bg.close()
    assert bg.failed == 3
    assert "storing key k0 failed: remote refuses k0 (the build goes on)" in caplog.text
    assert "3 of 3 cache write(s) failed" in caplog.text
    with caplog.at_level(logging.WARNING, logger="test.cachewrap"):
        bg.store("late", None, INPUTS, slot="s")
    assert "cache is closed" in caplog.text


def test_background_close_gives_up_after_timeout(caplog: pytest.LogCaptureFixture) -> None:
    inner = FakeCache()
    inner.gate = threading.Event()
    bg = BackgroundCache(inner, LOG, close_timeout=0.2)
    bg.store("slow", None, INPUTS, slot="s")
    bg.store("queued", None, INPUTS, slot="s")
    with caplog.at_level(logging.WARNING, logger="test.cachewrap"):
        bg.close()
    assert bg.abandoned == 2
    assert "gave up waiting for 2 cache write(s)" in caplog.text
    assert not inner.closed
    inner.gate.set()


def test_composite_prefers_local_and_stores_to_both() -> None:
    local, remote = FakeCache("local"), FakeCache("remote")
    both = CompositeLayerCache(local, remote, LOG)
    remote.entries["r"] = INPUTS
    hit = both.lookup("r").hit
    assert hit is not None
    assert hit.source == "remote"
    assert local.entries == {"r": INPUTS}  # written through
    assert both.lookup("r").hit is not None
    assert both.lookup("nothing").reason == "no entry"
    both.store("k", None, INPUTS, slot="s")
    assert "k" in local.entries
    assert "k" in remote.entries
    assert both.previous("s") == INPUTS


def test_composite_store_tries_both_then_raises() -> None:
    local, remote = FakeCache("local", fail=True), FakeCache("remote")
    both = CompositeLayerCache(local, remote, LOG)
    with pytest.raises(RegistryError, match="local refuses k"):
        both.store("k", None, INPUTS, slot="s")
    assert "k" in remote.entries


def test_read_only_skips_stores() -> None:
    inner = FakeCache()
    ro = ReadOnlyLayerCache(inner, LOG)
    ro.store("k", None, INPUTS, slot="s")
    assert inner.entries == {}
    assert ro.lookup("k").reason == "no entry"


def _open(tmp_path: Path, **over: object) -> object:
    args: dict[str, object] = {
        "enabled": True,
        "cache_repo": "",
        "cache_dir": None,
        "cache_dir_explicit": False,
        "ttl": TTL,
        "no_push_cache": False,
        "destinations": [Reference.parse("reg.example:5000/team/app:v1")],
        "registry_client": RegistryClient(docker_config_dir=None),
        "work_dir": tmp_path / "work",
        "log": LOG,
    }
    args.update(over)
    return open_layer_cache(**args)  # type: ignore[arg-type]


def test_open_layer_cache_rules(tmp_path: Path) -> None:
    assert _open(tmp_path, enabled=False) is None
    default = _open(tmp_path)
    assert isinstance(default, RegistryLayerCache)
    assert default.description == "registry reg.example:5000/team/app/cache"
    explicit = _open(tmp_path, cache_repo="other.example/x/cache")
    assert isinstance(explicit, RegistryLayerCache)
    assert str(explicit.repo) == "other.example/x/cache"
    oci = _open(tmp_path, cache_repo=f"oci:{tmp_path}/layout")
    assert isinstance(oci, OCILayoutLayerCache)
    assert _open(tmp_path, destinations=[]) is None
    ro = _open(tmp_path, no_push_cache=True)
    assert isinstance(ro, ReadOnlyLayerCache)
    # --cache-dir: used when explicit, or when the default directory exists
    assert isinstance(_open(tmp_path, cache_dir=tmp_path / "missing"), RegistryLayerCache)
    both = _open(tmp_path, cache_dir=tmp_path / "missing", cache_dir_explicit=True)
    assert isinstance(both, CompositeLayerCache)
    assert isinstance(both.local, DirLayerCache)
    (tmp_path / "exists").mkdir()
    local_only = _open(tmp_path, cache_dir=tmp_path / "exists", destinations=[])
    assert isinstance(local_only, DirLayerCache)
    with pytest.raises(UsageError, match="--cache-repo=oci: needs a directory"):
        _open(tmp_path, cache_repo="oci:")
    with pytest.raises(UsageError, match="--cache-repo=bad repo!"):
        _open(tmp_path, cache_repo="bad repo!")
