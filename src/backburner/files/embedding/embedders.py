"""Embedders behind one interface: feature hashing, any OpenAI-compatible endpoint, and a local
sentence-transformers model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from backburner.files.embedding.feature_hashing import HashEmbedder
from backburner.files.embedding.vectors import cosine, vector_from_bytes, vector_to_bytes
from backburner.retry_after import retry_after_s

__all__ = [
    "EMBEDDER_KINDS",
    "Embedder",
    "EmbedderConfigError",
    "EmbedderUnavailable",
    "EmbeddingError",
    "HashEmbedder",
    "OpenAICompatibleEmbedder",
    "SentenceTransformersEmbedder",
    "build_embedder",
    "cosine",
    "plan_batches",
    "retry_delay_s",
    "vector_from_bytes",
    "vector_to_bytes",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    @property
    def name(self) -> str:
        """The backend: `hash`, `openai` or `sentence-transformers`."""
        ...

    @property
    def model(self) -> str:
        """What produced the vectors; with `name` it keys the embedding cache."""
        ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_batch_size(self) -> int:
        """The most texts the backend takes at once; `embed` splits longer lists itself."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...

    async def aclose(self) -> None: ...


class EmbeddingError(Exception):
    """The backend could not embed the texts (after retries where they make sense)."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1) -> None:
        self.status_code = status_code
        self.attempts = attempts
        super().__init__(message)


class EmbedderConfigError(ValueError):
    """An embedder was configured with options it cannot work with."""


class EmbedderUnavailable(RuntimeError):
    """The embedder's optional dependency is not installed."""


# --- OpenAI-compatible endpoints --------------------------------------------------------------


def plan_batches(texts: Sequence[str], max_items: int, max_chars: int) -> list[range]:
    """Consecutive index ranges of at most `max_items` texts and about `max_chars` characters.

    A single text longer than `max_chars` still gets a batch of its own: the endpoint decides.
    """
    batches: list[range] = []
    start = 0
    chars = 0
    for index, text in enumerate(texts):
        size = len(text)
        if index > start and (index - start >= max_items or chars + size > max_chars):
            batches.append(range(start, index))
            start, chars = index, 0
        chars += size
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def retry_delay_s(
    attempt: int,
    headers: httpx.Headers | None,
    *,
    base_s: float,
    max_s: float,
    now: float,
    jitter: float,
) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    The server's `retry-after-ms` or `retry-after` (seconds or an HTTP date) wins, capped at
    `max_s`; otherwise exponential backoff from `base_s`, scaled by `jitter` in [0.5, 1] so that
    throttled clients do not retry in step. `now` is a `time.time()` value.
    """
    if headers is not None:
        told = retry_after_s(headers, now)
        if told is not None:
            return min(max(told, 0.0), max_s)
    return min(base_s * 2.0 ** (attempt - 1), max_s) * jitter


# Decoding a few megabytes of JSON floats takes tens of milliseconds: too long for the event loop.
_PARSE_IN_THREAD_BYTES = 256 * 1024


def _is_retryable(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


class OpenAICompatibleEmbedder:
    """`POST {base_url}/embeddings` on OpenAI, Ollama, vLLM, TEI or anything speaking the API.

    Texts go in batches of at most `batch_size` items and `max_request_chars` characters, up to
    `max_concurrency` requests at a time. 429 and 5xx answers and transport errors are retried
    with exponential backoff (honouring `retry-after`) up to `max_retries` times, then the call
    fails with `EmbeddingError`; other 4xx answers fail at once.

    `dimensions`, when given, is checked against every answer (and sent as a request field with
    `send_dimensions`, for models that can shorten their vectors); when not, it is learned from
    the first answer and is 0 until then.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        batch_size: int = 128,
        max_retries: int = 5,
        timeout: float = 60.0,
        *,
        dimensions: int | None = None,
        send_dimensions: bool = False,
        max_request_chars: int = 1_000_000,
        max_concurrency: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if batch_size < 1:
            raise EmbedderConfigError(f"batch_size must be positive, got {batch_size}")
        if max_retries < 0:
            raise EmbedderConfigError(f"max_retries must not be negative, got {max_retries}")
        if max_concurrency < 1:
            raise EmbedderConfigError(f"max_concurrency must be positive, got {max_concurrency}")
        if not model:
            raise EmbedderConfigError("model must be named")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._dimensions = dimensions or 0
        self._send_dimensions = send_dimensions and dimensions is not None
        self._max_request_chars = max_request_chars
        self._max_concurrency = max_concurrency
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        # Sent with each request rather than set on the client, which may be the caller's.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._random = random.Random()

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch_size(self) -> int:
        return self._batch_size

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        batches = plan_batches(texts, self._batch_size, self._max_request_chars)
        if len(batches) == 1:
            return await self._embed_batch(texts)
        gate = asyncio.Semaphore(self._max_concurrency)

        async def run(batch: range) -> list[list[float]]:
            async with gate:
                return await self._embed_batch(texts[batch.start : batch.stop])

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run(batch)) for batch in batches]
        except ExceptionGroup as failed:
            # The first failure says what went wrong; the siblings were cancelled because of it.
            raise failed.exceptions[0] from None
        return [vector for task in tasks for vector in task.result()]

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self._model, "input": texts}
        if self._send_dimensions:
            body["dimensions"] = self._dimensions
        attempt = 0
        while True:
            attempt += 1
            headers: httpx.Headers | None = None
            try:
                response = await self._client.post(self._url, json=body, headers=self._headers)
            except httpx.RequestError as exc:  # connection, timeout, protocol errors
                problem = f"{type(exc).__name__}: {exc}"
                status: int | None = None
            else:
                if response.is_success:
                    if len(response.content) > _PARSE_IN_THREAD_BYTES:
                        return await asyncio.to_thread(self._vectors, response, len(texts), attempt)
                    return self._vectors(response, len(texts), attempt)
                status = response.status_code
                problem = f"HTTP {status}: {_excerpt(response.text)}"
                if not _is_retryable(status):
                    raise EmbeddingError(
                        f"embeddings request refused: {problem}", status_code=status, attempts=attempt
                    )
                headers = response.headers
            if attempt > self._max_retries:
                raise EmbeddingError(
                    f"embeddings request failed after {attempt} attempts: {problem}",
                    status_code=status,
                    attempts=attempt,
                )
            delay = retry_delay_s(
                attempt,
                headers,
                base_s=self._backoff_base_s,
                max_s=self._backoff_max_s,
                now=time.time(),
                jitter=self._random.uniform(0.5, 1.0),
            )
            logger.warning(
                "embeddings request failed (%s); retry %d of %d in %.2f s",
                problem,
                attempt,
                self._max_retries,
                delay,
                extra={"event": "embedder.retry", "status_code": status, "attempt": attempt},
            )
            await asyncio.sleep(delay)

    def _vectors(self, response: httpx.Response, expected: int, attempts: int) -> list[list[float]]:
        try:
            items = response.json()["data"]
            ordered = sorted(items, key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"malformed embeddings response: {type(exc).__name__}: {exc}", attempts=attempts
            ) from None
        if len(vectors) != expected:
            raise EmbeddingError(f"asked for {expected} embeddings, got {len(vectors)}", attempts=attempts)
        sizes = {len(vector) for vector in vectors}
        if len(sizes) != 1:
            raise EmbeddingError(f"embeddings of mixed sizes {sorted(sizes)}", attempts=attempts)
        size = sizes.pop()
        if self._dimensions == 0:
            self._dimensions = size
        elif size != self._dimensions:
            raise EmbeddingError(
                f"expected {self._dimensions}-dimensional embeddings, got {size}", attempts=attempts
            )
        return vectors


def _excerpt(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


# --- sentence-transformers --------------------------------------------------------------------


class SentenceTransformersEmbedder:
    """A sentence-transformers model loaded from a local directory; nothing is ever downloaded.

    The package is the optional extra `backburner[sentence-transformers]`. The model loads on first
    use in a thread; call `await load()` at start-up to pay that cost early. Encoding runs in a
    thread too (PyTorch releases the GIL).
    """

    name = "sentence-transformers"

    def __init__(self, model_path: str | Path, *, batch_size: int = 32, device: str | None = None) -> None:
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise EmbedderConfigError(
                f"sentence-transformers model {str(model_path)!r} is not a local directory; "
                "only local model paths are loaded (hub names are refused: nothing is downloaded)"
            )
        if importlib.util.find_spec("sentence_transformers") is None:
            raise EmbedderUnavailable(
                "the sentence-transformers embedder needs the optional extra: "
                "pip install 'backburner[sentence-transformers]'"
            )
        self._path = path.resolve()
        self._batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._dimensions = 0
        self._lock = asyncio.Lock()

    @property
    def model(self) -> str:
        return self._path.name

    @property
    def dimensions(self) -> int:
        if self._model is None:
            self._load_sync()  # blocking; `load()` first avoids it
        return self._dimensions

    @property
    def max_batch_size(self) -> int:
        return self._batch_size

    async def load(self) -> None:
        async with self._lock:
            if self._model is None:
                await asyncio.to_thread(self._load_sync)

    def _load_sync(self) -> None:
        if self._model is not None:
            return
        # Set before the import: huggingface_hub reads them once, and they forbid any download.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(f"sentence-transformers cannot be imported: {exc}") from exc
        model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
        self._dimensions = int(model.get_sentence_embedding_dimension() or 0)
        self._model = model
        logger.info(
            "loaded sentence-transformers model %s (%d dimensions)",
            self._path,
            self._dimensions,
            extra={"event": "embedder.model_loaded"},
        )

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        await self.load()
        return await asyncio.to_thread(self._encode, texts)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        encoded = self._model.encode(
            texts, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return [[float(x) for x in row] for row in encoded.tolist()]

    async def aclose(self) -> None:
        self._model = None


# --- factory ----------------------------------------------------------------------------------

_FACTORIES: dict[str, Callable[..., Embedder]] = {
    "hash": HashEmbedder,
    "openai": OpenAICompatibleEmbedder,
    "sentence-transformers": SentenceTransformersEmbedder,
}
EMBEDDER_KINDS = frozenset(_FACTORIES)


def build_embedder(kind: str, **options: Any) -> Embedder:
    """An embedder of `kind` (`hash`, `openai`, `sentence-transformers`) built from `options`,
    the keyword arguments of its class."""
    try:
        factory = _FACTORIES[kind]
    except KeyError:
        raise EmbedderConfigError(
            f"unknown embedder {kind!r}; choose one of {', '.join(sorted(_FACTORIES))}"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise EmbedderConfigError(f"bad options for the {kind} embedder: {exc}") from None
