"""A persistent insertion-ordered mapping: each update is a new version in O(1).

A stage's scope (its ENV, its ARGs) changes at every ``ENV``/``ARG`` while every earlier
version must stay readable (the builder keeps scopes to restore after a look-ahead).
Copying a dict per step made a Dockerfile of 100k ``ENV`` lines quadratic. Here all
versions share one dict (Baker's rerooting trick): the version read last holds it, every
other version holds the difference to its neighbour. Reading the current version, or
updating it, costs O(1) per key; reading an older version first moves the dict there
(O(number of changes between the two)), so a chain of steps stays linear.

Order is the dict's insertion order: setting an existing key keeps its place, a new
key goes last, as BuildKit keeps the image config ``Env`` list.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["PMap"]

V = TypeVar("V")
_MISSING: object = object()


class _Shared:
    """What all versions of one map share: the dict and a lock."""

    __slots__ = ("data", "lock")

    def __init__(self, data: dict[str, object]) -> None:
        self.data = data
        self.lock = threading.Lock()


class PMap(Mapping[str, V], Generic[V]):
    """One version of a persistent ``str -> V`` mapping (immutable to its readers)."""

    __slots__ = ("_diff", "_next", "_shared")

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        self._shared = _Shared(dict(items))
        #: None: this version holds the shared dict; else ops that turn ``_next``'s
        #: contents into this version's (``(key, _MISSING)`` deletes the key)
        self._diff: list[tuple[str, object]] | None = None
        self._next: PMap[V] | None = None

    def _reroot(self) -> dict[str, object]:
        """Make this version the holder of the shared dict (caller holds the lock)."""
        if self._diff is None:
            return self._shared.data
        path: list[PMap[V]] = []
        node: PMap[V] | None = self
        while node is not None and node._diff is not None:
            path.append(node)
            node = node._next
        assert node is not None
        data = self._shared.data
        holder = node
        for version in reversed(path):  # nearest to the holder first
            ops = version._diff
            assert ops is not None
            undo: list[tuple[str, object]] = []
            for key, value in ops:
                undo.append((key, data.get(key, _MISSING)))
                if value is _MISSING:
                    del data[key]
                else:
                    data[key] = value
            undo.reverse()
            holder._diff, holder._next = undo, version
            version._diff, version._next = None, None
            holder = version
        return data

    def set_many(self, pairs: Iterable[tuple[str, V]]) -> PMap[V]:
        """A new version with ``pairs`` set (in order); this version is unchanged."""
        with self._shared.lock:
            data = self._reroot()
            undo: list[tuple[str, object]] = []
            for key, value in pairs:
                undo.append((key, data.get(key, _MISSING)))
                data[key] = value
            new: PMap[V] = PMap.__new__(PMap)
            new._shared, new._diff, new._next = self._shared, None, None
            undo.reverse()
            self._diff, self._next = undo, new
            return new

    def __getitem__(self, key: str) -> V:
        with self._shared.lock:
            value = self._reroot().get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def get(self, key: str, default: object = None) -> V | None:  # type: ignore[override]
        with self._shared.lock:
            value = self._reroot().get(key, _MISSING)
        return default if value is _MISSING else value  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        with self._shared.lock:
            return key in self._reroot()

    def __len__(self) -> int:
        with self._shared.lock:
            return len(self._reroot())

    def items_list(self) -> list[tuple[str, V]]:
        """The pairs in order (a snapshot)."""
        with self._shared.lock:
            return list(self._reroot().items())  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items_list()])

    def __repr__(self) -> str:
        return f"PMap({dict(self.items_list())!r})"
