"""Embedders without a network: the hash embedder, vectors, batching and retry decisions, the
factory, and the sentence-transformers guard rails."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from backburner.files.embedding.embedders import (
    Embedder,
    EmbedderConfigError,
    EmbedderUnavailable,
    HashEmbedder,
    OpenAICompatibleEmbedder,
    SentenceTransformersEmbedder,
    build_embedder,
    cosine,
    plan_batches,
    retry_delay_s,
    vector_from_bytes,
    vector_to_bytes,
)
from backburner.files.embedding.feature_hashing import hash_embed_packed
from backburner.files.pipeline.chunking import chunk_text

GUIDE = """# Travel guide

## France

Paris is the capital of France. The Louvre museum holds the Mona Lisa, and the Seine river
runs through the city.

## Japan

Tokyo is the capital of Japan. Cherry blossoms bloom in spring, and the Shinkansen bullet train
links Tokyo with Osaka and Kyoto.

## Kenya

Nairobi is the capital of Kenya. Safaris in the Masai Mara show lions, elephants and the great
wildebeest migration.

## Peru

Machu Picchu is an Inca citadel high in the Andes mountains of Peru, above the Urubamba valley.
"""


async def test_hash_vectors_are_normalised_and_deterministic() -> None:
    embedder = HashEmbedder(dimensions=64)
    first = await embedder.embed(["The quick brown fox", "jumps over the lazy dog"])
    again = await HashEmbedder(dimensions=64).embed(["The quick brown fox", "jumps over the lazy dog"])
    assert first == again
    assert all(len(v) == 64 for v in first)
    assert all(math.isclose(math.hypot(*v), 1.0) for v in first)
    assert first[0] != first[1]


def test_hash_vectors_do_not_depend_on_the_process() -> None:
    # Python's own hash() is salted per process; the embedder must not be.
    script = (
        "from backburner.files.embedding.embedders import HashEmbedder\n"
        "print(HashEmbedder(32).embed_sync(['stable vectors across processes'])[0])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str(HashEmbedder(32).embed_sync(["stable vectors across processes"])[0])


async def test_text_without_words_gives_a_zero_vector() -> None:
    vectors = await HashEmbedder(16).embed(["", "  ...  ", "the of and"])
    assert vectors == [[0.0] * 16] * 3


async def test_word_order_matters_through_bigrams() -> None:
    embedder = HashEmbedder(256)
    a, b, c = await embedder.embed(["dog bites man", "man bites dog", "dog bites man"])
    assert a == c
    assert 0.3 < cosine(a, b) < 0.99


@pytest.mark.parametrize("dimensions", [1, 100, 256, 384])
async def test_any_dimension_count(dimensions: int) -> None:
    vectors = await HashEmbedder(dimensions).embed(["solar panels on the roof", "single"])
    assert all(len(v) == dimensions and math.isclose(math.hypot(*v), 1.0) for v in vectors)


async def test_a_query_finds_the_passage_holding_its_answer() -> None:
    chunks = chunk_text(GUIDE, "markdown", 260, 40)
    embedder = HashEmbedder()
    vectors = await embedder.embed([c.text for c in chunks])
    questions = {
        "What is the capital of France?": "Paris",
        "Which train links Tokyo and Osaka?": "Shinkansen",
        "Where can I see lions and elephants on safari?": "Masai Mara",
        "Tell me about the Inca citadel in the Andes": "Machu Picchu",
    }
    for question, answer in questions.items():
        (query,) = await embedder.embed([question])
        ranked = sorted(zip(vectors, chunks, strict=True), key=lambda vc: cosine(query, vc[0]), reverse=True)
        assert answer in ranked[0][1].text, f"{question!r} found {ranked[0][1].text!r}"


def test_hash_vectors_for_process_pools() -> None:
    expected = [vector_to_bytes(v) for v in HashEmbedder(48).embed_sync(["pooled text", "more"])]
    assert hash_embed_packed(48, ["pooled text", "more"]) == expected


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert math.isclose(cosine([1.0, 2.0], [2.0, 4.0]), 1.0)
    assert math.isclose(cosine([1.0, 0.0], [-1.0, 0.0]), -1.0)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="different sizes"):
        cosine([1.0], [1.0, 2.0])


def test_vectors_round_trip_through_bytes() -> None:
    vector = [0.5, -1.25, 3.0, 1e-3]
    packed = vector_to_bytes(vector)
    assert len(packed) == 16
    assert packed[:4] == b"\x00\x00\x00\x3f"  # 0.5 as little-endian float32
    assert vector_from_bytes(packed) == pytest.approx(vector, rel=1e-6)
    assert vector_from_bytes(b"") == []
    with pytest.raises(ValueError, match="multiple of 4"):
        vector_from_bytes(b"\x00" * 5)


def test_plan_batches_respects_item_and_character_limits() -> None:
    texts = ["a" * 10] * 7
    assert plan_batches(texts, max_items=3, max_chars=1000) == [range(0, 3), range(3, 6), range(6, 7)]
    assert plan_batches(texts, max_items=100, max_chars=25) == [
        range(i, min(i + 2, 7)) for i in range(0, 7, 2)
    ]
    assert plan_batches(["x" * 50, "y", "z"], max_items=10, max_chars=20) == [range(0, 1), range(1, 3)]
    assert plan_batches([], max_items=3, max_chars=10) == []


def test_retry_delay_prefers_the_servers_word() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    kwargs = {"base_s": 0.5, "max_s": 30.0, "now": now, "jitter": 1.0}
    assert retry_delay_s(1, httpx.Headers({"retry-after": "2"}), **kwargs) == 2.0
    assert retry_delay_s(1, httpx.Headers({"retry-after-ms": "250"}), **kwargs) == 0.25
    later = format_datetime(datetime(2024, 1, 1, 0, 0, 7, tzinfo=UTC), usegmt=True)
    assert retry_delay_s(1, httpx.Headers({"retry-after": later}), **kwargs) == 7.0
    assert retry_delay_s(1, httpx.Headers({"retry-after": "3600"}), **kwargs) == 30.0
    assert retry_delay_s(1, httpx.Headers({"retry-after": "soon"}), **kwargs) == 0.5
    assert [retry_delay_s(n, None, **kwargs) for n in (1, 2, 3, 4, 10)] == [0.5, 1.0, 2.0, 4.0, 30.0]
    assert retry_delay_s(3, None, base_s=0.5, max_s=30.0, now=now, jitter=0.5) == 1.0


async def test_build_embedder() -> None:
    hashed = build_embedder("hash", dimensions=32)
    assert isinstance(hashed, HashEmbedder)
    assert (hashed.name, hashed.model, hashed.dimensions) == ("hash", "feature-hash-v1-32", 32)
    remote = build_embedder("openai", base_url="http://127.0.0.1:1/v1", api_key=None, model="m", batch_size=8)
    try:
        assert isinstance(remote, OpenAICompatibleEmbedder)
        assert (remote.name, remote.model, remote.max_batch_size, remote.dimensions) == ("openai", "m", 8, 0)
    finally:
        await remote.aclose()
    with pytest.raises(EmbedderConfigError, match="unknown embedder 'word2vec'"):
        build_embedder("word2vec")
    with pytest.raises(EmbedderConfigError, match="bad options for the hash embedder"):
        build_embedder("hash", colour="blue")
    with pytest.raises(ValueError, match="dimensions must be positive"):
        build_embedder("hash", dimensions=0)


async def test_every_embedder_satisfies_the_protocol() -> None:
    remote = OpenAICompatibleEmbedder("http://127.0.0.1:1/v1", None, "m")
    try:
        assert isinstance(HashEmbedder(), Embedder)
        assert isinstance(remote, Embedder)
    finally:
        await remote.aclose()


def test_openai_options_are_checked() -> None:
    with pytest.raises(EmbedderConfigError, match="batch_size"):
        OpenAICompatibleEmbedder("http://x/v1", None, "m", batch_size=0)
    with pytest.raises(EmbedderConfigError, match="model"):
        OpenAICompatibleEmbedder("http://x/v1", None, "")


def test_sentence_transformers_refuses_hub_names() -> None:
    with pytest.raises(EmbedderConfigError, match="hub names are refused"):
        SentenceTransformersEmbedder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("sentence_transformers") is not None,
    reason="the optional extra is installed here",
)
def test_sentence_transformers_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match=r"backburner\[sentence-transformers\]"):
        build_embedder("sentence-transformers", model_path=tmp_path)


async def test_large_batches_give_the_same_vectors_through_a_thread() -> None:
    texts = [f"document {i} " + "lorem ipsum dolor sit amet " * 40 for i in range(40)]
    embedder = HashEmbedder(64)
    assert await embedder.embed(texts) == HashEmbedder(64).embed_sync(texts)
