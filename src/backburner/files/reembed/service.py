"""What the API asks of re-embedding: an estimate, a start, the progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backburner.clock import Clock
from backburner.files.embedding.models import EmbeddingModels, estimated_tokens
from backburner.files.store.reembeds import ReembedStore
from backburner.files.store.sources import SourceStore


class AlreadyActive(ValueError):
    def __init__(self, source_id: str, model: str) -> None:
        super().__init__(f"source {source_id} already searches with {model!r}: nothing to re-embed")


@dataclass(frozen=True, slots=True)
class ReembedEstimate:
    source_id: str
    model: str
    from_model: str
    passages: int
    tokens: int  # estimated from characters: no tokenizer is loaded
    cost_usd: float | None  # None when the price table has no price for the model


@dataclass(frozen=True, slots=True)
class ReembedProgress:
    source_id: str
    status: str  # `none` (never re-embedded), `running`, `completed`
    model: str | None  # the target
    from_model: str | None
    active_model: str  # what search uses now
    done: int  # passages with a vector of the target
    total: int
    started_at: datetime | None
    finished_at: datetime | None


class ReembedService:
    def __init__(
        self,
        *,
        sources: SourceStore,
        store: ReembedStore,
        models: EmbeddingModels,
        clock: Clock,
        on_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.sources = sources
        self.store = store
        self.models = models
        self.clock = clock
        self._on_start = on_start

    async def estimate(self, organization_id: str, source_id: str, model: str) -> ReembedEstimate:
        """Raises SourceNotFound, UnknownModel, AlreadyActive; changes nothing."""
        source = await self.sources.get(organization_id, source_id)
        target = self.models.resolve(model)
        active = self.models.active(source.embedding_model)
        if target == active:
            raise AlreadyActive(source_id, target)
        passages, chars = await self.store.lacking(source_id, target)
        tokens = estimated_tokens(chars)
        price = self.models.price_per_million_usd(target)
        cost = round(tokens * price / 1_000_000, 6) if price is not None else None
        return ReembedEstimate(source_id, target, active, passages, tokens, cost)

    async def start(self, organization_id: str, source_id: str, model: str) -> ReembedProgress:
        """Raises what `estimate` raises, and ReembedRunning."""
        estimate = await self.estimate(organization_id, source_id, model)
        self.models.get(estimate.model)  # built here, so that a bad endpoint setting fails now
        await self.store.start(
            organization_id, source_id, estimate.model, estimate.from_model, self.clock.now()
        )
        self._on_start()
        return await self.progress(organization_id, source_id)

    async def progress(self, organization_id: str, source_id: str) -> ReembedProgress:
        source_model, job = await self.store.with_active_model(organization_id, source_id)
        active = self.models.active(source_model)
        total = await self.store.passage_count(source_id)
        if job is None:
            return ReembedProgress(source_id, "none", None, None, active, 0, total, None, None)
        done = total
        if job.status == "running":
            lacking, _ = await self.store.lacking(source_id, job.model)
            done = max(0, total - lacking)
        return ReembedProgress(
            source_id,
            job.status.value,
            job.model,
            job.from_model,
            active,
            done,
            total,
            job.created_at,
            job.finished_at,
        )
