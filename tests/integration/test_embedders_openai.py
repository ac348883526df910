"""The OpenAI-compatible embedder against a real HTTP server on a local port.

The server is a small asyncio HTTP/1.1 server in the test's own event loop; each test scripts
its answers (429 with retry-after, 500, success...) and the server records what it received.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from backburner.files.embedding.embedders import EmbeddingError, OpenAICompatibleEmbedder

DEADLINE_S = 20


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # None: embeddings of the request's inputs
    hang: bool = False


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class EmbeddingsServer:
    """Answers POST /v1/embeddings from a script; once the script runs out, always succeeds."""

    def __init__(self, answers: list[Answer] | None = None, dimensions: int = 3) -> None:
        self.answers = list(answers or [])
        self.dimensions = dimensions
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        # Connection handlers (a hanging one included) end with the server.
        for task in self._handlers:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), DEADLINE_S)
        await asyncio.wait_for(self._server.wait_closed(), DEADLINE_S)

    def vector(self, text: str) -> list[float]:
        return [float(len(text)), float(sum(map(ord, text)) % 97), 1.0][: self.dimensions] + [0.5] * max(
            0, self.dimensions - 3
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                _, path, _ = request_line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
                self.received.append(Received(time.monotonic(), path, headers, body))
                answer = self.answers.pop(0) if self.answers else Answer()
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if answer.hang:
                        await asyncio.Event().wait()
                    await asyncio.sleep(0)  # let concurrent requests overlap
                    payload = answer.body
                    if payload is None and answer.status == 200:
                        payload = {
                            "object": "list",
                            "model": body["model"],
                            # Out of order on purpose: clients must sort by index.
                            "data": [
                                {"object": "embedding", "index": i, "embedding": self.vector(text)}
                                for i, text in reversed(list(enumerate(body["input"])))
                            ],
                        }
                    if payload is None:
                        payload = {"error": {"message": f"scripted {answer.status}"}}
                    data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                    head = [f"HTTP/1.1 {answer.status} X", f"content-length: {len(data)}"]
                    head += [f"{k}: {v}" for k, v in answer.headers.items()]
                    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                    await writer.drain()
                finally:
                    self.in_flight -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            self._handlers.discard(task)


@pytest.fixture
async def server() -> AsyncIterator[EmbeddingsServer]:
    srv = EmbeddingsServer()
    await srv.start()
    yield srv
    await srv.stop()


def embedder_for(server: EmbeddingsServer, **options: Any) -> OpenAICompatibleEmbedder:
    defaults: dict[str, Any] = {"batch_size": 16, "max_retries": 3, "timeout": 5.0, "backoff_base_s": 0.01}
    defaults.update(options)
    return OpenAICompatibleEmbedder(server.base_url, "sk-test", "text-embedding-test", **defaults)


async def test_embeds_in_order_with_the_key_and_model(server: EmbeddingsServer) -> None:
    embedder = embedder_for(server)
    try:
        vectors = await asyncio.wait_for(embedder.embed(["alpha", "beta", "gamma"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert vectors == [server.vector("alpha"), server.vector("beta"), server.vector("gamma")]
    (request,) = server.received
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {"model": "text-embedding-test", "input": ["alpha", "beta", "gamma"]}
    assert embedder.dimensions == 3


async def test_429_with_retry_after_then_500_then_success(server: EmbeddingsServer) -> None:
    server.answers = [Answer(429, {"retry-after": "1"}), Answer(500)]
    embedder = embedder_for(server)
    try:
        vectors = await asyncio.wait_for(embedder.embed(["one", "two"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert vectors == [server.vector("one"), server.vector("two")]
    first, second, third = server.received
    assert second.at - first.at >= 0.95, "retry-after was not honoured"
    assert third.at - second.at < 0.9, "a 500 without retry-after backs off briefly"
    assert first.body == second.body == third.body


async def test_gives_up_after_max_retries(server: EmbeddingsServer) -> None:
    server.answers = [Answer(503)] * 10
    embedder = embedder_for(server, max_retries=2)
    try:
        with pytest.raises(EmbeddingError) as caught:
            await asyncio.wait_for(embedder.embed(["x"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert (caught.value.status_code, caught.value.attempts) == (503, 3)
    assert "after 3 attempts" in str(caught.value)
    assert len(server.received) == 3


async def test_a_client_error_is_not_retried(server: EmbeddingsServer) -> None:
    server.answers = [Answer(400, body={"error": {"message": "input too long"}})]
    embedder = embedder_for(server)
    try:
        with pytest.raises(EmbeddingError, match="input too long") as caught:
            await asyncio.wait_for(embedder.embed(["x"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert (caught.value.status_code, caught.value.attempts) == (400, 1)
    assert len(server.received) == 1


async def test_batches_stay_within_the_limit_and_run_concurrently(server: EmbeddingsServer) -> None:
    texts = [f"text number {i}" for i in range(23)]
    embedder = embedder_for(server, batch_size=5, max_concurrency=3)
    try:
        vectors = await asyncio.wait_for(embedder.embed(texts), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert vectors == [server.vector(t) for t in texts]
    assert sorted(len(r.body["input"]) for r in server.received) == [3, 5, 5, 5, 5]
    assert 1 < server.max_in_flight <= 3


async def test_one_failing_batch_fails_the_call(server: EmbeddingsServer) -> None:
    server.answers = [Answer(), Answer(401, body={"error": {"message": "bad key"}})]
    embedder = embedder_for(server, batch_size=2, max_concurrency=1)
    try:
        with pytest.raises(EmbeddingError, match="bad key"):
            await asyncio.wait_for(embedder.embed(["a", "b", "c", "d", "e", "f"]), DEADLINE_S)
    finally:
        await embedder.aclose()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "malformed embeddings response"),
        ({"data": [{"index": 0, "embedding": [1.0]}]}, "asked for 2 embeddings, got 1"),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
            "mixed sizes",
        ),
        ({"nothing": True}, "malformed embeddings response"),
    ],
)
async def test_malformed_answers(server: EmbeddingsServer, body: Any, message: str) -> None:
    server.answers = [Answer(200, body=body)]
    embedder = embedder_for(server)
    try:
        with pytest.raises(EmbeddingError, match=message):
            await asyncio.wait_for(embedder.embed(["a", "b"]), DEADLINE_S)
    finally:
        await embedder.aclose()


async def test_a_configured_dimension_is_checked_and_can_be_sent(server: EmbeddingsServer) -> None:
    embedder = embedder_for(server, dimensions=3, send_dimensions=True)
    wrong = embedder_for(server, dimensions=8)
    try:
        await asyncio.wait_for(embedder.embed(["a"]), DEADLINE_S)
        assert server.received[-1].body["dimensions"] == 3
        with pytest.raises(EmbeddingError, match="expected 8-dimensional embeddings, got 3"):
            await asyncio.wait_for(wrong.embed(["a"]), DEADLINE_S)
        assert "dimensions" not in server.received[-1].body
    finally:
        await embedder.aclose()
        await wrong.aclose()


async def test_a_hanging_server_times_out_and_is_retried(server: EmbeddingsServer) -> None:
    server.answers = [Answer(hang=True)]
    embedder = embedder_for(server, timeout=0.3, max_retries=1)
    try:
        vectors = await asyncio.wait_for(embedder.embed(["after the hang"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert vectors == [server.vector("after the hang")]
    assert len(server.received) == 2


async def test_nothing_listening_fails_after_retries() -> None:
    embedder = OpenAICompatibleEmbedder(
        "http://127.0.0.1:1/v1", None, "m", max_retries=2, timeout=2.0, backoff_base_s=0.01
    )
    try:
        with pytest.raises(EmbeddingError, match="ConnectError") as caught:
            await asyncio.wait_for(embedder.embed(["x"]), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert caught.value.attempts == 3
    assert caught.value.status_code is None


async def test_no_texts_no_request(server: EmbeddingsServer) -> None:
    embedder = embedder_for(server)
    try:
        assert await embedder.embed([]) == []
    finally:
        await embedder.aclose()
    assert server.received == []


async def test_large_answers_are_decoded(server: EmbeddingsServer) -> None:
    server.dimensions = 2000  # about 1 MB of JSON: decoded off the event loop
    texts = [f"passage {i}" for i in range(40)]
    embedder = embedder_for(server, batch_size=64)
    try:
        vectors = await asyncio.wait_for(embedder.embed(texts), DEADLINE_S)
    finally:
        await embedder.aclose()
    assert vectors == [server.vector(t) for t in texts]
    assert embedder.dimensions == 2000
