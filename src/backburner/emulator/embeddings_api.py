"""OpenAI's `/v1/embeddings`, with a fixed latency per request, so that an ingestion pipeline
meets a remote embedder that makes it wait as a real one does.

Vectors come from the `hash` embedder, so searches over them behave as with real embeddings.
"""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request

from backburner.emulator.errors import ProviderError
from backburner.emulator.requests_io import read_json_object
from backburner.emulator.state import EmulatorState
from backburner.files.embedding.feature_hashing import HashEmbedder
from backburner.files.embedding.vectors import vector_from_bytes

DEFAULT_DIMENSIONS = 256
MAX_DIMENSIONS = 8192
MAX_INPUTS = 2048


def _inputs(payload: dict[str, object]) -> list[str]:
    raw = payload.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ProviderError(
            "openai", 400, "'input' must be a string or a non-empty list of strings.", param="input"
        )
    if len(texts) > MAX_INPUTS:
        raise ProviderError("openai", 400, f"'input' holds at most {MAX_INPUTS} items.", param="input")
    return texts


def _dimensions(payload: dict[str, object]) -> int:
    value = payload.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSIONS:
        raise ProviderError(
            "openai", 400, f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}.", param="dimensions"
        )
    return value


def embeddings_router(state: EmulatorState) -> APIRouter:
    router = APIRouter(tags=["openai"])
    embedders: dict[int, HashEmbedder] = {}

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, object]:
        payload = await read_json_object(request, "openai")
        texts = _inputs(payload)
        dimensions = _dimensions(payload)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise ProviderError("openai", 400, "'model' is required.", param="model")
        encoding = payload.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ProviderError("openai", 400, "'encoding_format' must be 'float' or 'base64'.")
        embedder = embedders.setdefault(dimensions, HashEmbedder(dimensions))
        if state.embedding_latency_s > 0:
            await asyncio.sleep(state.embedding_latency_s)
        packed = embedder.embed_packed_sync(texts)
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": base64.b64encode(vector).decode()
                if encoding == "base64"
                else vector_from_bytes(vector),
            }
            for index, vector in enumerate(packed)
        ]
        tokens = sum(len(text.split()) for text in texts)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return router
