"""What Backburner is doing right now: a job run, or a file at some stage.

Code marks its work with ``with doing(job_id=...)`` or ``with doing(file_id=..., stage=...)``.
Inside that block, ``current_activity()`` returns it (a context variable, so it follows the
task and is inherited by tasks created inside the block).

Context variables of another thread cannot be read, yet the watchdog thread must say what the
blocked loop was doing. So ``doing`` also records the activity in a registry keyed by its
*owner*: the running asyncio task when there is one, else the thread. The watchdog finds the
task that is running on the loop (see ``watchdog.running_task``) and looks it up with
``activity_of_task``; outside any task it uses ``activity_of_thread``. Keying by task rather
than by thread is what keeps this correct: many tasks interleave on the loop thread, and a
per-thread slot would name whichever task entered ``doing`` last, not the one running.

A child task inherits ``current_activity()`` through its context but is not in the registry
until it enters ``doing`` itself; the watchdog then reports no activity for it rather than a
guessed one.

Registry updates are single dict operations, atomic under the GIL, so readers on other
threads see either the old or the new value, never a torn one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import TypeVar

__all__ = [
    "Activity",
    "activity_of_task",
    "activity_of_thread",
    "current_activity",
    "doing",
]


@dataclass(frozen=True, slots=True)
class Activity:
    """One piece of Backburner work. Unset fields are None."""

    job_id: str | None = None
    file_id: str | None = None
    stage: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The set fields only, ready for logs and JSON."""
        return {key: value for key, value in asdict(self).items() if value is not None}


_Key = TypeVar("_Key")

_current: ContextVar[Activity | None] = ContextVar("backburner_activity", default=None)
_by_task: dict[asyncio.Task[object], Activity] = {}
_by_thread: dict[int, Activity] = {}


def current_activity() -> Activity | None:
    """The activity of the calling task or thread, or None outside any ``doing`` block."""
    return _current.get()


def activity_of_task(task: asyncio.Task[object]) -> Activity | None:
    """The activity a task entered with ``doing``; safe to call from any thread."""
    return _by_task.get(task)


def activity_of_thread(thread_ident: int) -> Activity | None:
    """The activity entered outside any task on a thread; safe to call from any thread."""
    return _by_thread.get(thread_ident)


@contextmanager
def doing(
    *, job_id: str | None = None, file_id: str | None = None, stage: str | None = None
) -> Iterator[Activity]:
    """Mark the enclosed code as working on a job or on a file stage.

    Nested blocks refine the outer one: ``doing(file_id="f1")`` then ``doing(stage="parsing")``
    gives file f1 at stage parsing. The previous activity is restored on exit.
    """
    parent = _current.get()
    activity = Activity(
        job_id=job_id if job_id is not None else (parent.job_id if parent else None),
        file_id=file_id if file_id is not None else (parent.file_id if parent else None),
        stage=stage if stage is not None else (parent.stage if parent else None),
    )
    token = _current.set(activity)
    try:
        task = _running_task()
        if task is not None:
            with _registered(_by_task, task, activity):
                yield activity
        else:
            with _registered(_by_thread, threading.get_ident(), activity):
                yield activity
    finally:
        _current.reset(token)


@contextmanager
def _registered(registry: dict[_Key, Activity], key: _Key, activity: Activity) -> Iterator[None]:
    previous = registry.get(key)
    registry[key] = activity
    try:
        yield
    finally:
        if previous is None:
            registry.pop(key, None)
        else:
            registry[key] = previous


def _running_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return None
