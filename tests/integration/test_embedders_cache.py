"""The embedding cache on the real Redis (127.0.0.1:6379), and Redis going away.

"Going away" is played by a TCP proxy in front of Redis that the test closes and reopens, so the
shared Redis server itself is never stopped; a cache pointed at a port where nothing listens
covers a Redis that was never there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from backburner.files.embedding.cache import CachedEmbedder, RedisEmbeddingCache, text_sha256
from backburner.files.embedding.embedders import HashEmbedder

REDIS_URL = "redis://127.0.0.1:6379/0"
DEADLINE_S = 10


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    value = f"test:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{value}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class RedisProxy:
    """Forwards a local port to Redis until `stop()`, which also cuts open connections."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self._pipes, return_exceptions=True), DEADLINE_S)
        await asyncio.wait_for(self._server.wait_closed(), DEADLINE_S)
        self._server = None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", 6379)
            try:
                await asyncio.gather(_pipe(client_reader, redis_writer), _pipe(redis_reader, client_writer))
            finally:
                redis_writer.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            client_writer.close()
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def test_round_trip_and_misses(prefix: str) -> None:
    cache = RedisEmbeddingCache(REDIS_URL, prefix=prefix, ttl_s=60)
    try:
        assert await cache.get_many("model-a", ["h1", "h2"]) == [None, None]
        await cache.set_many("model-a", {"h1": [0.25, -0.5], "h2": [1.0, 2.0]})
        assert await cache.get_many("model-a", ["h2", "missing", "h1"]) == [[1.0, 2.0], None, [0.25, -0.5]]
        assert await cache.get_many("model-b", ["h1"]) == [None]  # keyed by model too
        assert await cache.get_many("model-a", []) == []
    finally:
        await cache.aclose()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        ttl = await client.ttl(f"{prefix}model-a:h1")
        assert 0 < ttl <= 60
    finally:
        await client.aclose()


async def test_damaged_values_are_misses(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{prefix}m:bad", b"12345")  # not a whole number of float32 values
    finally:
        await client.aclose()
    cache = RedisEmbeddingCache(REDIS_URL, prefix=prefix)
    try:
        assert await cache.get_many("m", ["bad"]) == [None]
    finally:
        await cache.aclose()


async def test_cached_embedder_embeds_only_misses(prefix: str) -> None:
    cache = RedisEmbeddingCache(REDIS_URL, prefix=prefix)
    embedder = CachedEmbedder(HashEmbedder(32), cache)
    try:
        first = await embedder.embed(["alpha text", "beta text"])
        assert (embedder.hits, embedder.misses) == (0, 2)
        second = await embedder.embed(["beta text", "gamma text", "alpha text"])
        assert (embedder.hits, embedder.misses) == (2, 3)
        assert second[0] == pytest.approx(first[1], rel=1e-6)
        assert second[2] == pytest.approx(first[0], rel=1e-6)
        stored = await cache.get_many("hash:feature-hash-v1-32", [text_sha256("gamma text")])
        assert stored[0] == pytest.approx(HashEmbedder(32).embed_sync(["gamma text"])[0], rel=1e-6)
    finally:
        await embedder.aclose()
        await cache.aclose()


async def test_redis_never_there_degrades_to_misses(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    cache = RedisEmbeddingCache("redis://127.0.0.1:1/0", timeout_s=1.0, retry_after_s=5.0, clock=clock)
    embedder = CachedEmbedder(HashEmbedder(16), cache)
    try:
        with caplog.at_level(logging.WARNING, logger="backburner.files.embedding.cache"):
            for _ in range(3):
                vectors = await asyncio.wait_for(embedder.embed(["still works"]), DEADLINE_S)
                assert vectors == HashEmbedder(16).embed_sync(["still works"])
            await cache.set_many("m", {"h": [1.0]})
            assert await cache.get_many("m", ["h"]) == [None]
            assert not cache.available
            clock.now += 5.0
            assert cache.available  # tried again after the cool-down, and fails again quietly
            assert await cache.get_many("m", ["h"]) == [None]
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events == ["embedding_cache.unavailable"], "logged once per outage"
        assert embedder.misses == 3
    finally:
        await embedder.aclose()
        await cache.aclose()


async def test_redis_going_away_mid_run_and_coming_back(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = RedisProxy()
    await proxy.start()
    clock = ManualClock()
    cache = RedisEmbeddingCache(
        f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, timeout_s=1.0, retry_after_s=2.0, clock=clock
    )
    embedder = CachedEmbedder(HashEmbedder(16), cache)
    try:
        with caplog.at_level(logging.INFO, logger="backburner.files.embedding.cache"):
            await asyncio.wait_for(embedder.embed(["cached before"]), DEADLINE_S)
            await asyncio.wait_for(embedder.embed(["cached before"]), DEADLINE_S)
            assert embedder.hits == 1

            await proxy.stop()  # Redis goes away with the connection open
            for text in ["during the outage", "cached before", "another one"]:
                vectors = await asyncio.wait_for(embedder.embed([text]), DEADLINE_S)
                assert vectors == HashEmbedder(16).embed_sync([text])
            assert not cache.available

            await proxy.start(proxy.port)  # back on the same address
            clock.now += 2.0
            await asyncio.wait_for(embedder.embed(["cached before"]), DEADLINE_S)
            assert cache.available
            assert embedder.hits == 2
        events = [getattr(r, "event", None) for r in caplog.records]
        assert events == ["embedding_cache.unavailable", "embedding_cache.recovered"]
    finally:
        await embedder.aclose()
        await cache.aclose()
        await proxy.stop()
