"""Cache writes on a worker thread: they never slow down or fail the build."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import NamedTuple

from lamina.cache._keys import KeyInputs
from lamina.cache._store import CacheLookup, LayerCache
from lamina.oci import Layer

__all__ = ["BackgroundCache"]


class _Write(NamedTuple):
    """One queued store."""

    key: str
    layer: Layer | None
    inputs: KeyInputs
    slot: str


class BackgroundCache:
    """Wraps a cache so that :meth:`store` only queues the write.

    One worker thread performs the writes in order (the queue holds at most
    ``max_pending``; a full queue makes :meth:`store` wait, bounding the layers
    kept alive). A failed write is logged as a warning and counted in
    :attr:`failed`. Lookups run in the caller's thread.

    The layers passed to :meth:`store` must stay readable until :meth:`close`
    returns. :meth:`close` waits up to ``close_timeout`` seconds for pending
    writes, logs how many failed or were abandoned, then closes the wrapped cache.
    """

    def __init__(
        self,
        cache: LayerCache,
        log: logging.Logger,
        *,
        max_pending: int = 8,
        close_timeout: float = 600.0,
    ) -> None:
        self.inner = cache
        self.description = cache.description
        self._log = log
        self._timeout = close_timeout
        self._queue: queue.Queue[_Write | None] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._closed = False
        #: writes that raised
        self.failed = 0
        #: writes that completed
        self.stored = 0
        #: writes still queued when close() gave up waiting
        self.abandoned = 0
        self._worker = threading.Thread(target=self._run, name="lamina-cache-writer", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(item)
            finally:
                self._queue.task_done()

    def _write(self, item: _Write) -> None:
        try:
            self.inner.store(item.key, item.layer, item.inputs, slot=item.slot)
        except Exception as exc:  # a cache write never fails the build
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self._log.warning(
                "layer cache %s: storing key %s failed: %s (the build goes on)",
                self.description,
                item.key,
                message,
            )
            with self._lock:
                self.failed += 1
        else:
            with self._lock:
                self.stored += 1

    # ------------------------------------------------------------------ LayerCache
    def lookup(self, key: str) -> CacheLookup:
        return self.inner.lookup(key)

    def store(self, key: str, layer: Layer | None, inputs: KeyInputs, *, slot: str) -> None:
        with self._lock:
            closed = self._closed
        if closed:
            self._log.warning(
                "layer cache %s: key %s not stored: the cache is closed", self.description, key
            )
            return
        self._queue.put(_Write(key, layer, inputs, slot))

    def previous(self, slot: str) -> KeyInputs | None:
        return self.inner.previous(slot)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + self._timeout
        sent = False
        while not sent and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                sent = True
            except queue.Full:
                continue
        self._worker.join(max(0.0, deadline - time.monotonic()))
        if self._worker.is_alive():
            with self._lock:
                # the write in progress plus those queued (not the stop marker)
                self.abandoned = self._queue.qsize() - (1 if sent else 0) + 1
            self._log.warning(
                "layer cache %s: gave up waiting for %d cache write(s) after %.0fs",
                self.description,
                self.abandoned,
                self._timeout,
            )
        if self.failed:
            self._log.warning(
                "layer cache %s: %d of %d cache write(s) failed",
                self.description,
                self.failed,
                self.failed + self.stored,
            )
        if not self._worker.is_alive():
            self.inner.close()
