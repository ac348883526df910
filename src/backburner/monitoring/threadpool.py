"""A thread pool that says how big it is, how busy it is and how much work is waiting.

Blocking work (parsers, SDK calls without async support) runs here instead of on the loop.
When the pool is saturated, ``queued`` grows: that is the early sign of a loop waiting on
threads, before it shows as latency.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Gauge

__all__ = ["InstrumentedThreadPoolExecutor", "ThreadPoolMetrics", "ThreadPoolStats"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ThreadPoolStats:
    max_workers: int
    active: int  # work items running now
    queued: int  # submitted, not started yet
    submitted_total: int
    completed_total: int  # finished, with a result or an exception (cancelled ones excluded)

    def as_dict(self) -> dict[str, int]:
        return {
            "max_workers": self.max_workers,
            "active": self.active,
            "queued": self.queued,
            "submitted_total": self.submitted_total,
            "completed_total": self.completed_total,
        }


class ThreadPoolMetrics:
    """Gauges for thread pools, labelled by pool name, read from the pools at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.max_workers = Gauge(
            "backburner_threadpool_max_workers",
            "Size of the thread pool (its maximum number of worker threads).",
            ["pool"],
            registry=registry,
        )
        self.active = Gauge(
            "backburner_threadpool_active",
            "Work items running in the thread pool.",
            ["pool"],
            registry=registry,
        )
        self.queued = Gauge(
            "backburner_threadpool_queued",
            "Work items submitted to the thread pool and waiting for a free thread.",
            ["pool"],
            registry=registry,
        )

    def track(self, pool: str, stats: Callable[[], ThreadPoolStats]) -> None:
        self.max_workers.labels(pool=pool).set_function(lambda: stats().max_workers)
        self.active.labels(pool=pool).set_function(lambda: stats().active)
        self.queued.labels(pool=pool).set_function(lambda: stats().queued)


def default_max_workers() -> int:
    """The size ``ThreadPoolExecutor`` picks when none is given."""
    return min(32, (os.cpu_count() or 1) + 4)


class InstrumentedThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` counting its queued and running work.

    Works as the loop's default executor (``loop.set_default_executor``), so
    ``asyncio.to_thread`` and ``run_in_executor(None, ...)`` are measured too.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "backburner-worker",
        metrics: ThreadPoolMetrics | None = None,
    ) -> None:
        self.max_workers = max_workers if max_workers is not None else default_max_workers()
        super().__init__(max_workers=self.max_workers, thread_name_prefix=thread_name_prefix)
        self.name = thread_name_prefix
        self._counts_lock = threading.Lock()
        self._queued = 0
        self._active = 0
        self._submitted = 0
        self._completed = 0
        if metrics is not None:
            metrics.track(self.name, self.stats)

    def stats(self) -> ThreadPoolStats:
        with self._counts_lock:
            return ThreadPoolStats(
                max_workers=self.max_workers,
                active=self._active,
                queued=self._queued,
                submitted_total=self._submitted,
                completed_total=self._completed,
            )

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        with self._counts_lock:
            self._queued += 1
            self._submitted += 1
        try:
            future = super().submit(self._run, fn, args, kwargs)
        except BaseException:  # shut down: the work was never queued
            with self._counts_lock:
                self._queued -= 1
                self._submitted -= 1
            raise
        future.add_done_callback(self._on_done)
        return future

    def _run(self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _T:
        with self._counts_lock:
            self._queued -= 1
            self._active += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._counts_lock:
                self._active -= 1
                self._completed += 1

    def _on_done(self, future: Future[Any]) -> None:
        # A future cancelled while queued never reaches _run (a running one cannot be cancelled).
        if future.cancelled():
            with self._counts_lock:
                self._queued -= 1
