"""CPU-bound steps of file processing, off the event loop.

Parsing, chunking and `hash` embedding are pure Python or C work that holds the GIL, so a thread
would still slow the loop's own work down; with `file_processing_processes` > 0 they run in a
process pool (its processes forked from a fork server: forking a process that runs threads and
an event loop is unsafe), otherwise in the runtime's thread pool. The functions sent to the pool are
top-level, take and return plain picklable values, and raise `ParseError` for bad input.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from backburner.files.chunking import iter_chunk_texts
from backburner.files.embedders import HashEmbedder
from backburner.files.fork_server_main import main_path_for_fork_server
from backburner.files.parsers import ParseError, parser_for
from backburner.logs import log_event

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChunkedDocument:
    kind: str
    # Chunk i's text; plain strings cross the process boundary several times cheaper than
    # `Chunk` objects.
    texts: list[str]
    chars: int
    parse_s: float
    chunk_s: float


def parse_and_chunk(
    path: str, file_name: str, content_type: str | None, size_chars: int, overlap_chars: int
) -> ChunkedDocument:
    """Parse the file at `path` with the parser its name and type choose, then chunk the text."""
    parser = parser_for(file_name, content_type)
    if parser is None:
        raise ParseError(f"unsupported file type: {file_name}")
    started = time.perf_counter()
    document = parser(Path(path))
    parsed = time.perf_counter()
    texts = list(iter_chunk_texts(document.text, document.kind.value, size_chars, overlap_chars))
    return ChunkedDocument(
        kind=document.kind.value,
        texts=texts,
        chars=len(document.text),
        parse_s=parsed - started,
        chunk_s=time.perf_counter() - parsed,
    )


# One embedder per pool process and size: its token tables stay warm from batch to batch.
_process_embedders: dict[int, HashEmbedder] = {}


def hash_embed_packed(dimensions: int, texts: list[str]) -> list[bytes]:
    """`hash` vectors of `texts`, packed as float32 bytes (a quarter of a pickled float list)."""
    embedder = _process_embedders.get(dimensions)
    if embedder is None:
        embedder = _process_embedders.setdefault(dimensions, HashEmbedder(dimensions))
    return embedder.embed_packed_sync(texts)


def start_pool_process() -> None:
    """Pool-process initializer."""
    # What the fork server imported lives as long as the process: out of full collections
    # (a third of their time here) and never written to by them.
    gc.freeze()
    exit_with_parent()


def exit_with_parent() -> None:
    """Exit when the main process is gone.

    A pool process waits on a queue whose pipe it also holds open, so it never sees the end of
    it: after the main process is SIGKILLed it would otherwise live on, idle, for ever (and keep
    the fork server, which lives as long as its children, alive too).
    """
    parent = multiprocessing.parent_process()  # the main process, even when forked by the server
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # waits on a pipe that the main process's end closes
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def default_processes(cpu_count: int | None) -> int:
    """One per CPU: a pool process also waits on the database (it stores what it makes), and the
    main process, which only claims files and keeps their leases, needs little."""
    return max(1, cpu_count or 1)


# Imported once by the fork server, before it forks any pool process: the main module (which
# each pool process would otherwise import again) and the pool's own work.
FORK_SERVER_PRELOAD = ["backburner.files.fork_server_main", "backburner.files.pool_ingest"]


def _fork_server() -> multiprocessing.context.BaseContext:
    """Pool processes are forked from a fork server: a fresh, single-threaded process (forking
    this one, which runs threads and an event loop, would be unsafe) that has imported what they
    need once, so that each starts in milliseconds rather than most of a CPU-second."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORK_SERVER_PRELOAD)
    main_path_for_fork_server()
    return context


def _log_start_failure(starting: asyncio.Future[None]) -> None:
    if not starting.cancelled() and (exc := starting.exception()) is not None:
        log_event(log, logging.ERROR, "files.pool_start_failed", error=repr(exc))


class CpuPool:
    """Runs CPU-bound functions in a process pool, or in the default thread pool.

    The processes start with `start` (or the first call), in a thread: the first start waits for
    the fork server's imports, which must not hold up the event loop.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._starting: asyncio.Future[None] | None = None

    @property
    def uses_processes(self) -> bool:
        return self.processes > 0

    def start(self) -> None:
        """Start every pool process now, so that the first files do not wait for them."""
        if self.uses_processes and self._starting is None:
            self._starting = asyncio.get_running_loop().run_in_executor(None, self._start_processes)
            self._starting.add_done_callback(_log_start_failure)

    def _start_processes(self) -> None:
        pool = self._pool_started()
        try:
            # A submission forks a process while there are fewer than `processes`; the answers
            # say they run.
            for started in [pool.submit(os.getpid) for _ in range(self.processes)]:
                started.result()
        except (RuntimeError, CancelledError):  # closed while starting: the pool is shut down
            return

    async def run(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args)
        if not self.uses_processes:
            return await loop.run_in_executor(None, call)
        await self.wait_started()
        # After a broken pool this is a new one, whose processes fork from the running server.
        pool = self._pool_started()
        try:
            return await loop.run_in_executor(pool, call)
        except BrokenProcessPool:
            # A pool process died (killed, out of memory): the next call starts a new pool.
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                log_event(log, logging.ERROR, "files.pool_broken", processes=self.processes)
            raise

    async def wait_started(self) -> None:
        """Return once the processes are up (at once without processes); raises what stopped
        them from starting, and the next call tries again."""
        if not self.uses_processes:
            return
        self.start()
        starting = self._starting
        assert starting is not None
        try:
            await asyncio.shield(starting)
        except Exception:
            if self._starting is starting:  # the next call tries again
                self._starting = None
            raise

    def _pool_started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=_fork_server(),
                initializer=start_pool_process,
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
