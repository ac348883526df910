"""The emulator's `/v1/embeddings`: the official SDK and Backburner's embedder get vectors, each
answer waits the configured latency, and bad requests get OpenAI's error shape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from backburner.emulator import EmulatorConfig
from backburner.emulator.testing import RunningEmulator, running_emulator
from backburner.files.embedding.embedders import OpenAICompatibleEmbedder
from backburner.files.embedding.feature_hashing import HashEmbedder
from tests.emulator_support import fixtures

gpt = fixtures.gpt
LATENCY_MS = 200


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    with running_emulator(EmulatorConfig(embedding_latency_ms=LATENCY_MS)) as running:
        yield running


async def test_the_sdk_gets_hash_vectors(gpt: openai.AsyncOpenAI) -> None:
    answer = await gpt.embeddings.create(
        model="text-embedding-3-small", input=["a cat", "a dog"], dimensions=64
    )
    assert [item.index for item in answer.data] == [0, 1]
    expected = HashEmbedder(64).embed_sync(["a cat", "a dog"])
    for item, vector in zip(answer.data, expected, strict=True):
        assert item.embedding == pytest.approx(vector, abs=1e-6)
    assert answer.usage.prompt_tokens == 4


async def test_every_request_waits_the_latency_and_they_overlap(emulator: RunningEmulator) -> None:
    embedder = OpenAICompatibleEmbedder(
        base_url=f"{emulator.base_url}/v1", api_key="dev", model="m", batch_size=8, timeout=30
    )
    try:
        started = time.monotonic()
        [vector] = await embedder.embed(["one text"])
        one_s = time.monotonic() - started
        started = time.monotonic()
        await asyncio.gather(*(embedder.embed([f"text {i}"]) for i in range(5)))
        five_s = time.monotonic() - started
    finally:
        await embedder.aclose()
    assert len(vector) == 256
    assert one_s >= LATENCY_MS / 1000
    assert five_s < 5 * LATENCY_MS / 1000  # answered side by side, not one after another


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "m", "input": []}, "'input'"),
        ({"model": "m", "input": [1, 2]}, "'input'"),
        ({"input": ["x"]}, "'model'"),
        ({"model": "m", "input": ["x"], "dimensions": 0}, "'dimensions'"),
        ({"model": "m", "input": ["x"], "encoding_format": "hex"}, "'encoding_format'"),
    ],
)
async def test_bad_requests_get_openais_error_shape(
    emulator: RunningEmulator, body: dict[str, object], words: str
) -> None:
    async with httpx.AsyncClient(base_url=emulator.base_url, timeout=30) as client:
        answer = await client.post("/v1/embeddings", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"
