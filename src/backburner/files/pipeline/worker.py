"""File workers: claim a file with a lease, parse, chunk, embed and store it, keep the lease alive.

Each worker is one named task that processes one file at a time:

    claim (lease) -> PARSING -> parse + chunk (CPU pool) -> EMBEDDING -> embed in batches, each
    batch stored with its progress in one fenced transaction -> COMPLETED

Embedding goes through one interface (`ChunkEmbedder`), of the model the file's source searches
with: `hash` vectors are made in the process pool, remote embedders are called from the loop;
either way a few batches are embedded ahead of the write in progress.

A sibling task renews the lease every `file_lease_seconds / 3`; when the lease is lost (the file
was reclaimed, timed out or deleted) or the file made no progress for the stall timeout, it
cancels the processing, which then writes nothing more. The worker also cancels its own
processing at the file's deadline (created_at + `file_processing_timeout_minutes`) and moves the
file to ERROR with the timeout message. A reclaimed file resumes: parsing and chunking are
deterministic, and only chunks without a stored passage are embedded again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from backburner.clock import Clock
from backburner.files.blobs import BlobNotFound, BlobStore, local_path
from backburner.files.embedding.embedders import EmbeddingError
from backburner.files.embedding.models import SourceEmbedders
from backburner.files.embedding.strategy import ChunkEmbedder
from backburner.files.metrics import FileMetrics
from backburner.files.pipeline.budget import FileBudget, over_budget
from backburner.files.pipeline.parse_job import ChunkedDocument, parse_and_chunk
from backburner.files.pipeline.parsers import ParseError
from backburner.files.pool.process_pool import ProcessPool, TaskFailed, TaskLimits
from backburner.files.states import FileStatus, IllegalTransition, deadline, is_stalled
from backburner.files.store.leases import ClaimRules, LeaseStore
from backburner.files.store.passages import PassageStore
from backburner.files.store.records import (
    FileNotFound,
    FileRecord,
    Lease,
    LeaseLost,
    PassageRow,
    SourceModelChanged,
    queued_seconds,
)
from backburner.logs import describe_error, log_event
from backburner.settings import Settings
from backburner.tasks import cancel_and_wait, wait_event, wait_for

log = logging.getLogger(__name__)

StopReason = Literal["lease_lost", "stalled", "deleted"]
IndexedText = tuple[int, str]  # a chunk: its index in the file and its text
RELEASE_TIMEOUT_S = 5.0
# After this share of the lease without a successful heartbeat, the lease may have expired for
# the others: stop before another worker can claim the file.
HEARTBEAT_SAFETY = 0.8


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float
    max_attempts: int
    timeout_minutes: float
    timeout_message: str
    stall_minutes: float
    chunk_size_chars: int
    chunk_overlap_chars: int
    batch_size: int
    poll_interval_s: float
    org_cap: int
    budget: FileBudget
    embed_batches_in_flight: int = 3
    # Where a blob from a store without local files is copied for the pool processes to read.
    scratch_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            org_cap=settings.effective_file_org_cap,
            budget=FileBudget.from_settings(settings),
            lease_s=settings.file_lease_seconds,
            max_attempts=settings.file_max_attempts,
            timeout_minutes=settings.file_processing_timeout_minutes,
            timeout_message=settings.timeout_message(),
            stall_minutes=settings.file_stall_timeout_minutes,
            chunk_size_chars=settings.chunk_size_chars,
            chunk_overlap_chars=settings.chunk_overlap_chars,
            batch_size=settings.embedding_batch_size,
            poll_interval_s=settings.file_poll_interval_seconds,
            scratch_dir=settings.scratch_dir,
        )

    @property
    def heartbeat_s(self) -> float:
        return self.lease_s / 3


def remaining_s(created_at: datetime, now: datetime, timeout_minutes: float) -> float:
    """Seconds left before the file's deadline (negative once it has passed)."""
    return (deadline(created_at, timeout_minutes) - now).total_seconds()


def stall_message(stall_minutes: float, attempts: int) -> str:
    return f"File processing made no progress for {stall_minutes:g} minutes in {attempts} attempts."


def exhausted_message(attempts: int, reason: str) -> str:
    return f"File processing failed after {attempts} attempts: {reason}"


@dataclass
class ActiveFile:
    """The file a worker is processing now, and why its processing was stopped, if it was."""

    file_id: str
    lease: Lease
    last_progress_at: datetime
    task: asyncio.Task[None] | None = None
    stop_reason: StopReason | None = field(default=None)

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.task is not None:
            self.task.cancel(f"file {self.file_id}: {reason}")


class FileWorker:
    def __init__(
        self,
        *,
        name: str,
        instance_id: str,
        leases: LeaseStore,
        passages: PassageStore,
        blobs: BlobStore,
        pool: ProcessPool,
        embedders: SourceEmbedders,
        config: WorkerConfig,
        clock: Clock,
        metrics: FileMetrics,
        claim_lock: asyncio.Lock,
    ) -> None:
        self.name = name
        self.claim_lock = claim_lock
        self.instance_id = instance_id
        self.leases = leases
        self.passages = passages
        self.blobs = blobs
        self.pool = pool
        self.embedders = embedders
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.active: ActiveFile | None = None
        self._wake = asyncio.Event()
        self._random = random.Random()  # its own: the module's generator is shared state

    def wake(self) -> None:
        """Look for work now (a file was uploaded through this instance)."""
        self._wake.set()

    def cancel_file(self, file_id: str, reason: StopReason) -> bool:
        """Stop processing `file_id` if this worker is on it (it was deleted or cancelled)."""
        active = self.active
        if active is not None and active.file_id == file_id:
            active.stop(reason)
            return True
        return False

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            file = await self._claim_or_none()
            if file is not None:
                await self.process(file)
                continue
            await self._wait_for_work()

    async def _claim_or_none(self) -> FileRecord | None:
        try:
            return await self.claim()
        except Exception as exc:  # the database may be away for a while: keep polling
            log_event(log, logging.WARNING, "file.claim_failed", worker=self.name, error=repr(exc))
            return None

    async def claim(self) -> FileRecord | None:
        config = self.config
        rules = ClaimRules(
            lease_s=config.lease_s,
            max_attempts=config.max_attempts,
            timeout_minutes=config.timeout_minutes,
            org_cap=config.org_cap,
            owner_prefix=f"{self.instance_id}/",
        )
        # One claim at a time per instance: each counts this instance's files in work.
        async with self.claim_lock:
            return await self.leases.claim(
                f"{self.instance_id}/{self.name}/{uuid.uuid4().hex[:8]}", self.clock.now(), rules
            )

    async def _wait_for_work(self) -> None:
        """Until a wake-up or the poll interval (jittered, so that the workers of several
        instances do not poll in step)."""
        wait_s = self.config.poll_interval_s * self._random.uniform(0.8, 1.2)
        await wait_event(self._wake, wait_s)

    # --- one file ---------------------------------------------------------------------------

    async def process(self, file: FileRecord) -> None:
        """Process one claimed file to its end; raises only CancelledError (shutdown)."""
        assert file.lease_owner is not None
        lease = Lease(file.id, file.lease_owner)
        if file.attempts > 1:
            self.metrics.retries.inc()
        log_event(
            log,
            logging.INFO,
            "file.claimed",
            file_id=file.id,
            worker=self.name,
            attempt=file.attempts,
            status=file.status.value,
        )
        active = ActiveFile(file.id, lease, last_progress_at=self.clock.now())
        work = asyncio.create_task(self._pipeline(file, active), name=f"{self.name}.file:{file.id}")
        active.task = work
        self.active = active
        keeper = asyncio.create_task(self._keep_lease(active), name=f"{self.name}.lease:{file.id}")
        try:
            left_s = remaining_s(file.created_at, self.clock.now(), self.config.timeout_minutes)
            done, _ = await asyncio.wait({work}, timeout=max(0.0, left_s))
        except asyncio.CancelledError:
            await cancel_and_wait(work, keeper)
            await self._release_on_shutdown(lease)
            raise
        finally:
            self.active = None
        await cancel_and_wait(keeper)
        if work not in done:
            await cancel_and_wait(work)
            await self._time_out(file)
            return
        await self._settle(file, active, work)

    async def _pipeline(self, file: FileRecord, active: ActiveFile) -> None:
        lease, config = active.lease, self.config
        if file.status is FileStatus.PENDING:  # the claim moves it to PARSING; kept for safety
            file = await self.leases.transition(
                file.id, FileStatus.PARSING, self._progress(active), owner=lease.owner
            )
        try:
            async with local_path(self.blobs, file.blob_key, config.scratch_dir) as path:
                budget = config.budget
                document: ChunkedDocument = await self.pool.run(
                    parse_and_chunk,
                    str(path),
                    file.file_name,
                    file.content_type,
                    config.chunk_size_chars,
                    config.chunk_overlap_chars,
                    budget.parse,
                    limits=TaskLimits(
                        wall_s=budget.parse_s(file.size_bytes), cpu_s=budget.parse_s(file.size_bytes)
                    ),
                )
        except BlobNotFound as exc:
            raise ParseError(f"the uploaded content is missing from storage: {exc}") from None
        except TaskFailed as exc:
            message = over_budget(exc, config.budget, file.size_bytes)
            if message is None:
                raise
            raise ParseError(message) from None
        self._observe_parsed(document.parse_s, document.chunk_s)
        while True:  # again if the source switched models meanwhile (a re-embedding)
            choice = await self.embedders.for_file(file)
            embedder = choice.chunks
            try:
                file = await self.leases.start_embedding(
                    lease,
                    self._progress(active),
                    total_chunks=len(document.texts),
                    embedding_model=embedder.model,
                    parse_s=document.parse_s,
                    chunk_s=document.chunk_s,
                    warnings=document.warnings,
                    source_model=choice.source_model,
                )
                break
            except SourceModelChanged:
                continue
        # `chunks_embedded` counts the stored passages (both change in one transaction).
        stored = await self.passages.stored_chunk_indexes(file.id) if file.chunks_embedded else set()
        todo = [(index, text) for index, text in enumerate(document.texts) if index not in stored]
        if stored:
            log_event(log, logging.INFO, "file.resumed", file_id=file.id, stored=len(stored), todo=len(todo))
        if todo:
            # The last batch completes the file.
            embed_s, store_s = await self._embed_and_store(file, active, todo, embedder)
        else:
            embed_s, store_s = file.embed_seconds or 0.0, file.store_seconds or 0.0
            await self.leases.complete(lease, self._progress(active), embed_s=embed_s, store_s=store_s)
        self._observe_completed(file, len(document.texts), embed_s, store_s)

    async def _embed_and_store(
        self, file: FileRecord, active: ActiveFile, todo: Sequence[IndexedText], embedder: ChunkEmbedder
    ) -> tuple[float, float]:
        """Embed batches a few ahead of the writes; each write is one transaction. Returns the
        file's running (embed, store) seconds."""
        size = self.config.batch_size
        batches = [list(todo[i : i + size]) for i in range(0, len(todo), size)]
        embed_s, store_s = file.embed_seconds or 0.0, file.store_seconds or 0.0
        in_flight: deque[tuple[list[IndexedText], asyncio.Task[tuple[list[bytes], float]]]] = deque()

        last_batch = len(batches) - 1
        written = 0

        async def write_next() -> None:
            nonlocal embed_s, store_s, written
            batch, task = in_flight.popleft()
            vectors, batch_embed_s = await task
            embed_s += batch_embed_s
            rows = [PassageRow(i, text, v) for (i, text), v in zip(batch, vectors, strict=True)]
            started = time.perf_counter()
            await self.passages.store_batch(
                active.lease,
                file,
                rows,
                self._progress(active),
                lease_s=self.config.lease_s,
                embed_s=embed_s,
                store_s=store_s,
                finish=written == last_batch,
            )
            written += 1
            store_s += time.perf_counter() - started
            self.metrics.passages.inc(len(rows))

        try:
            for number, batch in enumerate(batches):
                task = asyncio.create_task(
                    self._embed(batch, embedder), name=f"{self.name}.embed:{file.id}:{number}"
                )
                in_flight.append((batch, task))
                if len(in_flight) >= self.config.embed_batches_in_flight:
                    await write_next()
            while in_flight:
                await write_next()
        finally:
            await cancel_and_wait(*(task for _, task in in_flight))
        return embed_s, store_s

    async def _embed(self, batch: list[IndexedText], embedder: ChunkEmbedder) -> tuple[list[bytes], float]:
        started = time.perf_counter()
        vectors = await embedder.embed_packed([text for _, text in batch])
        if len(vectors) != len(batch):
            raise EmbeddingError(f"asked for {len(batch)} embeddings, got {len(vectors)}")
        return vectors, time.perf_counter() - started

    def _progress(self, active: ActiveFile) -> datetime:
        now = self.clock.now()
        active.last_progress_at = now
        return now

    async def _keep_lease(self, active: ActiveFile) -> None:
        """Renew the lease; stop the processing when the lease is lost or the file stalls."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            now = self.clock.now()
            if is_stalled(active.last_progress_at, now, self.config.stall_minutes):
                active.stop("stalled")
                return
            try:
                progress = await self.leases.heartbeat(active.lease, now, self.config.lease_s)
            except Exception as exc:
                log_event(
                    log, logging.WARNING, "file.heartbeat_failed", file_id=active.file_id, error=repr(exc)
                )
                if loop.time() - last_ok > self.config.lease_s * HEARTBEAT_SAFETY:
                    active.stop("lease_lost")
                    return
                continue
            if progress is None:
                active.stop("lease_lost")
                return
            active.last_progress_at = max(active.last_progress_at, progress)
            last_ok = loop.time()

    # --- outcomes ---------------------------------------------------------------------------

    async def _settle(self, file: FileRecord, active: ActiveFile, work: asyncio.Task[None]) -> None:
        lease = active.lease
        if work.cancelled():
            await self._stopped(file, active)
            return
        exc = work.exception()
        if exc is None:
            return
        try:
            if isinstance(exc, ParseError):
                await self._fail(file, lease, exc.reason)
            elif isinstance(exc, EmbeddingError):
                await self._fail(file, lease, f"Embedding failed: {exc}")
            elif isinstance(exc, LeaseLost | IllegalTransition | FileNotFound):
                log_event(log, logging.INFO, "file.lease_lost", file_id=file.id, reason=str(exc))
            elif file.attempts >= self.config.max_attempts:
                log.error(
                    "file processing failed", exc_info=exc, extra={"event": "file.failed", "file_id": file.id}
                )
                await self._fail(file, lease, exhausted_message(file.attempts, describe_error(exc)))
            else:
                log.warning(
                    "file processing failed; released for another attempt",
                    exc_info=exc,
                    extra={"event": "file.attempt_failed", "file_id": file.id, "attempt": file.attempts},
                )
                await self.leases.release(lease, self.clock.now())
        except (LeaseLost, IllegalTransition, FileNotFound) as lost:
            log_event(log, logging.INFO, "file.lease_lost", file_id=file.id, reason=str(lost))
        except Exception as write_error:  # the lease expires on its own if this write fails
            log_event(log, logging.WARNING, "file.settle_failed", file_id=file.id, error=repr(write_error))

    async def _stopped(self, file: FileRecord, active: ActiveFile) -> None:
        reason = active.stop_reason or "lease_lost"
        log_event(log, logging.WARNING, f"file.{reason}", file_id=file.id, worker=self.name)
        if reason != "stalled":
            return
        self.metrics.stalls.inc()
        try:
            if file.attempts >= self.config.max_attempts:
                await self._fail(file, active.lease, stall_message(self.config.stall_minutes, file.attempts))
            else:
                await self.leases.release(active.lease, self.clock.now())
        except (LeaseLost, IllegalTransition, FileNotFound):
            pass
        except Exception as exc:
            log_event(log, logging.WARNING, "file.settle_failed", file_id=file.id, error=repr(exc))

    async def _fail(self, file: FileRecord, lease: Lease, message: str) -> None:
        done = await self.leases.fail(file.id, message, self.clock.now(), owner=lease.owner)
        log_event(log, logging.WARNING, "file.error", file_id=file.id, error=message)
        self.metrics.completed.labels(status=done.status.value).inc()

    async def _time_out(self, file: FileRecord) -> None:
        message = self.config.timeout_message
        try:
            done = await self.leases.fail(file.id, message, self.clock.now())
        except (IllegalTransition, FileNotFound):
            return  # finished, timed out by the sweeper, or deleted in the meantime
        except Exception as exc:
            log_event(log, logging.WARNING, "file.settle_failed", file_id=file.id, error=repr(exc))
            return
        self.metrics.timeouts.labels(enforcer="worker").inc()
        log_event(log, logging.WARNING, "file.timed_out", file_id=file.id, enforcer="worker")
        self.metrics.completed.labels(status=done.status.value).inc()

    async def _release_on_shutdown(self, lease: Lease) -> None:
        try:
            await wait_for(
                self.leases.release(lease, self.clock.now(), count_attempt=False), RELEASE_TIMEOUT_S
            )
        except Exception as exc:  # the lease then expires on its own
            log_event(log, logging.WARNING, "file.release_failed", file_id=lease.file_id, error=repr(exc))

    def _observe_parsed(self, parse_s: float, chunk_s: float) -> None:
        self.metrics.stage_seconds.labels(stage="parse").observe(parse_s)
        self.metrics.stage_seconds.labels(stage="chunk").observe(chunk_s)

    def _observe_completed(self, file: FileRecord, chunks: int, embed_s: float, store_s: float) -> None:
        self.metrics.completed.labels(status=FileStatus.COMPLETED.value).inc()
        queued = queued_seconds(file.created_at, file.started_at)
        stages = {"embed": embed_s, "store": store_s, "queued": queued}
        stages["total"] = (self.clock.now() - file.created_at).total_seconds()
        for stage, seconds in stages.items():
            if seconds is not None:
                self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
        log_event(log, logging.INFO, "file.completed", file_id=file.id, chunks=chunks, worker=self.name)
