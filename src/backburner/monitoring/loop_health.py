"""The event loop's health: the sized, measured default executor and the watchdog.

The executor is process-wide state (the loop's default for `to_thread` and `run_in_executor`),
so only the `serve` and `worker` entry points install it, and they restore the previous one on
exit; the watchdog is a component of each runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor, ThreadPoolMetrics
from backburner.monitoring.watchdog import Watchdog
from backburner.monitoring.watchdog_config import WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics
from backburner.settings import Settings

POOL_NAME = "backburner-pool"
DEFAULT_HEARTBEAT_S = 0.025


def watchdog_config(settings: Settings) -> WatchdogConfig:
    url = settings.watchdog_alert_webhook_url
    return WatchdogConfig(
        enabled=settings.watchdog_enabled,
        check_interval_s=settings.watchdog_check_interval_seconds,
        hang_threshold_s=settings.watchdog_timeout_threshold_seconds,
        stall_threshold_s=settings.watchdog_stall_threshold_seconds,
        # A stall must be seen within a fraction of its threshold: beat at least four times in it.
        heartbeat_interval_s=min(DEFAULT_HEARTBEAT_S, settings.watchdog_stall_threshold_seconds / 4),
        recovery_s=settings.watchdog_recovery_seconds,
        alert_after_hangs=settings.watchdog_alert_after_hangs,
        alert_webhook_url=str(url) if url is not None else None,
    )


def start_watchdog(settings: Settings, registry: CollectorRegistry) -> Watchdog:
    """Start a watchdog on the running loop; the caller stops it."""
    watchdog = Watchdog(asyncio.get_running_loop(), watchdog_config(settings), WatchdogMetrics(registry))
    watchdog.start()
    return watchdog


@contextmanager
def sized_default_executor(
    settings: Settings, registry: CollectorRegistry
) -> Iterator[InstrumentedThreadPoolExecutor]:
    """Make a measured pool of `event_loop_threadpool_max_workers` threads the running loop's
    default executor; on exit, shut it down and put the previous one back."""
    loop = asyncio.get_running_loop()
    # asyncio offers no getter: the attribute is the only way to know what to restore.
    previous: Executor | None = getattr(loop, "_default_executor", None)
    executor = InstrumentedThreadPoolExecutor(
        max_workers=settings.event_loop_threadpool_max_workers,
        thread_name_prefix=POOL_NAME,
        metrics=ThreadPoolMetrics(registry),
    )
    loop.set_default_executor(executor)
    try:
        yield executor
    finally:
        loop._default_executor = previous  # type: ignore[attr-defined]
        executor.shutdown(wait=False, cancel_futures=True)
