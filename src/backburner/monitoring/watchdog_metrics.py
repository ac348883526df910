"""Prometheus families of the event-loop watchdog.

Registered on the registry passed in, never on prometheus_client's global one, so several
runtimes (and tests) in one process do not collide.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backburner.monitoring.stall import CAUSES

__all__ = ["LOOP_LAG_BUCKETS_S", "WatchdogMetrics"]

# Fine at the bottom (a healthy loop lags by about a millisecond), up to the hang threshold.
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)


class WatchdogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.loop_lag = Histogram(
            "backburner_loop_lag_seconds",
            "How late the watchdog heartbeat ran on the event loop.",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=registry,
        )
        self.stalls = Counter(
            "backburner_loop_stalls",
            "Event-loop stalls longer than the stall threshold, by cause.",
            ["cause"],
            registry=registry,
        )
        self.hangs = Counter(
            "backburner_loop_hangs",
            "Event-loop stalls longer than the hang threshold.",
            registry=registry,
        )
        self.tasks = Gauge(
            "backburner_loop_tasks",
            "Unfinished asyncio tasks on the event loop.",
            registry=registry,
        )
        self.healthy = Gauge(
            "backburner_watchdog_healthy",
            "1 while the watchdog reports the loop healthy, 0 while degraded after a hang.",
            registry=registry,
        )
        for cause in CAUSES:  # export zeros, so rate() works from the first stall
            self.stalls.labels(cause=cause)
        self.healthy.set(1)

    def watch(self, tasks: Callable[[], int], healthy: Callable[[], bool]) -> None:
        """Read the task count and health at scrape time rather than keeping them updated."""
        self.tasks.set_function(lambda: float(tasks()))
        self.healthy.set_function(lambda: 1.0 if healthy() else 0.0)
