"""How one instance turns chunk texts into stored vectors, built from the settings.

The worker sees one interface, `ChunkEmbedder`. `hash` vectors are computed in the process
pool (they cost less than a cache round trip, so they are not cached); every other embedder is
called from the event loop through the embedding cache (Redis when `redis_url` is set, process
memory otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backburner.files.embedding.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    RedisEmbeddingCache,
)
from backburner.files.embedding.embedders import Embedder, HashEmbedder, build_embedder
from backburner.files.embedding.feature_hashing import hash_embed_packed
from backburner.files.embedding.vectors import vector_to_bytes
from backburner.files.pool.process_pool import ProcessPool
from backburner.settings import Settings


class ChunkEmbedder(Protocol):
    @property
    def model(self) -> str: ...

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        """One float32 vector (as bytes) per text, in order."""
        ...


class PoolHashEmbedder:
    """`hash` vectors made in the pool's processes, off the event loop."""

    def __init__(self, dimensions: int, pool: ProcessPool) -> None:
        self._dimensions = dimensions
        self._pool = pool
        self._model = HashEmbedder(dimensions).model

    @property
    def model(self) -> str:
        return self._model

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        return await self._pool.run(hash_embed_packed, self._dimensions, texts)


class RemoteEmbedder:
    """An embedder called from the event loop (an HTTP endpoint, or a model in a thread)."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    @property
    def model(self) -> str:
        return self._embedder.model

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        return [vector_to_bytes(vector) for vector in await self._embedder.embed(texts)]


@dataclass
class Embedding:
    chunks: ChunkEmbedder  # for chunks, in the workers
    query: Embedder  # for search queries
    cache: EmbeddingCache | None

    async def aclose(self) -> None:
        await self.query.aclose()
        if self.cache is not None:
            await self.cache.aclose()


def embedder_options(settings: Settings) -> dict[str, Any]:
    if settings.embedder == "hash":
        return {"dimensions": settings.embedding_dimensions}
    if settings.embedder == "openai":
        key = settings.embedding_api_key
        return {
            "base_url": str(settings.embedding_base_url),
            "api_key": key.get_secret_value() if key is not None else None,
            "model": settings.embedding_model,
            "batch_size": settings.embedding_batch_size,
            "timeout": settings.provider_timeout_seconds,
        }
    return {"model_path": settings.embedding_model_path, "batch_size": settings.embedding_batch_size}


def build_embedding(settings: Settings, pool: ProcessPool) -> Embedding:
    embedder = build_embedder(settings.embedder, **embedder_options(settings))
    if isinstance(embedder, HashEmbedder):
        return Embedding(
            chunks=PoolHashEmbedder(settings.embedding_dimensions, pool), query=embedder, cache=None
        )
    cache: EmbeddingCache = (
        RedisEmbeddingCache(settings.redis_url) if settings.redis_url else MemoryEmbeddingCache()
    )
    cached = CachedEmbedder(embedder, cache)
    return Embedding(chunks=RemoteEmbedder(cached), query=cached, cache=cache)
