"""Helpers for the background tasks that components own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from backburner.logs import log_event

log = logging.getLogger(__name__)

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 has it (TimeoutError past `timeout_s`; None: no limit).

    On Python 3.11 the standard one returns normally when its caller is cancelled just as
    `awaitable` ends: the cancel is lost, and a loop stopped so runs on (its owner then waits
    for it until its shutdown timeout)."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` has passed; True if it is set."""
    with contextlib.suppress(TimeoutError):
        await wait_for(event.wait(), max(0.0, timeout_s))
    return event.is_set()


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks (None is skipped) and wait until all have finished unwinding.

    `asyncio.wait` rather than awaiting each task: a cancellation of the caller itself is not
    swallowed. An exception a task ended with is retrieved and logged at DEBUG: its owner is
    stopping it, having handled (or no longer needing) its outcome.
    """
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    if not started:
        return
    await asyncio.wait(started)
    for task in started:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log_event(log, logging.DEBUG, "task.stopped", task=task.get_name(), error=repr(exc))
