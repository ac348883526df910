"""Settings of the event-loop watchdog, built by the runtime from ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WatchdogConfig"]


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    """Watchdog settings, in seconds unless named otherwise.

    ``check_interval_s`` and ``hang_threshold_s`` keep the meaning of Letta's
    ``watchdog_check_interval_seconds`` and ``watchdog_timeout_threshold_seconds``; here the
    check interval is only the longest the thread sleeps when nothing is due, because stall
    detection is scheduled for the moment the stall threshold is crossed.
    """

    enabled: bool = True
    check_interval_s: float = 5.0  # longest sleep of the watchdog thread
    hang_threshold_s: float = 15.0  # a stall this long is a hang: CRITICAL, readiness degraded
    stall_threshold_s: float = 0.25  # a heartbeat this late is a stall, reported at once
    # The heartbeat period. A stall is seen at most this long after the threshold is crossed
    # (measured from the block's start); the heartbeat costs a few microseconds per beat.
    heartbeat_interval_s: float = 0.025
    recovery_s: float = 30.0  # stall-free time after a hang before readiness is restored
    alert_after_hangs: int = 3  # consecutive hangs (no recovery between) before an alert
    alert_webhook_url: str | None = None
    alert_timeout_s: float = 2.0
    report_min_interval_s: float = 5.0  # at most one stall log per this period; all are counted
    max_recent_stalls: int = 50  # kept for GET /api/admin/watchdog
    stack_depth: int = 12  # frames kept per report

    def __post_init__(self) -> None:
        positive = {
            "check_interval_s": self.check_interval_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "stall_threshold_s": self.stall_threshold_s,
            "hang_threshold_s": self.hang_threshold_s,
            "alert_timeout_s": self.alert_timeout_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name, value in {
            "recovery_s": self.recovery_s,
            "report_min_interval_s": self.report_min_interval_s,
        }.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name, count in {
            "alert_after_hangs": self.alert_after_hangs,
            "max_recent_stalls": self.max_recent_stalls,
            "stack_depth": self.stack_depth,
        }.items():
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count!r}")
        if self.heartbeat_interval_s >= self.stall_threshold_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be below "
                f"stall_threshold_s ({self.stall_threshold_s})"
            )
        if self.hang_threshold_s <= self.stall_threshold_s:
            raise ValueError(
                f"hang_threshold_s ({self.hang_threshold_s}) must be above "
                f"stall_threshold_s ({self.stall_threshold_s})"
            )
