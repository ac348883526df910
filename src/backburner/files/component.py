"""File processing as one runtime component: its workers, its sweeper jobs, the blob store and
the service.

Entering it registers the leader-only file and blob sweeper jobs on the job registry (so it must
be entered before the scheduler) and starts `file_processing_workers` named worker tasks; leaving it cancels
them, and each gives its file back so that another instance takes it over at once.

A file stopped anywhere (cancelled, deleted or timed out through another instance, or taken by
the sweeper) stops here within `STOP_CHECK_INTERVAL_S`: the leases of the files in work are
checked together, and the processing of a file whose lease is gone is cancelled, which kills
its pool process if it is parsing.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from types import TracebackType

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.files.blobs import build_blob_store
from backburner.files.blobs.access import remove_stale_copies
from backburner.files.blobs.factory import warn_about_sharing
from backburner.files.blobs.health import BlobStoreHealth
from backburner.files.blobs.references import BlobReferences
from backburner.files.blobs.sweeper import BlobSweeper, BlobSweepMetrics, sweep_cutoff
from backburner.files.embedding.models import EmbeddingModels, SourceEmbedders
from backburner.files.embedding.strategy import Embedding, build_embedding
from backburner.files.metrics import FileMetrics
from backburner.files.pipeline.worker import FileWorker, StopReason, WorkerConfig
from backburner.files.pool.process_pool import ProcessPool
from backburner.files.reembed.service import ReembedService
from backburner.files.reembed.worker import ReembedConfig, ReembedWorker
from backburner.files.search.lexical import lexical_index
from backburner.files.search.searcher import Searcher
from backburner.files.search.vectors import VectorIndex
from backburner.files.service import FileService
from backburner.files.store import FileStores
from backburner.files.sweeper import FileSweeper
from backburner.logs import log_event
from backburner.scheduler.jobs import JobRegistry
from backburner.settings import Settings
from backburner.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STATUS_GAUGE_INTERVAL_S = 15.0
STOP_CHECK_INTERVAL_S = 0.5
# Imported once by the fork server, so that each pool process starts with its work loaded.
POOL_PRELOAD = [
    "backburner.files.pool.child",
    "backburner.files.pipeline.parse_job",
    "backburner.files.embedding.feature_hashing",
    # The parsers import these on first use; imported here, no pool process pays for it.
    "pypdf",
    "docx",
    "bs4",
]


class FileProcessing:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        clock: Clock,
        registry: CollectorRegistry,
        jobs: JobRegistry,
        instance_id: str,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.jobs = jobs
        self.config = WorkerConfig.from_settings(settings)
        self.metrics = FileMetrics(registry)
        self.stores = FileStores.on(engine)
        self.blobs = build_blob_store(settings, engine, clock)
        self.blob_health = BlobStoreHealth(self.blobs)
        self.blob_sweeper = BlobSweeper(
            self.blobs,
            BlobReferences(engine),
            clock,
            settings.blob_sweep_interval_seconds,
            BlobSweepMetrics(registry),
        )
        self.pool = ProcessPool(
            settings.effective_file_processes,
            memory_limit_bytes=settings.file_process_memory_limit_mb * 1024 * 1024,
            preload=POOL_PRELOAD,
        )
        claim_lock = asyncio.Lock()
        self.embedding: Embedding = build_embedding(settings, self.pool)
        self.models = EmbeddingModels(settings, self.pool, self.embedding)
        source_embedders = SourceEmbedders(self.models, self.stores.sources)
        self.sweeper = FileSweeper(
            self.stores.timeouts, self.config, clock, self.metrics, settings.file_sweep_interval_seconds
        )
        self.workers = [
            FileWorker(
                name=f"files.worker-{number}",
                instance_id=instance_id,
                leases=self.stores.leases,
                passages=self.stores.passages,
                blobs=self.blobs,
                pool=self.pool,
                embedders=source_embedders,
                config=self.config,
                clock=clock,
                metrics=self.metrics,
                claim_lock=claim_lock,
            )
            for number in range(settings.file_processing_workers)
        ]
        self.service = FileService(
            settings=settings,
            stores=self.stores,
            blobs=self.blobs,
            embedding=self.embedding,
            searcher=Searcher(
                engine,
                self.stores.passages,
                self.models.query_embedder,
                VectorIndex(self.stores.passages),
                lexical_index(engine),
            ),
            clock=clock,
            metrics=self.metrics,
            on_new_file=self.wake,
            on_stop_file=lambda file_id: self.stop_file(file_id, "deleted"),
            storage_problem=lambda: self.blob_health.problem,
        )
        # One per instance that processes files: a chunk is small, and the embedder batches.
        self.reembed_workers = []
        if settings.file_processing_workers:
            self.reembed_workers.append(
                ReembedWorker(
                    name="files.reembed",
                    instance_id=instance_id,
                    store=self.stores.reembeds,
                    models=self.models,
                    config=ReembedConfig.from_settings(settings),
                    clock=clock,
                )
            )
        self.reembed = ReembedService(
            sources=self.stores.sources,
            store=self.stores.reembeds,
            models=self.models,
            clock=clock,
            on_start=self.wake_reembed,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> FileProcessing:
        self.jobs.add(self.sweeper.job_spec())
        self.jobs.add(self.blob_sweeper.job_spec())
        warn_about_sharing(self.settings)
        self._stack.push_async_callback(self.blobs.aclose)
        await self._stack.enter_async_context(self.blob_health)
        await remove_stale_copies(self.settings.scratch_dir, sweep_cutoff(self.clock.now()))
        if self.workers:
            # The instance is ready once its workers can process files: until then its files
            # stay free for the workers of other instances.
            await self.pool.wait_started()
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._supervise(worker), name=worker.name))
        if self.workers:
            self._tasks.append(asyncio.create_task(self._watch_stops(), name="files.stop_watch"))
        for reembed_worker in self.reembed_workers:
            self._tasks.append(asyncio.create_task(self._supervise(reembed_worker), name=reembed_worker.name))
        self._tasks.append(asyncio.create_task(self._refresh_status_gauge(), name="files.status_gauge"))
        log_event(
            log, logging.INFO, "files.started", workers=len(self.workers), processes=self.pool.processes
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        self.pool.close()
        await self.models.aclose()
        await self.embedding.aclose()
        await self._stack.aclose()
        log_event(log, logging.INFO, "files.stopped")

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake()

    def wake_reembed(self) -> None:
        for worker in self.reembed_workers:
            worker.wake()

    def stop_file(self, file_id: str, reason: StopReason) -> None:
        for worker in self.workers:
            worker.cancel_file(file_id, reason)

    async def _supervise(self, worker: FileWorker | ReembedWorker) -> None:
        """Run a worker; a bug that escapes it is logged and the worker starts again."""
        while True:
            try:
                await worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("file worker crashed; restarting it", extra={"event": "files.worker_crashed"})
                await asyncio.sleep(self.config.poll_interval_s)

    async def _watch_stops(self) -> None:
        while True:
            await asyncio.sleep(STOP_CHECK_INTERVAL_S)
            leases = [worker.active.lease for worker in self.workers if worker.active is not None]
            if not leases:
                continue
            try:
                held = await self.stores.leases.held_of(leases)
            except Exception as exc:  # the heartbeat catches a lost lease too, a little later
                log_event(log, logging.DEBUG, "files.stop_check_failed", error=repr(exc))
                continue
            for lease in leases:
                if lease.file_id not in held:
                    self.stop_file(lease.file_id, "lease_lost")

    async def _refresh_status_gauge(self) -> None:
        while True:
            try:
                self.metrics.set_counts(await self.stores.catalog.count_by_status())
            except Exception as exc:  # a scrape shows the last known counts meanwhile
                log_event(log, logging.DEBUG, "files.count_failed", error=repr(exc))
            await asyncio.sleep(STATUS_GAUGE_INTERVAL_S)
