"""A `hash` file processed whole in a pool process: parse, chunk, embed and store.

With the `hash` embedder and a process pool, nothing about a file needs the main process: the
pool process parses and chunks it, makes the vectors and writes the passages itself, through
the same fenced `FileStore` writes, on a database connection of its own. The texts and vectors
(about 2 kB a chunk) then never cross back to the main process, which only claims files, keeps
their leases and enforces their deadlines.

Each pool process runs its database work on an event loop in a thread of its own, so that a
batch's write (and the database's work on it) overlaps the embedding of the next batch.

A worker that stops waiting (lease lost, deadline, deletion, shutdown) cannot interrupt the
call, but every write checks the lease and the status in its own transaction: the first write
after the file was taken away raises `LeaseLost` (or `IllegalTransition`) and the call ends
having changed nothing more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from backburner.clock import utcnow
from backburner.db.engine import create_engine_for_url
from backburner.files.offload import hash_embed_packed, parse_and_chunk
from backburner.files.parsers import ParseError
from backburner.files.states import IllegalTransition
from backburner.files.store import FileNotFound, FileRecord, FileStore, Lease, LeaseLost, PassageRow
from backburner.logs import describe_error

T = TypeVar("T")

# Passages per write: the vectors are made here, so no endpoint's batch limit applies, and
# fewer, larger writes cost both sides less.
WRITE_BATCH = 512
# A pool process makes its writes one after another: one connection, and one spare.
PROCESS_DB_POOL_SIZE = 1
PROCESS_DB_MAX_OVERFLOW = 1
PROCESS_DB_POOL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class IngestJob:
    database_url: str  # with its password: it only travels to this machine's pool processes
    path: str  # the blob as a local file
    file: FileRecord  # as claimed
    lease: Lease
    lease_s: float
    chunk_size_chars: int
    chunk_overlap_chars: int
    dimensions: int
    embedding_model: str


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    total_chunks: int
    already_stored: int  # passages a previous attempt had stored
    parse_s: float
    chunk_s: float
    embed_s: float  # the file's running totals, earlier attempts included
    store_s: float

    @property
    def written(self) -> int:
        """Passages this call wrote."""
        return self.total_chunks - self.already_stored


class IngestFailed(RuntimeError):
    """Any other failure, described: the original exception (a driver's, say) may not survive
    the trip back from the pool process."""


def ingest_file(job: IngestJob) -> IngestOutcome:
    """Process one claimed file to COMPLETED in this (pool) process; raises ParseError for bad
    content, LeaseLost, IllegalTransition or FileNotFound once the file was taken away, and
    IngestFailed for anything else."""
    try:
        return _ingest(job)
    except (ParseError, LeaseLost, IllegalTransition, FileNotFound):
        raise
    except Exception as exc:
        raise IngestFailed(describe_error(exc)) from None


def _ingest(job: IngestJob) -> IngestOutcome:
    database = _process_database(job.database_url)
    store, file, lease = database.store, job.file, job.lease
    document = parse_and_chunk(
        job.path, file.file_name, file.content_type, job.chunk_size_chars, job.chunk_overlap_chars
    )
    texts = document.texts
    # The claimed record holds the progress of earlier attempts (`chunks_embedded` counts the
    # stored passages), and the lease keeps it so.
    stored = database.run(store.stored_chunk_indexes(file.id)) if file.chunks_embedded else set()
    todo = [index for index in range(len(texts)) if index not in stored]
    embed_s, store_s = file.embed_seconds or 0.0, file.store_seconds or 0.0
    # PARSING -> EMBEDDING goes ahead while the first batch is embedded.
    starting = database.submit(
        store.start_embedding(
            lease,
            utcnow(),
            total_chunks=len(texts),
            embedding_model=job.embedding_model,
            parse_s=document.parse_s,
            chunk_s=document.chunk_s,
        )
    )
    writing: concurrent.futures.Future[float] | None = None
    try:
        batches = write_batches(todo)
        for number, batch in enumerate(batches):
            began = time.perf_counter()
            vectors = hash_embed_packed(job.dimensions, [texts[index] for index in batch])
            embed_s += time.perf_counter() - began
            if writing is None:
                starting.result()
            else:
                store_s += writing.result()
            rows = [PassageRow(i, texts[i], vector) for i, vector in zip(batch, vectors, strict=True)]
            write = store.store_passages(
                lease,
                file,
                rows,
                utcnow(),
                lease_s=job.lease_s,
                embed_s=embed_s,
                store_s=store_s,
                finish=number == len(batches) - 1,  # the last batch completes the file
            )
            writing = database.submit(_timed(write))
        if writing is None:
            starting.result()
            database.run(store.complete(lease, utcnow(), embed_s=embed_s, store_s=store_s))
        else:
            store_s += writing.result()
    finally:
        # On a failure, no write of this call goes on after it returns.
        pending: list[concurrent.futures.Future[Any]] = [starting, writing] if writing else [starting]
        concurrent.futures.wait(pending)
    return IngestOutcome(
        total_chunks=len(texts),
        already_stored=len(texts) - len(todo),
        parse_s=document.parse_s,
        chunk_s=document.chunk_s,
        embed_s=embed_s,
        store_s=store_s,
    )


def write_batches(todo: list[int]) -> list[list[int]]:
    """`todo` in slices of at most WRITE_BATCH."""
    return [todo[start : start + WRITE_BATCH] for start in range(0, len(todo), WRITE_BATCH)]


async def _timed(write: Coroutine[Any, Any, object]) -> float:
    started = time.perf_counter()
    await write
    return time.perf_counter() - started


class ProcessDatabase:
    """A file store on an event loop in a daemon thread of this process."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pool-database", daemon=True)
        self._thread.start()
        self.store = FileStore(
            create_engine_for_url(
                url,
                pool_size=PROCESS_DB_POOL_SIZE,
                max_overflow=PROCESS_DB_MAX_OVERFLOW,
                pool_timeout=PROCESS_DB_POOL_TIMEOUT_S,
            )
        )

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.submit(work).result()

    def close(self) -> None:
        self.run(self.store.engine.dispose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


_databases: dict[str, ProcessDatabase] = {}
_databases_lock = threading.Lock()


def _process_database(url: str) -> ProcessDatabase:
    with _databases_lock:
        database = _databases.get(url)
        if database is None:
            database = _databases[url] = ProcessDatabase(url)
        return database


def close_process_databases() -> None:
    """Close this process's connections (for a process that called `ingest_file` itself)."""
    with _databases_lock:
        while _databases:
            _databases.popitem()[1].close()
