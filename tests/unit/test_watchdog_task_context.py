"""What Backburner is doing, readable in-context and from the watchdog thread."""

from __future__ import annotations

import asyncio
import threading

from backburner.monitoring.task_context import (
    Activity,
    activity_of_task,
    activity_of_thread,
    current_activity,
    doing,
)


def test_nothing_outside_a_block() -> None:
    assert current_activity() is None
    assert activity_of_thread(threading.get_ident()) is None


def test_nested_blocks_refine_and_restore() -> None:
    with doing(file_id="file-1") as outer:
        assert outer == Activity(file_id="file-1")
        with doing(stage="parsing") as inner:
            assert inner == Activity(file_id="file-1", stage="parsing")
            assert current_activity() == inner
            assert activity_of_thread(threading.get_ident()) == inner
        assert current_activity() == outer
        assert activity_of_thread(threading.get_ident()) == outer
    assert current_activity() is None
    assert activity_of_thread(threading.get_ident()) is None


def test_as_dict_keeps_set_fields_only() -> None:
    assert Activity(file_id="f", stage="embedding").as_dict() == {"file_id": "f", "stage": "embedding"}


async def test_tasks_are_registered_by_task_not_by_thread() -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def job(job_id: str) -> None:
        with doing(job_id=job_id):
            inside.set()
            await release.wait()

    first = asyncio.create_task(job("job-1"))
    await asyncio.wait_for(inside.wait(), 5)
    inside.clear()
    second = asyncio.create_task(job("job-2"))
    await asyncio.wait_for(inside.wait(), 5)

    # Both interleave on one thread; each task keeps its own activity.
    assert activity_of_task(first) == Activity(job_id="job-1")
    assert activity_of_task(second) == Activity(job_id="job-2")
    assert activity_of_thread(threading.get_ident()) is None

    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert activity_of_task(first) is None
    assert activity_of_task(second) is None


async def test_a_cancelled_task_leaves_no_entry() -> None:
    inside = asyncio.Event()

    async def job() -> None:
        with doing(job_id="job-3"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(job())
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert activity_of_task(task) is None


async def test_child_tasks_inherit_the_activity_in_context() -> None:
    async def child() -> Activity | None:
        return current_activity()

    with doing(job_id="job-4"):
        inherited = await asyncio.wait_for(asyncio.create_task(child()), 5)
    assert inherited == Activity(job_id="job-4")


def test_other_threads_see_a_thread_activity() -> None:
    entered = threading.Event()
    release = threading.Event()
    idents: list[int] = []

    def worker() -> None:
        idents.append(threading.get_ident())
        with doing(file_id="file-9", stage="parsing"):
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert entered.wait(5)
        assert activity_of_thread(idents[0]) == Activity(file_id="file-9", stage="parsing")
        assert current_activity() is None  # not this thread's
    finally:
        release.set()
        thread.join(5)
    assert activity_of_thread(idents[0]) is None
