"""CPU-bound steps of file processing, off the event loop.

Parsing, chunking and `hash` embedding are pure Python or C work that holds the GIL, so a thread
would still slow the loop's own work down; with `file_processing_processes` > 0 they run in a
process pool (started lazily, with `spawn`: forking a process that runs threads and an event
loop is unsafe), otherwise in the runtime's thread pool. The functions sent to the pool are
top-level, take and return plain picklable values, and raise `ParseError` for bad input.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from backburner.files.chunking import iter_chunk_texts
from backburner.files.embedders import HashEmbedder
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


PARENT_CHECK_INTERVAL_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Pool-process initializer: exit when the parent is gone.

    A pool process waits on a queue whose pipe it also holds open, so it never sees the end of
    it: after the parent is SIGKILLed it would otherwise live on, idle, for ever.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def default_processes(cpu_count: int | None) -> int:
    """One per CPU: a pool process also waits on the database (it stores what it makes), and the
    main process, which only claims files and keeps their leases, needs little."""
    return max(1, cpu_count or 1)


class CpuPool:
    """Runs CPU-bound functions in a process pool (started by `start` or the first call), or in
    the default thread pool."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    @property
    def uses_processes(self) -> bool:
        return self.processes > 0

    def start(self, warm_up: Callable[[], object]) -> None:
        """Start every pool process now, in the background, each running `warm_up` (which imports
        what the pool's work needs): a process's start takes most of a CPU-second, which the
        first files would otherwise wait for."""
        if self.uses_processes:
            pool = self._pool_started()
            for _ in range(self.processes):
                pool.submit(warm_up)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args)
        if not self.uses_processes:
            return await loop.run_in_executor(None, call)
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

    def _pool_started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
