"""A worker whose files run whole in a pool process claims its next file and queues it there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from backburner.files.states import FileStatus
from backburner.files.worker import FileWorker
from backburner.runtime import Runtime
from tests.conftest import MakeSettings
from tests.support.files import (
    ORG,
    add_file,
    component,
    create_source,
    filler_paragraphs,
    wait_file,
    wait_for,
)

LONG = "\n\n".join(filler_paragraphs(4000)).encode()  # long enough to still run when the next is claimed
# Long enough (9 MB, seconds of work) to still run when its runtime is shut down.
LONGER = "\n\n".join(filler_paragraphs(20_000)).encode()
SHORT = "\n\n".join(filler_paragraphs(20, seed=3)).encode()


def pool_settings(make_settings: MakeSettings, url: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": url,
        "file_processing_workers": 1,
        "file_processing_processes": 1,
        "file_poll_interval_seconds": 0.1,
        **overrides,
    }
    return make_settings(**values)


async def _two_files(make_settings: MakeSettings, url: str, long: bytes = LONG) -> tuple[str, str]:
    """A long file, then a short one, waiting for a worker (none runs here)."""
    async with Runtime(
        pool_settings(make_settings, url, file_processing_workers=0), role="worker"
    ) as runtime:
        await runtime.wait_ready(30)
        source_id = await create_source(runtime)
        first = await add_file(runtime, source_id, long, name="long.md")
        second = await add_file(runtime, source_id, SHORT, name="short.md")
        return first.id, second.id


@asynccontextmanager
async def _holding_both(make_settings: MakeSettings, url: str) -> AsyncIterator[tuple[Runtime, FileWorker]]:
    """A runtime with one worker, once it holds both files."""
    async with Runtime(pool_settings(make_settings, url), role="worker") as runtime:
        await runtime.wait_ready(30)
        [worker] = component(runtime).workers

        async def both_held() -> bool:
            return len(worker.active) == 2

        await wait_for(both_held, 30, "the worker to hold both files")
        yield runtime, worker


async def test_the_next_file_waits_in_the_pool_and_starts_its_clock_when_the_first_ends(
    make_settings: MakeSettings, sqlite_url: str
) -> None:
    long_id, short_id = await _two_files(make_settings, sqlite_url)
    async with _holding_both(make_settings, sqlite_url) as (runtime, worker):
        assert list(worker.active) == [long_id, short_id]  # the long one runs, the short one waits
        running, queued = worker.active[long_id], worker.active[short_id]
        assert (running.queued, queued.queued) == (False, True)
        claimed_at = queued.last_progress_at

        done = await wait_file(runtime, long_id, timeout_s=60)
        assert done.status is FileStatus.COMPLETED

        async def long_released() -> bool:
            return long_id not in worker.active

        await wait_for(long_released, 10, "the worker to let the long file go")
        assert not queued.queued and queued.last_progress_at > claimed_at  # its stall clock restarted
        short = await wait_file(runtime, short_id, timeout_s=60)
        assert short.status is FileStatus.COMPLETED
        assert (done.attempts, short.attempts) == (1, 1)
        assert (short.chunks_embedded, done.chunks_embedded) == (short.total_chunks, done.total_chunks)


async def test_a_shutdown_gives_back_the_running_and_the_queued_file(
    make_settings: MakeSettings, database_url: str
) -> None:
    long_id, short_id = await _two_files(make_settings, database_url, LONGER)
    async with _holding_both(make_settings, database_url):
        pass
    idle = pool_settings(make_settings, database_url, file_processing_workers=0)
    async with Runtime(idle, role="worker") as runtime:
        await runtime.wait_ready(30)
        for file_id in (long_id, short_id):
            record = await component(runtime).store.get_file(ORG, file_id)
            # Given back for any worker to claim at once, without using an attempt.
            assert record.status is not FileStatus.COMPLETED
            assert (record.lease_owner, record.attempts) == (None, 0), record

    async with Runtime(pool_settings(make_settings, database_url), role="worker") as runtime:
        await runtime.wait_ready(30)
        for file_id in (long_id, short_id):
            record = await wait_file(runtime, file_id, timeout_s=60)
            assert (record.status, record.attempts) == (FileStatus.COMPLETED, 1)
            assert record.chunks_embedded == record.total_chunks
