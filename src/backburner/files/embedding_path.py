"""The way one instance turns chunk texts into stored vectors, built from the settings.

`hash` vectors are computed in the CPU pool's processes, which also store them (they cost less
than a cache round trip, so they are not cached); every other embedder is called on the loop
through the embedding cache (Redis when `redis_url` is set, process memory otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backburner.files.embedders import Embedder, HashEmbedder, build_embedder
from backburner.files.embedding_cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    RedisEmbeddingCache,
)
from backburner.files.offload import CpuPool, hash_embed_packed
from backburner.files.vectors import vector_to_bytes
from backburner.settings import Settings


class PackedEmbedder(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def pool_hash_dimensions(self) -> int | None:
        """Set when the vectors are `hash` ones of this size made in a process pool: a pool
        process then processes each file whole (`pool_ingest`)."""
        ...

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        """One float32 vector (as bytes) per text, in order."""
        ...


class PoolHashEmbedder:
    def __init__(self, dimensions: int, pool: CpuPool) -> None:
        self._dimensions = dimensions
        self._pool = pool
        self._model = HashEmbedder(dimensions).model

    @property
    def model(self) -> str:
        return self._model

    @property
    def pool_hash_dimensions(self) -> int | None:
        return self._dimensions

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        return await self._pool.run(hash_embed_packed, self._dimensions, texts)


class LoopEmbedder:
    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    @property
    def model(self) -> str:
        return self._embedder.model

    @property
    def pool_hash_dimensions(self) -> int | None:
        return None

    async def embed_packed(self, texts: list[str]) -> list[bytes]:
        return [vector_to_bytes(vector) for vector in await self._embedder.embed(texts)]


@dataclass
class EmbeddingPath:
    packed: PackedEmbedder  # for chunks, in the workers
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


def build_embedding_path(settings: Settings, pool: CpuPool) -> EmbeddingPath:
    embedder = build_embedder(settings.embedder, **embedder_options(settings))
    if isinstance(embedder, HashEmbedder):
        packed: PackedEmbedder = (
            PoolHashEmbedder(settings.embedding_dimensions, pool)
            if pool.uses_processes
            else LoopEmbedder(embedder)
        )
        return EmbeddingPath(packed=packed, query=embedder, cache=None)
    cache: EmbeddingCache = (
        RedisEmbeddingCache(settings.redis_url) if settings.redis_url else MemoryEmbeddingCache()
    )
    cached = CachedEmbedder(embedder, cache)
    return EmbeddingPath(packed=LoopEmbedder(cached), query=cached, cache=cache)
