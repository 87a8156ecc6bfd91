"""Sentence embeddings as a feature, behind a protocol so the drift code never sees torch.

`load_embedder` turns semantic drift on only where the `embeddings` extra is
installed; without it the daemon says so once and carries on with the other
features. Prompts repeat (templates, retries, the same question asked by many
users), so the model sits behind an LRU cache keyed by the text.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    dimension: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """One row of `dimension` floats per text, in input order."""
        ...


def load_embedder(batch_size: int = 32, max_length: int = 128, threads: int | None = None,
                  logger: logging.Logger | None = None) -> Embedder | None:
    """A cached all-MiniLM-L6-v2 embedder, or None (with one warning) where the
    model or its libraries are not installed."""
    from monitor.eval import embedding  # the torch boundary; imports torch only when loading

    ok, reason = embedding.available()
    if not ok:
        (logger or log).warning("semantic drift is off: %s", reason)
        return None
    return CachedEmbedder(embedding.SentenceEmbedder(batch_size=batch_size, max_length=max_length,
                                                     threads=threads))


class CachedEmbedder:
    """An Embedder that remembers the `capacity` most recently used vectors.

    `hits` counts rows served from the cache, `misses` the texts sent to the
    inner embedder; rows come back as float32.
    """

    def __init__(self, inner: Embedder, capacity: int = 50_000):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 vector, got {capacity}")
        self.inner = inner
        self.capacity = capacity
        self.dimension: int = inner.dimension
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Rows in input order; the inner embedder sees each unseen text once, in one call."""
        if isinstance(texts, str):
            raise ValueError("embed takes a list of texts, not a single string")
        texts = list(texts)
        found: dict[str, np.ndarray] = {}
        for text in texts:
            if text in found:
                continue
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
                found[text] = vector
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        self.hits += len(texts) - sum(1 for text in texts if text not in found)
        self.misses += len(missing)
        if missing:
            fresh = np.asarray(self.inner.embed(missing))
            if fresh.shape != (len(missing), self.dimension):
                expected = (len(missing), self.dimension)
                raise RuntimeError(f"the inner embedder returned shape {fresh.shape} for "
                                   f"{len(missing)} texts, expected {expected}")
            for text, vector in zip(missing, fresh):
                vector = vector.copy()  # own the row: the cache must not pin the whole batch
                found[text] = vector
                self._remember(text, vector)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = found[text]
        return out

    def _remember(self, text: str, vector: np.ndarray) -> None:
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)


class BackgroundEmbedder:
    """Embeds on a worker thread, so the daemon's ingest loop never waits for the model.

    `ready(texts)` returns the rows when every text is already embedded; else it
    queues the missing texts for the worker and returns None. With
    `partial=True` it returns the rows of the texts already embedded (and
    queues the rest): a window's newest sampled texts join at the next
    evaluation instead of holding the whole window back.
    `embed(texts)` is the synchronous path (replay, tests). A text is embedded
    once: the worker writes into the shared `CachedEmbedder`.
    """

    def __init__(self, cached: CachedEmbedder, batch_size: int = 32):
        import threading
        from collections import deque

        self.cached = cached
        self.dimension = cached.dimension
        self.batch_size = batch_size
        self.failures = 0
        self.embedded = 0  # texts embedded by the worker
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="embedder", daemon=True)
        self._thread.start()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self.cached.embed(texts)

    def ready(self, texts: list[str], partial: bool = False) -> np.ndarray | None:
        with self._lock:
            cache = self.cached._cache
            missing = [t for t in dict.fromkeys(texts) if t not in cache]
            if not missing:
                return self.cached.embed(texts)
            for text in missing:
                if text not in self._queued:
                    self._queued.add(text)
                    self._queue.append(text)
            done = [t for t in texts if t in cache] if partial else None
            rows = self.cached.embed(done) if done else None
        self._wake.set()
        if partial:
            return rows if rows is not None else np.empty((0, self.dimension), dtype=np.float32)
        return None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def _work(self) -> None:
        _lower_priority()
        while not self._stopped:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            while not self._stopped:
                with self._lock:
                    batch = [self._queue.popleft()
                             for _ in range(min(self.batch_size, len(self._queue)))]
                if not batch:
                    break
                try:
                    vectors = np.asarray(self.cached.inner.embed(batch), dtype=np.float32)
                except Exception:  # a model failure must not kill the daemon
                    self.failures += 1
                    log.exception("embedding %d prompt texts failed; they are skipped", len(batch))
                    vectors = None
                with self._lock:
                    for position, text in enumerate(batch):
                        self._queued.discard(text)
                        if vectors is not None:
                            self.cached._remember(text, vectors[position].copy())
                    if vectors is not None:
                        self.embedded += len(batch)

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)


def _lower_priority() -> None:
    """Run the calling thread at a lower CPU priority where the OS allows it (Linux
    threads have their own nice value): embeddings are background work, and the
    ingest loop and the Kafka fetcher must not wait for them."""
    import os
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
