"""File processing as one runtime component: its workers, its sweeper job and the service.

Entering it registers the leader-only sweeper job on `runtime.jobs` (so it must be entered before
the scheduler) and starts `file_processing_workers` named worker tasks; leaving it cancels them,
and each gives its file back so that another instance takes it over at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING

from backburner.files.blobs import build_blob_store
from backburner.files.blobs.access import remove_stale_copies
from backburner.files.blobs.factory import warn_about_sharing
from backburner.files.blobs.health import BlobStoreHealth
from backburner.files.blobs.references import BlobReferences
from backburner.files.blobs.sweeper import BlobSweeper, BlobSweepMetrics, sweep_cutoff
from backburner.files.embedding_path import EmbeddingPath, build_embedding_path
from backburner.files.metrics import FileMetrics
from backburner.files.offload import CpuPool, default_processes
from backburner.files.service import FileService
from backburner.files.store import FileStore
from backburner.files.sweeper import FileSweeper
from backburner.files.worker import FileWorker, StopReason, WorkerConfig
from backburner.logs import log_event
from backburner.tasks import cancel_and_wait

if TYPE_CHECKING:
    from backburner.runtime import Runtime

log = logging.getLogger(__name__)

COMPONENT_NAME = "files"
STATUS_GAUGE_INTERVAL_S = 15.0


class FileProcessing:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.config = WorkerConfig.from_settings(settings)
        self.metrics = FileMetrics(runtime.metrics.registry)
        self.store = FileStore(runtime.engine)
        self.blobs = build_blob_store(settings, runtime.engine, runtime.clock)
        self.blob_health = BlobStoreHealth(self.blobs)
        self.blob_sweeper = BlobSweeper(
            self.blobs,
            BlobReferences(runtime.engine),
            runtime.clock,
            settings.blob_sweep_interval_seconds,
            BlobSweepMetrics(runtime.metrics.registry),
        )
        processes = settings.file_processing_processes
        self.pool = CpuPool(default_processes(os.cpu_count()) if processes is None else processes)
        self.embedding: EmbeddingPath = build_embedding_path(settings, self.pool)
        self.sweeper = FileSweeper(
            self.store, self.config, runtime.clock, self.metrics, settings.file_sweep_interval_seconds
        )
        self.workers = [
            FileWorker(
                name=f"files.worker-{number}",
                instance_id=runtime.instance_id,
                store=self.store,
                blobs=self.blobs,
                pool=self.pool,
                embedder=self.embedding.packed,
                config=self.config,
                clock=runtime.clock,
                metrics=self.metrics,
            )
            for number in range(settings.file_processing_workers)
        ]
        self.service = FileService(
            settings=settings,
            store=self.store,
            blobs=self.blobs,
            embedding=self.embedding,
            clock=runtime.clock,
            metrics=self.metrics,
            on_new_file=self.wake,
            on_stop_file=lambda file_id: self.stop_file(file_id, "deleted"),
            storage_problem=lambda: self.blob_health.problem,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> FileProcessing:
        self.runtime.jobs.add(self.sweeper.job_spec())
        self.runtime.jobs.add(self.blob_sweeper.job_spec())
        warn_about_sharing(self.runtime.settings)
        self._stack.push_async_callback(self.blobs.aclose)
        await self._stack.enter_async_context(self.blob_health)
        await remove_stale_copies(self.runtime.settings.scratch_dir, sweep_cutoff(self.runtime.clock.now()))
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
        await self._stack.aclose()
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


def file_processing(runtime: Runtime) -> FileService:
    """The file service of a started runtime (LookupError while it is starting)."""
    component = runtime.components.get(COMPONENT_NAME)
    if not isinstance(component, FileProcessing):
        raise LookupError("file processing has not started yet")
    return component.service
