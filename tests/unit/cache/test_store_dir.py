"""The local directory layer cache and the key document round trip."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lamina.cache import DirLayerCache, KeyInputs, SourceEntry, cache_key
from lamina.cache._keys import value_digest
from lamina.errors import ImageFormatError
from tests.unit.oci.helpers import drain, make_layer

LOG = logging.getLogger("test.cache")
TTL = timedelta(hours=336)


def _inputs(instruction: str = "RUN echo hi", **args: str) -> KeyInputs:
    return KeyInputs(
        parent="sha256:" + "b" * 64,
        instruction=instruction,
        platform="linux/amd64",
        args=args,
        sources=(
            SourceEntry(path="a", type="dir", mode=0o755, uid=1, gid=2, content=""),
            SourceEntry(
                path="a/b", type="file", mode=0o644, uid=0, gid=0, content="sha256:" + "c" * 64
            ),
        ),
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


# ---------------------------------------------------------------- key documents
def test_from_document_inverts_document() -> None:
    inputs = _inputs(VERSION="1", EMPTY="")
    back = KeyInputs.from_document(inputs.document())
    assert back.document() == inputs.document()
    assert cache_key(back) == cache_key(inputs)
    # values are kept as digests only
    assert dict(back.args) == {"VERSION": value_digest("1"), "EMPTY": value_digest("")}
    assert [s.path for s in back.sources] == ["a", "a/b"]


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[]",
        b'{"v":999,"parent":"","instruction":"","platform":"","args":[],"sources":[]}',
        b'{"v":1,"parent":"","instruction":"","platform":"","args":[["a"]],"sources":[]}',
        b'{"v":1,"parent":"","instruction":"","platform":"","args":[],"sources":[["p"]]}',
        b'{"v":1,"parent":1,"instruction":"","platform":"","args":[],"sources":[]}',
        b'{"v":1,"instruction":"","platform":"","args":[],"sources":[]}',
    ],
)
def test_from_document_rejects_malformed(doc: bytes) -> None:
    with pytest.raises(ImageFormatError, match="invalid cache key document"):
        KeyInputs.from_document(doc)


# ---------------------------------------------------------------- directory cache
def _cache(tmp_path: Path, clock: Clock | None = None) -> DirLayerCache:
    return DirLayerCache(tmp_path / "cache", TTL, LOG, clock=clock or Clock())


def test_round_trip_layer_and_empty(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    layer = make_layer(tmp_path / "src", {"hello.txt": b"hello\n"})
    cache = _cache(tmp_path)
    inputs = _inputs()
    key = cache_key(inputs)
    assert cache.lookup(key).reason == "no entry"
    cache.store(key, layer, inputs, slot="stage0/step1")
    found = cache.lookup(key)
    assert found.hit is not None
    assert found.reason == ""
    hit_layer = found.hit.layer
    assert hit_layer is not None
    assert hit_layer.digest() == layer.digest()
    assert hit_layer.diff_id() == layer.diff_id()
    assert hit_layer.media_type() == layer.media_type()
    assert hit_layer.size() == layer.size()
    with hit_layer.compressed() as f:
        assert drain(f) == layer.size()
    assert found.hit.inputs == inputs
    assert found.hit.created == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert cache.previous("stage0/step1") == inputs
    assert cache.previous("other") is None
    # the blob is stored content-addressed, away from kaniko's base-image files
    assert (tmp_path / "cache/layers/blobs/sha256" / layer.digest().hex).is_file()

    empty = _inputs("RUN true")
    cache.store(cache_key(empty), None, empty, slot="stage0/step2")
    hit = cache.lookup(cache_key(empty)).hit
    assert hit is not None
    assert hit.layer is None
    assert hit.inputs == empty


def test_expired_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    clock = Clock()
    cache = _cache(tmp_path, clock)
    inputs = _inputs()
    key = cache_key(inputs)
    cache.store(key, None, inputs, slot="s")
    clock.now += TTL
    assert cache.lookup(key).hit is not None
    clock.now += timedelta(seconds=1)
    miss = cache.lookup(key)
    assert miss.hit is None
    assert miss.reason == "expired (written 2026-01-02T03:04:05Z, ttl 336h)"
    assert not cache.entry_path(key).exists()


def test_corrupted_blob_is_a_miss_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "src").mkdir()
    layer = make_layer(tmp_path / "src", {"x": b"x" * 1000})
    cache = _cache(tmp_path)
    inputs = _inputs()
    key = cache_key(inputs)
    cache.store(key, layer, inputs, slot="s")
    blob = cache.blob_path(layer.digest())
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="test.cache"):
        miss = cache.lookup(key)
    assert miss.hit is None
    assert miss.reason.startswith("corrupted:")
    assert "treated as a miss" in caplog.text
    assert not cache.entry_path(key).exists()
    assert not blob.exists()
    # storing again repairs the entry
    cache.store(key, layer, inputs, slot="s")
    assert cache.lookup(key).hit is not None


def test_missing_blob_and_garbage_entry_are_misses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "src").mkdir()
    layer = make_layer(tmp_path / "src", {"x": b"x"})
    cache = _cache(tmp_path)
    inputs = _inputs()
    key = cache_key(inputs)
    cache.store(key, layer, inputs, slot="s")
    cache.blob_path(layer.digest()).unlink()
    with caplog.at_level(logging.WARNING, logger="test.cache"):
        assert cache.lookup(key).reason.startswith("corrupted: cannot open cached blob")
    cache.entry_path(key).write_text("{garbage")
    with caplog.at_level(logging.WARNING, logger="test.cache"):
        assert cache.lookup(key).reason.startswith("corrupted: entry")
    assert not cache.entry_path(key).exists()
    assert cache.lookup("../escape").hit is None


def test_concurrent_stores_of_the_same_key(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    layer = make_layer(tmp_path / "src", {"big": bytes(range(256)) * 4096})
    inputs = _inputs()
    key = cache_key(inputs)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                _cache(tmp_path).store(key, layer, inputs, slot="s")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    hit = _cache(tmp_path).lookup(key).hit
    assert hit is not None
    assert hit.layer is not None
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_kaniko_base_image_files_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    kaniko = root / ("sha256:" + "d" * 64)
    kaniko.write_bytes(b"tarball")
    (root / ("sha256:" + "d" * 64 + ".json")).write_bytes(b"{}")
    cache = _cache(tmp_path)
    inputs = _inputs()
    cache.store(cache_key(inputs), None, inputs, slot="s")
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["layers", kaniko.name, kaniko.name + ".json"]
    )


# ---------------------------------------------------------------- entry images
def test_entry_image_shape_and_bounded_inputs(tmp_path: Path) -> None:
    from lamina.cache._entry_image import (
        INPUTS_LABEL,
        MAX_SOURCES,
        SOURCES_LABEL,
        entry_image,
        read_entry,
    )
    from lamina.oci import mediatypes

    (tmp_path / "src").mkdir()
    layer = make_layer(tmp_path / "src", {"f": b"f"})
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    small = _inputs()
    image = entry_image("k" * 64, layer, small, when)
    assert image.media_type() == mediatypes.OCI_MANIFEST
    assert len(image.manifest().layers) == 1
    assert image.config().created == "2026-03-04T05:06:07Z"
    assert image.config().diff_ids == (layer.diff_id(),)
    shape = read_entry(image)
    assert shape.created == when
    assert shape.inputs == small
    assert shape.layer == (layer.digest(), layer.size(), layer.media_type(), layer.diff_id())

    many = KeyInputs(
        parent="p",
        instruction="COPY . /",
        platform="linux/arm64/v8",
        sources=tuple(
            SourceEntry(path=f"f{i:05d}", type="file", mode=0o644, uid=0, gid=0, content="x")
            for i in range(MAX_SOURCES * 3)
        ),
    )
    big = entry_image("k" * 64, None, many, when)
    labels = big.config().config.labels
    assert labels[SOURCES_LABEL].startswith(f"{MAX_SOURCES * 3} sha256:")
    assert len(labels[INPUTS_LABEL]) < 40_000
    assert big.config().variant == "v8"
    assert big.manifest().layers == ()
    truncated = read_entry(big)
    assert truncated.layer is None
    assert truncated.inputs is None  # a truncated list would mis-explain misses


def test_prune_removes_expired_entries_and_unused_old_blobs(tmp_path: Path) -> None:
    import os
    import time

    (tmp_path / "src").mkdir()
    kept_layer = make_layer(tmp_path / "src", {"keep": b"k"})
    old_layer = make_layer(tmp_path / "src", {"old": b"o"})
    clock = Clock()
    cache = _cache(tmp_path, clock)
    old, kept = _inputs("RUN old"), _inputs("RUN kept")
    cache.store(cache_key(old), old_layer, old, slot="a")
    clock.now += timedelta(hours=300)
    cache.store(cache_key(kept), kept_layer, kept, slot="b")
    clock.now += timedelta(hours=100)  # old is past the TTL, kept is not
    stray = cache.base / "blobs/sha256" / ("f" * 64)
    stray.write_bytes(b"young and unreferenced")
    long_ago = time.time() - 2 * 3600
    for blob in (cache.blob_path(old_layer.digest()), cache.blob_path(kept_layer.digest())):
        os.utime(blob, (long_ago, long_ago))
    assert cache.prune() == (1, 1)
    assert not cache.entry_path(cache_key(old)).exists()
    assert not cache.blob_path(old_layer.digest()).exists()
    assert cache.blob_path(kept_layer.digest()).exists()
    assert stray.exists()  # too young: a concurrent build may be about to use it
    assert cache.lookup(cache_key(kept)).hit is not None
    # close() prunes at most once a day
    os.utime(stray, (long_ago, long_ago))
    cache.close()
    assert not stray.exists()
    stray.write_bytes(b"x")
    os.utime(stray, (long_ago, long_ago))
    cache.close()
    assert stray.exists()
