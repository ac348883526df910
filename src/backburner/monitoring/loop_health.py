"""The runtime's event-loop health: the sized, measured default executor and the watchdog."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from backburner.monitoring.threadpool import InstrumentedThreadPoolExecutor
from backburner.monitoring.watchdog import Watchdog
from backburner.monitoring.watchdog_config import WatchdogConfig
from backburner.monitoring.watchdog_metrics import WatchdogMetrics
from backburner.settings import Settings

POOL_NAME = "backburner-pool"
DEFAULT_HEARTBEAT_S = 0.025
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


def install_loop_health(
    settings: Settings, registry: CollectorRegistry
) -> tuple[InstrumentedThreadPoolExecutor, Watchdog]:
    """Make a measured pool of `event_loop_threadpool_max_workers` threads the loop's default
    executor, and start the watchdog on the running loop."""
    metrics = WatchdogMetrics(registry)
    loop = asyncio.get_running_loop()
    executor = InstrumentedThreadPoolExecutor(
        max_workers=settings.event_loop_threadpool_max_workers,
        thread_name_prefix=POOL_NAME,
        metrics=metrics.threadpool,
    )
    loop.set_default_executor(executor)
    watchdog = Watchdog(loop, watchdog_config(settings), metrics)
    watchdog.start()
    return executor, watchdog
