"""The task helpers that every background loop waits and stops with."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from backburner.tasks import cancel_and_wait, wait_event, wait_for

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _wait_for(event: asyncio.Event, timeout_s: float) -> None:
    """How the loops waited before: `asyncio.wait_for` on the event."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)


async def _cancel_as_the_event_is_set(wait: Wait, deadline_s: float) -> asyncio.Task[None]:
    """A loop that waits on an event, cancelled in the same turn of the event loop as the event
    is set (a role change waking the loop while its owner stops it, say)."""
    event = asyncio.Event()
    waiting = asyncio.Event()

    async def loop() -> None:
        while True:
            waiting.set()
            await wait(event, 60)
            event.clear()

    task = asyncio.create_task(loop())
    await waiting.wait()
    await asyncio.sleep(0)  # one turn, so that the loop is inside its wait
    event.set()
    task.cancel()
    await asyncio.wait([task], timeout=deadline_s)
    return task


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="Python 3.11's `wait_for` swallows it")
async def test_wait_for_swallows_a_cancel_that_arrives_as_the_event_is_set() -> None:
    task = await _cancel_as_the_event_is_set(_wait_for, 0.2)
    try:
        assert not task.done()  # still looping: why the loops no longer wait so
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


async def test_a_cancel_that_arrives_as_the_event_is_set_ends_the_loop() -> None:
    task = await _cancel_as_the_event_is_set(wait_event, 5)
    assert task.cancelled()


async def test_wait_for_returns_the_result_or_raises_timeout_error() -> None:
    async def answer() -> int:
        return 42

    assert await wait_for(answer(), 5) == 42
    assert await wait_for(answer(), None) == 42
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.Event().wait(), 0.01)


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 60) is True
    assert await wait_event(asyncio.Event(), -1) is False  # a deadline already past: no wait


async def test_cancel_and_wait_returns_once_every_task_has_ended() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel_and_wait(task, None)
    assert task.cancelled()
