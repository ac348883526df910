"""A cache of embeddings keyed by (model, chunk SHA-256), in Redis or in process memory.

A cache never fails a file: any error reading or writing it counts as a miss and is logged once
per outage (event `embedding_cache.unavailable`, then `embedding_cache.recovered`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from backburner.files.embedding.embedders import Embedder
from backburner.files.embedding.vectors import vector_from_bytes, vector_to_bytes

logger = logging.getLogger(__name__)

Vector = list[float]


@runtime_checkable
class EmbeddingCache(Protocol):
    async def get_many(self, model: str, hashes: Sequence[str]) -> list[Vector | None]:
        """The cached vector of each hash, or None; never raises."""
        ...

    async def set_many(self, model: str, vectors: Mapping[str, Vector]) -> None:
        """Store vectors by hash; never raises."""
        ...

    async def aclose(self) -> None: ...


class MemoryEmbeddingCache:
    """An LRU cache in process memory, holding vectors packed as float32 (4 bytes a value)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, model: str, hashes: Sequence[str]) -> list[Vector | None]:
        found: list[Vector | None] = []
        for digest in hashes:
            key = (model, digest)
            packed = self._entries.get(key)
            if packed is None:
                found.append(None)
            else:
                self._entries.move_to_end(key)
                found.append(vector_from_bytes(packed))
        return found

    async def set_many(self, model: str, vectors: Mapping[str, Vector]) -> None:
        for digest, vector in vectors.items():
            key = (model, digest)
            self._entries[key] = vector_to_bytes(vector)
            self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


class RedisEmbeddingCache:
    """The cache in Redis: one `MGET` per lookup, one pipelined batch of `SET ... EX` per store.

    After a failure Redis is left alone for `retry_after_s`, so that a Redis that went away costs
    no connection attempt (or timeout) per batch; the first success afterwards logs the recovery.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "backburner:embedding:",
        ttl_s: int | None = 30 * 24 * 3600,
        timeout_s: float = 2.0,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Imported here: deployments without Redis never load the client.
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No client-side retries: a failed call is a miss at once, and the cool-down below spares
        # the next calls.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._down_until: float | None = None

    @property
    def available(self) -> bool:
        """False while a recent failure keeps Redis out of use."""
        return self._down_until is None or self._clock() >= self._down_until

    def _key(self, model: str, digest: str) -> str:
        return f"{self._prefix}{model}:{digest}"

    async def get_many(self, model: str, hashes: Sequence[str]) -> list[Vector | None]:
        misses: list[Vector | None] = [None] * len(hashes)
        if not hashes or not self.available:
            return misses
        try:
            values = await self._client.mget([self._key(model, digest) for digest in hashes])
        except Exception as exc:  # any Redis or network error: no cache this time
            self._failed(exc)
            return misses
        self._succeeded()
        found: list[Vector | None] = []
        for value in values:
            # A foreign or damaged value (a client decoding responses, a wrong length) is a miss.
            try:
                found.append(vector_from_bytes(value) if isinstance(value, bytes) else None)
            except ValueError:
                found.append(None)
        return found

    async def set_many(self, model: str, vectors: Mapping[str, Vector]) -> None:
        if not vectors or not self.available:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for digest, vector in vectors.items():
                    pipe.set(self._key(model, digest), vector_to_bytes(vector), ex=self._ttl_s)
                await pipe.execute()
        except Exception as exc:
            self._failed(exc)
            return
        self._succeeded()

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a broken connection must not fail shutdown
            logger.debug("closing the Redis cache client failed: %s", exc)

    def _failed(self, exc: Exception) -> None:
        if self._down_until is None:
            logger.warning(
                "embedding cache unavailable, continuing without it: %s: %s",
                type(exc).__name__,
                exc,
                extra={"event": "embedding_cache.unavailable"},
            )
        self._down_until = self._clock() + self._retry_after_s

    def _succeeded(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            logger.info("embedding cache available again", extra={"event": "embedding_cache.recovered"})


def text_sha256(text: str) -> str:
    """The hash a chunk is cached by (the same as `Chunk.sha256`)."""
    return hashlib.sha256(text.encode()).hexdigest()


class CachedEmbedder:
    """An embedder that asks the cache first and embeds only the misses (each distinct text once).

    Entries are namespaced by the embedder's name and model; a cached vector of the wrong size
    is ignored. `hits` and `misses` count texts.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self._embedder = embedder
        self._cache = cache
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self._embedder.name

    @property
    def model(self) -> str:
        return self._embedder.model

    @property
    def dimensions(self) -> int:
        return self._embedder.dimensions

    @property
    def max_batch_size(self) -> int:
        return self._embedder.max_batch_size

    @property
    def cache_namespace(self) -> str:
        return f"{self._embedder.name}:{self._embedder.model}"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        namespace = self.cache_namespace
        hashes = [text_sha256(text) for text in texts]
        unique = list(dict.fromkeys(hashes))
        known: dict[str, Vector] = {}
        try:
            cached = await self._cache.get_many(namespace, unique)
        except Exception as exc:  # the protocol says never; a faulty cache still must not fail a file
            logger.warning("embedding cache lookup failed: %s", exc, extra={"event": "embedding_cache.error"})
            cached = [None] * len(unique)
        size = self._embedder.dimensions
        for digest, vector in zip(unique, cached, strict=True):
            if vector is not None and (size == 0 or len(vector) == size):
                known[digest] = vector
        hits = sum(1 for digest in hashes if digest in known)
        self.hits += hits
        self.misses += len(texts) - hits
        text_of = dict(zip(hashes, texts, strict=True))
        missing = [digest for digest in unique if digest not in known]
        if missing:
            fresh = await self._embedder.embed([text_of[digest] for digest in missing])
            new = dict(zip(missing, fresh, strict=True))
            known.update(new)
            try:
                await self._cache.set_many(namespace, new)
            except Exception as exc:
                logger.warning(
                    "embedding cache store failed: %s", exc, extra={"event": "embedding_cache.error"}
                )
        return [known[digest] for digest in hashes]

    async def aclose(self) -> None:
        """Close the wrapped embedder; the cache belongs to whoever built it."""
        await self._embedder.aclose()
