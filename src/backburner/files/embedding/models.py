"""The embedding models this deployment can build, by name, for re-embedding and for sources
whose active model is not the configured one.

Which names are possible follows from the settings: `hash` models at any size
(`feature-hash-v1-512`, or `hash-512` for short) always; with `embedder: openai`, any other model
name at the configured endpoint; with `sentence-transformers`, only the configured model.
Embedders are built on first use and kept; the configured one is the instance's `Embedding`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from backburner.files.embedding.cache import CachedEmbedder
from backburner.files.embedding.embedders import Embedder, HashEmbedder, build_embedder
from backburner.files.embedding.strategy import (
    ChunkEmbedder,
    Embedding,
    PoolHashEmbedder,
    RemoteEmbedder,
    embedder_options,
)
from backburner.files.pool.process_pool import ProcessPool
from backburner.files.store.records import FileRecord, SourceModel
from backburner.files.store.sources import SourceStore
from backburner.settings import Settings

MAX_HASH_DIMENSIONS = 8192
# Without a tokenizer, the usual rule of thumb for English text and BPE tokenizers.
CHARS_PER_TOKEN = 4
_HASH_NAME = re.compile(r"^(?:hash|feature-hash-v1)-(\d{1,5})$")
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")


class UnknownModel(ValueError):
    """A model this deployment cannot build; the message says why and what it can build."""


@dataclass(frozen=True, slots=True)
class ModelEmbedders:
    chunks: ChunkEmbedder  # for passages
    query: Embedder  # for search queries


def estimated_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


class EmbeddingModels:
    def __init__(self, settings: Settings, pool: ProcessPool, configured: Embedding) -> None:
        self.settings = settings
        self.pool = pool
        self.configured = configured
        self._built: dict[str, ModelEmbedders] = {
            configured.chunks.model: ModelEmbedders(configured.chunks, configured.query)
        }

    @property
    def default_model(self) -> str:
        """The model of the configured embedder: what a source without its own model uses."""
        return self.configured.chunks.model

    def active(self, source_model: str | None) -> str:
        return source_model or self.default_model

    def resolve(self, name: str) -> str:
        """The canonical name of the model `name`, or `UnknownModel` saying why it cannot be built."""
        name = name.strip()
        if name in self._built:
            return name
        if (match := _HASH_NAME.match(name)) is not None:
            dimensions = int(match.group(1))
            if not 1 <= dimensions <= MAX_HASH_DIMENSIONS:
                raise UnknownModel(
                    f"hash model {name!r}: dimensions must be between 1 and {MAX_HASH_DIMENSIONS}"
                )
            return HashEmbedder(dimensions).model
        if self.settings.embedder == "openai" and _REMOTE_NAME.match(name):
            return name
        raise UnknownModel(f"unknown embedding model {name!r}; {self._possible()}")

    def get(self, name: str) -> ModelEmbedders:
        model = self.resolve(name)
        built = self._built.get(model)
        if built is None:
            built = self._build(model)
            self._built[model] = built
        return built

    def query_embedder(self, source_model: str | None) -> Embedder:
        return self.get(self.active(source_model)).query

    def price_per_million_usd(self, model: str) -> float | None:
        price = self.settings.batch_prices.get(model)
        return price.input if price is not None else None

    def _build(self, model: str) -> ModelEmbedders:
        if (match := _HASH_NAME.match(model)) is not None:
            dimensions = int(match.group(1))
            return ModelEmbedders(PoolHashEmbedder(dimensions, self.pool), HashEmbedder(dimensions))
        options = embedder_options(self.settings) | {"model": model}
        cache = self.configured.cache
        embedder = build_embedder("openai", **options)
        query = CachedEmbedder(embedder, cache) if cache is not None else embedder
        return ModelEmbedders(RemoteEmbedder(query), query)

    def _possible(self) -> str:
        possible = f"this deployment can build {self.default_model!r} and hash models such as 'hash-512'"
        if self.settings.embedder == "openai":
            return possible + f" and models of the embeddings endpoint {self.settings.embedding_base_url}"
        return possible + " (set embedder: openai to use an OpenAI-compatible endpoint's models)"

    async def aclose(self) -> None:
        """The configured embedder is closed by its `Embedding`; the others here."""
        for model, built in self._built.items():
            if model != self.default_model and not isinstance(built.query, HashEmbedder):
                await built.query.aclose()


@dataclass(frozen=True, slots=True)
class EmbedderChoice:
    chunks: ChunkEmbedder
    # The source's model it was chosen by, for `LeaseStore.start_embedding` to check; None for a
    # resumed file, which keeps its model.
    source_model: SourceModel | None


class SourceEmbedders:
    """The embedder a file's passages are made with: its source's active model, read when the
    file starts embedding; a resumed file keeps the model its stored passages were made with."""

    def __init__(self, models: EmbeddingModels, sources: SourceStore) -> None:
        self.models = models
        self.sources = sources

    async def for_file(self, file: FileRecord) -> EmbedderChoice:
        if file.embedding_model is not None and file.chunks_embedded:
            return EmbedderChoice(self.models.get(file.embedding_model).chunks, None)
        source_model = await self.sources.active_model(file.source_id)
        chunks = self.models.get(self.models.active(source_model)).chunks
        return EmbedderChoice(chunks, SourceModel(source_model))
