"""LazyLayer: fetched once on first read, verified, failures remembered per key."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from lamina.cache import CorruptedCacheError, LazyLayer, fetch_all
from lamina.errors import RegistryError
from lamina.oci import Digest, Layer


class Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.opened = 0

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        self.opened += 1
        yield io.BytesIO(self.data)


def _lazy(tmp_path: Path, key: str, good: bytes, served: bytes) -> tuple[LazyLayer, Source]:
    src = Source(served)
    layer = LazyLayer(
        key=key,
        open_blob=src.open,
        dest=tmp_path / f"blob-{key}",
        digest=Digest.of_bytes(good),
        size=len(good),
        media_type="application/vnd.oci.image.layer.v1.tar",
        diff_id=Digest.of_bytes(good),
        what=f"cache layer {key}",
    )
    return layer, src


def test_fetched_once_then_read_from_the_file(tmp_path: Path) -> None:
    data = b"layer bytes" * 100
    layer, src = _lazy(tmp_path, "k1", data, data)
    seen: list[Layer] = []
    layer.after_fetch(seen.append)
    assert not layer.fetched
    assert layer.verified_file() is None
    assert layer.size() == len(data)  # metadata needs no download
    assert src.opened == 0
    for _ in range(2):
        with layer.compressed() as f:
            assert f.read() == data
    assert src.opened == 1
    assert layer.verified_file() == tmp_path / "blob-k1"
    assert len(seen) == 1
    late: list[Layer] = []
    layer.after_fetch(late.append)  # already fetched: called at once
    assert len(late) == 1


def test_corruption_names_every_bad_key_and_is_remembered(tmp_path: Path) -> None:
    good = b"good" * 50
    ok, _ = _lazy(tmp_path, "ok", good, good)
    bad1, src1 = _lazy(tmp_path, "bad1", good, b"evil" * 50)
    bad2, _ = _lazy(tmp_path, "bad2", good + b"x", good)  # wrong size
    with pytest.raises(CorruptedCacheError) as info:
        fetch_all([ok, bad1, bad2])
    assert sorted(info.value.keys) == ["bad1", "bad2"]
    assert ok.fetched
    assert not (tmp_path / "blob-bad1").exists()
    with pytest.raises(CorruptedCacheError), bad1.uncompressed():
        pass
    assert src1.opened == 1  # not downloaded again


def test_wrong_bytes_are_corrupted_missing_bytes_unreadable(tmp_path: Path) -> None:
    good = b"good" * 50
    bad, _ = _lazy(tmp_path, "bad", good, b"evil" * 50)
    with pytest.raises(CorruptedCacheError) as info:
        bad.fetch()
    assert info.value.message.startswith("corrupted: cache layer bad: ")

    def unreachable() -> contextlib.AbstractContextManager[BinaryIO]:
        raise RegistryError("cannot connect to registry.test: connection refused")

    gone = LazyLayer(
        key="gone",
        open_blob=unreachable,
        dest=tmp_path / "blob-gone",
        digest=Digest.of_bytes(good),
        size=len(good),
        media_type="application/vnd.oci.image.layer.v1.tar",
        diff_id=Digest.of_bytes(good),
        what="cache layer gone",
    )
    with pytest.raises(CorruptedCacheError) as info:
        gone.fetch()
    assert info.value.message == (
        "unreadable: cache layer gone: cannot connect to registry.test: connection refused"
    )
    assert info.value.keys == ("gone",)
