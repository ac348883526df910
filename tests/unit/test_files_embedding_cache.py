"""The in-memory embedding cache and the caching embedder (Redis is in tests/integration)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from backburner.files.embedding.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    text_sha256,
)
from backburner.files.embedding.embedders import Embedder, HashEmbedder


class CountingEmbedder:
    """A real (hash) embedder that records what it was asked to embed."""

    def __init__(self, dimensions: int = 8) -> None:
        self.inner = HashEmbedder(dimensions)
        self.calls: list[list[str]] = []
        self.closed = False

    name = "hash"

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def max_batch_size(self) -> int:
        return self.inner.max_batch_size

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        self.closed = True


class BrokenCache:
    """A cache that breaks its promise never to raise."""

    async def get_many(self, model: str, hashes: Sequence[str]) -> list[list[float] | None]:
        raise RuntimeError("lookup exploded")

    async def set_many(self, model: str, vectors: Mapping[str, list[float]]) -> None:
        raise RuntimeError("store exploded")

    async def aclose(self) -> None:
        return None


async def test_memory_cache_is_an_lru() -> None:
    cache = MemoryEmbeddingCache(max_entries=2)
    await cache.set_many("m", {"a": [1.0], "b": [2.0]})
    assert await cache.get_many("m", ["a"]) == [[1.0]]  # "a" is now the most recent
    await cache.set_many("m", {"c": [3.0]})
    assert await cache.get_many("m", ["a", "b", "c"]) == [[1.0], None, [3.0]]
    assert len(cache) == 2
    assert await cache.get_many("other-model", ["a"]) == [None]
    await cache.aclose()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        MemoryEmbeddingCache(max_entries=0)


async def test_memory_cache_stores_float32() -> None:
    cache = MemoryEmbeddingCache()
    await cache.set_many("m", {"a": [0.1, 0.2]})
    (vector,) = await cache.get_many("m", ["a"])
    assert vector == pytest.approx([0.1, 0.2], rel=1e-6)


async def test_cached_embedder_embeds_each_distinct_miss_once() -> None:
    inner = CountingEmbedder()
    embedder = CachedEmbedder(inner, MemoryEmbeddingCache())
    texts = ["one fish", "two fish", "one fish"]
    first = await embedder.embed(texts)
    assert inner.calls == [["one fish", "two fish"]]
    assert first[0] == first[2]
    second = await embedder.embed(["two fish", "red fish"])
    assert inner.calls[-1] == ["red fish"]
    assert second[0] == pytest.approx(first[1], rel=1e-6)
    assert (embedder.hits, embedder.misses) == (1, 4)
    assert await embedder.embed([]) == []
    assert (embedder.name, embedder.model, embedder.dimensions) == ("hash", inner.model, 8)
    assert embedder.max_batch_size == inner.max_batch_size
    await embedder.aclose()
    assert inner.closed


async def test_vectors_of_the_wrong_size_in_the_cache_are_ignored() -> None:
    cache = MemoryEmbeddingCache()
    inner = CountingEmbedder(dimensions=8)
    await cache.set_many(f"hash:{inner.model}", {text_sha256("stale"): [1.0, 2.0]})
    vectors = await CachedEmbedder(inner, cache).embed(["stale"])
    assert len(vectors[0]) == 8
    assert inner.calls == [["stale"]]


async def test_a_broken_cache_never_fails_the_embedding() -> None:
    inner = CountingEmbedder()
    embedder = CachedEmbedder(inner, BrokenCache())
    vectors = await embedder.embed(["still embedded"])
    assert vectors == HashEmbedder(8).embed_sync(["still embedded"])


def test_protocols() -> None:
    assert isinstance(MemoryEmbeddingCache(), EmbeddingCache)
    assert isinstance(CachedEmbedder(HashEmbedder(), MemoryEmbeddingCache()), Embedder)
