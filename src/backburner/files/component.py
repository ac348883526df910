"""File processing as one runtime component: its workers, its sweeper job and the service.

Entering it registers the leader-only sweeper job on the job registry (so it must be entered
before the scheduler) and starts `file_processing_workers` named worker tasks; leaving it cancels them,
and each gives its file back so that another instance takes it over at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from types import TracebackType

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from backburner.clock import Clock
from backburner.files.blobs import LocalBlobStore
from backburner.files.embedding_path import EmbeddingPath, build_embedding_path
from backburner.files.metrics import FileMetrics
from backburner.files.offload import CpuPool, default_processes
from backburner.files.service import FileService
from backburner.files.store import FileStore
from backburner.files.sweeper import FileSweeper
from backburner.files.worker import FileWorker, StopReason, WorkerConfig
from backburner.logs import log_event
from backburner.scheduler.jobs import JobRegistry
from backburner.settings import Settings
from backburner.tasks import cancel_and_wait

log = logging.getLogger(__name__)

STATUS_GAUGE_INTERVAL_S = 15.0


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
        self.jobs = jobs
        self.config = WorkerConfig.from_settings(settings)
        self.metrics = FileMetrics(registry)
        self.store = FileStore(engine)
        self.blobs = LocalBlobStore(settings.blob_dir)
        processes = settings.file_processing_processes
        self.pool = CpuPool(default_processes(os.cpu_count()) if processes is None else processes)
        self.embedding: EmbeddingPath = build_embedding_path(settings, self.pool)
        self.sweeper = FileSweeper(
            self.store, self.config, clock, self.metrics, settings.file_sweep_interval_seconds
        )
        self.workers = [
            FileWorker(
                name=f"files.worker-{number}",
                instance_id=instance_id,
                store=self.store,
                blobs=self.blobs,
                pool=self.pool,
                embedder=self.embedding.packed,
                config=self.config,
                clock=clock,
                metrics=self.metrics,
            )
            for number in range(settings.file_processing_workers)
        ]
        self.service = FileService(
            settings=settings,
            store=self.store,
            blobs=self.blobs,
            embedding=self.embedding,
            clock=clock,
            metrics=self.metrics,
            on_new_file=self.wake,
            on_stop_file=lambda file_id: self.stop_file(file_id, "deleted"),
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FileProcessing:
        self.jobs.add(self.sweeper.job_spec())
        if self.workers:
            self.pool.start()
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._supervise(worker), name=worker.name))
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
        await self.embedding.aclose()
        log_event(log, logging.INFO, "files.stopped")

    def wake(self) -> None:
        for worker in self.workers:
            worker.wake()

    def stop_file(self, file_id: str, reason: StopReason) -> None:
        for worker in self.workers:
            worker.cancel_file(file_id, reason)

    async def _supervise(self, worker: FileWorker) -> None:
        """Run a worker; a bug that escapes it is logged and the worker starts again."""
        while True:
            try:
                await worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("file worker crashed; restarting it", extra={"event": "files.worker_crashed"})
                await asyncio.sleep(self.config.poll_interval_s)

    async def _refresh_status_gauge(self) -> None:
        while True:
            try:
                self.metrics.set_counts(await self.store.count_by_status())
            except Exception as exc:  # a scrape shows the last known counts meanwhile
                log_event(log, logging.DEBUG, "files.count_failed", error=repr(exc))
            await asyncio.sleep(STATUS_GAUGE_INTERVAL_S)
