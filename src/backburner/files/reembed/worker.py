"""The re-embedding worker every instance runs: claims a chunk of a running re-embedding with a
lease, embeds its passages with the target model, writes their vectors fenced by the lease, and
switches the source to the target model once no passage lacks its vector.

A SIGKILLed instance's chunk is taken over when its lease expires; a chunk whose vectors were
written is done, whoever asks next. An instance that cannot build a job's model leaves the job
to the instances that can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass

from backburner.clock import Clock
from backburner.files.embedding.models import EmbeddingModels, UnknownModel
from backburner.files.embedding.strategy import ChunkEmbedder
from backburner.files.store.reembeds import ChunkLease, ChunkLeaseLost, ReembedJob, ReembedStore
from backburner.logs import describe_error, log_event
from backburner.settings import Settings
from backburner.tasks import wait_event, wait_for

log = logging.getLogger(__name__)

# Chunks looked at per claim; picked from at random so that instances rarely race for one.
CLAIM_CANDIDATES = 16


@dataclass(frozen=True)
class ReembedConfig:
    lease_s: float
    poll_interval_s: float
    passages_per_second: float | None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReembedConfig:
        return cls(
            lease_s=settings.file_lease_seconds,
            poll_interval_s=settings.file_poll_interval_seconds,
            passages_per_second=settings.reembed_passages_per_second,
        )


class ReembedWorker:
    def __init__(
        self,
        *,
        name: str,
        instance_id: str,
        store: ReembedStore,
        models: EmbeddingModels,
        config: ReembedConfig,
        clock: Clock,
    ) -> None:
        self.name = name
        self.instance_id = instance_id
        self.store = store
        self.models = models
        self.config = config
        self.clock = clock
        self._wake = asyncio.Event()
        self._random = random.Random()
        self._unbuildable: set[str] = set()  # models already logged as unbuildable here

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                worked = await self.step()
            except Exception as exc:  # the database may be away for a while: keep polling
                log_event(
                    log, logging.WARNING, "reembed.step_failed", worker=self.name, error=describe_error(exc)
                )
                worked = False
            if not worked:
                wait_s = self.config.poll_interval_s * self._random.uniform(0.8, 1.2)
                await wait_event(self._wake, wait_s)

    async def step(self) -> bool:
        """Embed one chunk of some running job, or switch a job that has none left. True if a
        chunk was done (there may be more at once)."""
        jobs = await self.store.running()
        # In random order: a large source's job never holds back another tenant's.
        self._random.shuffle(jobs)
        for job in jobs:
            embedder = self._embedder(job)
            if embedder is None:
                continue
            buckets = await self.store.open_chunks(job.source_id, job.model, CLAIM_CANDIDATES)
            if not buckets:
                if await self.store.switch(job, self.clock.now()):
                    log_event(
                        log,
                        logging.INFO,
                        "reembed.switched",
                        source_id=job.source_id,
                        model=job.model,
                        from_model=job.from_model,
                    )
                continue
            self._random.shuffle(buckets)
            for bucket in buckets:
                owner = f"{self.instance_id}/{self.name}/{uuid.uuid4().hex[:8]}"
                lease = await self.store.claim(
                    job.source_id, bucket, owner, self.clock.now(), self.config.lease_s
                )
                if lease is not None:
                    await self._embed_chunk(job, lease, embedder)
                    return True
        return False

    def _embedder(self, job: ReembedJob) -> ChunkEmbedder | None:
        try:
            return self.models.get(job.model).chunks
        except UnknownModel as exc:
            if job.model not in self._unbuildable:
                self._unbuildable.add(job.model)
                log_event(log, logging.WARNING, "reembed.model_unavailable", model=job.model, error=str(exc))
            return None

    async def _embed_chunk(self, job: ReembedJob, lease: ChunkLease, embedder: ChunkEmbedder) -> None:
        started = time.perf_counter()
        try:
            todo = await self.store.chunk_passages(lease, job.model)
            # Within the lease: past it, another worker may have the chunk and this one's write
            # would be refused anyway.
            vectors = await wait_for(
                embedder.embed_packed([p.text for p in todo]) if todo else _nothing(),
                self.config.lease_s * 0.8,
            )
            await self.store.store_vectors(
                lease,
                job.organization_id,
                job.model,
                [(p.id, v) for p, v in zip(todo, vectors, strict=True)],
                self.clock.now(),
            )
        except ChunkLeaseLost as exc:
            log_event(log, logging.INFO, "reembed.lease_lost", reason=str(exc))
            return
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # another instance takes it over at once
                await asyncio.shield(self.store.release(lease))
            raise
        except Exception as exc:
            log_event(
                log,
                logging.WARNING,
                "reembed.chunk_failed",
                source_id=job.source_id,
                bucket=lease.bucket,
                error=describe_error(exc),
            )
            with contextlib.suppress(Exception):
                await self.store.release(lease)
            await asyncio.sleep(self.config.poll_interval_s)
            return
        await self._pace(len(todo), time.perf_counter() - started)

    async def _pace(self, passages: int, took_s: float) -> None:
        rate = self.config.passages_per_second
        if rate is not None:
            await asyncio.sleep(max(0.0, passages / rate - took_s))


async def _nothing() -> list[bytes]:
    return []
