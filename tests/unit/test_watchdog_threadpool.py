"""The instrumented thread pool counts its running and waiting work."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from backburner.monitoring.threadpool import (
    InstrumentedThreadPoolExecutor,
    ThreadPoolMetrics,
    ThreadPoolStats,
    default_max_workers,
)

DEADLINE_S = 5.0


@pytest.fixture
def pool() -> Iterator[InstrumentedThreadPoolExecutor]:
    executor = InstrumentedThreadPoolExecutor(max_workers=2, thread_name_prefix="test-pool")
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


class Gate:
    """Holds workers until released, and tells when a given number have started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._started = threading.Semaphore(0)

    def work(self, value: int) -> int:
        self._started.release()
        if not self.release.wait(DEADLINE_S):
            raise TimeoutError("gate never released")
        return value

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self._started.acquire(timeout=DEADLINE_S)


def test_active_and_queued_while_workers_are_held(pool: InstrumentedThreadPoolExecutor) -> None:
    gate = Gate()
    futures = [pool.submit(gate.work, n) for n in range(5)]
    gate.wait_started(2)

    assert pool.stats() == ThreadPoolStats(
        max_workers=2, active=2, queued=3, submitted_total=5, completed_total=0
    )

    gate.release.set()
    assert [future.result(DEADLINE_S) for future in futures] == [0, 1, 2, 3, 4]
    assert pool.stats() == ThreadPoolStats(
        max_workers=2, active=0, queued=0, submitted_total=5, completed_total=5
    )


def test_failures_count_as_completed(pool: InstrumentedThreadPoolExecutor) -> None:
    def fail() -> None:
        raise ValueError("bad input")

    future = pool.submit(fail)
    with pytest.raises(ValueError, match="bad input"):
        future.result(DEADLINE_S)
    stats = pool.stats()
    assert (stats.active, stats.queued, stats.completed_total) == (0, 0, 1)


def test_cancelled_queued_work_leaves_the_queue(pool: InstrumentedThreadPoolExecutor) -> None:
    gate = Gate()
    running = [pool.submit(gate.work, n) for n in range(2)]
    gate.wait_started(2)
    waiting = pool.submit(gate.work, 99)
    assert pool.stats().queued == 1

    assert waiting.cancel()
    assert pool.stats().queued == 0

    gate.release.set()
    for future in running:
        future.result(DEADLINE_S)
    assert pool.stats().active == 0


def test_worker_threads_carry_the_name_prefix(pool: InstrumentedThreadPoolExecutor) -> None:
    assert pool.submit(lambda: threading.current_thread().name).result(DEADLINE_S).startswith("test-pool")


def test_default_size_matches_the_standard_executor() -> None:
    executor = InstrumentedThreadPoolExecutor()
    try:
        assert executor.stats().max_workers == default_max_workers()
    finally:
        executor.shutdown()


async def test_as_the_default_executor_it_measures_to_thread(pool: InstrumentedThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(pool)
    gate = Gate()
    calls = [asyncio.create_task(asyncio.to_thread(gate.work, n)) for n in range(3)]
    # Waited for on a thread of its own: the pool's two threads are both held.
    with ThreadPoolExecutor(max_workers=1) as waiter:
        await loop.run_in_executor(waiter, gate.wait_started, 2)

    stats = pool.stats()
    assert (stats.active, stats.queued) == (2, 1)

    gate.release.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), DEADLINE_S) == [0, 1, 2]


def test_metrics_read_the_pool_at_scrape_time(pool: InstrumentedThreadPoolExecutor) -> None:
    registry = CollectorRegistry()
    metrics = ThreadPoolMetrics(registry)
    metered = InstrumentedThreadPoolExecutor(max_workers=1, thread_name_prefix="metered", metrics=metrics)
    try:
        gate = Gate()
        futures = [metered.submit(gate.work, n) for n in range(3)]
        gate.wait_started(1)

        def value(name: str) -> float | None:
            return registry.get_sample_value(name, {"pool": "metered"})

        assert value("backburner_threadpool_max_workers") == 1
        assert value("backburner_threadpool_active") == 1
        assert value("backburner_threadpool_queued") == 2
        gate.release.set()
        for future in futures:
            future.result(DEADLINE_S)
        assert value("backburner_threadpool_active") == 0
        assert value("backburner_threadpool_queued") == 0
    finally:
        metered.shutdown()
