"""The process pool: results and errors come back, and a task that must stop takes its process
with it, while the pool replaces the process and other tasks go on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psutil
import pytest

from backburner.files.pool.child import POOL_NICENESS, RemoteTaskError
from backburner.files.pool.process_pool import (
    ProcessPool,
    TaskFailed,
    TaskLimits,
    TaskOverCpu,
    TaskOverMemory,
    TaskTimedOut,
)
from tests.support import pool_tasks

PRELOAD = ["backburner.files.pool.child", "tests.support.pool_tasks"]


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    pool = ProcessPool(2, memory_limit_bytes=64 * 1024 * 1024, preload=PRELOAD)
    await asyncio.wait_for(pool.wait_started(), 60)
    yield pool
    pool.close()


async def gone(pid: int, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_results_and_errors_come_back(pool: ProcessPool) -> None:
    assert await pool.run(pool_tasks.add, 2, 3) == 5
    with pytest.raises(ValueError, match="bad input"):
        await pool.run(pool_tasks.fail, "bad input")
    with pytest.raises(RemoteTaskError, match="Unpicklable: holds a lock"):
        await pool.run(pool_tasks.fail_unpicklably)
    assert pool.replaced == 0
    assert set(pool.pids()) >= {await pool.run(pool_tasks.pid)}


async def test_a_task_over_its_time_is_killed_and_its_process_replaced(pool: ProcessPool) -> None:
    before = set(pool.pids())
    other = asyncio.create_task(pool.run(pool_tasks.spin, 1.0))
    with pytest.raises(TaskTimedOut, match=r"longer than 0\.5 s"):
        await pool.run(pool_tasks.spin, 30.0, limits=TaskLimits(wall_s=0.5))
    assert await asyncio.wait_for(other, 30) in before  # the other task finished undisturbed
    assert pool.replaced == 1
    after = set(pool.pids())
    assert len(after) == 2 and after != before
    for pid in before - after:
        assert await gone(pid, 5)
    assert await pool.run(pool_tasks.add, 1, 1) == 2


async def test_a_cancelled_task_stops_at_once(pool: ProcessPool) -> None:
    task = asyncio.create_task(pool.run(pool_tasks.spin, 60.0))
    busy: set[int] = set()
    while not busy:  # the process that took the task is the one burning CPU
        await asyncio.sleep(0.05)
        busy = {pid for pid in pool.pids() if psutil.Process(pid).cpu_times().user > 0.2}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (pid,) = busy
    assert await gone(pid, 1.0)
    assert await pool.run(pool_tasks.add, 2, 2) == 4


async def test_cpu_and_memory_limits_end_the_task(pool: ProcessPool) -> None:
    with pytest.raises(TaskOverCpu, match="more than 1 CPU-seconds"):
        await pool.run(pool_tasks.spin, 30.0, limits=TaskLimits(cpu_s=1.0))
    with pytest.raises(TaskOverMemory, match="memory limit of 64 MB"):
        await pool.run(pool_tasks.allocate, 256)
    assert await pool.run(pool_tasks.allocate, 8) == 8 * 1024 * 1024
    assert pool.replaced == 2


async def test_a_process_that_dies_is_replaced(pool: ProcessPool) -> None:
    with pytest.raises(TaskFailed, match="exit code 3"):
        await pool.run(pool_tasks.die)
    assert pool.replaced == 1
    results = await asyncio.gather(*(pool.run(pool_tasks.add, i, i) for i in range(10)))
    assert results == [2 * i for i in range(10)]


async def test_closing_kills_every_process() -> None:
    pool = ProcessPool(2, preload=PRELOAD)
    await pool.wait_started()
    pids = pool.pids()
    pool.close()
    for pid in pids:
        assert await gone(pid, 5)


async def test_pool_processes_yield_the_cpu_to_the_event_loop(pool: ProcessPool) -> None:
    main = psutil.Process().nice()
    assert {psutil.Process(pid).nice() for pid in pool.pids()} == {main + POOL_NICENESS}
