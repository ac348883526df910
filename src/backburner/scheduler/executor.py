"""An APScheduler executor that runs each due tick as a task of ours, given its fire time.

APScheduler 3 does not pass the scheduled time to the job; the run's key needs it. The tasks
are kept so that a step-down can cancel the leader-only work still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor

TickFunction = Callable[[datetime], Coroutine[Any, Any, None]]


class TickExecutor(BaseExecutor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        fire_time = run_times[-1]  # coalesced: only the latest missed tick runs
        function: TickFunction = job.func
        task = asyncio.get_running_loop().create_task(
            function(fire_time), name=f"job:{job.id}@{fire_time.isoformat()}"
        )
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(job.id, done))

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            self._run_job_success(job_id, [])
        else:  # the tick function records its own failures; this is a bug in it
            self._run_job_error(job_id, exc, exc.__traceback__)

    def running(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def cancel_all(self) -> list[asyncio.Task[None]]:
        tasks = self.running()
        for task in tasks:
            task.cancel()
        return tasks

    def shutdown(self, wait: bool = True) -> None:
        self.cancel_all()
