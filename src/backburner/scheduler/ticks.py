"""Aligned ticks: every instance computes the same fire times for a job, jitter included.

Tick `k` of a job fires at `k * interval` after the Unix epoch plus a jitter drawn from a hash of
(job id, k). Since the scheduled fire time is the key of a run in `job_runs`, two schedulers
that fire the same tick compute the same key and the tick runs once. Pure functions on integer
microseconds, so every process gets the same datetimes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS_PER_S = 1_000_000


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_S + delta.microseconds


@dataclass(frozen=True)
class TickGrid:
    job_id: str
    interval_us: int
    jitter_us: int  # at most half an interval, so ticks keep their order

    @classmethod
    def of(cls, job_id: str, interval_s: float, jitter_s: float = 0.0) -> TickGrid:
        interval_us = max(1, round(interval_s * MICROS_PER_S))
        jitter_us = min(max(0, round(jitter_s * MICROS_PER_S)), interval_us // 2)
        return cls(job_id, interval_us, jitter_us)

    def jitter_of(self, tick: int) -> int:
        if self.jitter_us == 0:
            return 0
        digest = hashlib.sha256(f"{self.job_id}:{tick}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (self.jitter_us + 1)

    def fire_time(self, tick: int) -> datetime:
        return EPOCH + timedelta(microseconds=tick * self.interval_us + self.jitter_of(tick))

    def next_after(self, moment: datetime) -> datetime:
        """The first tick at least half an interval after `moment`.

        After a tick's own fire time that is the next tick (jitter is at most half an interval);
        after an off-grid run (the run due at once when a term starts) it leaves a gap of at
        least half an interval before the grid resumes.
        """
        target_us = _micros(moment) + (self.interval_us + 1) // 2
        tick = -(-target_us // self.interval_us)  # ceiling division
        return self.fire_time(tick)


class AlignedIntervalTrigger(BaseTrigger):  # type: ignore[misc]
    """APScheduler trigger over a `TickGrid`."""

    def __init__(self, grid: TickGrid, configured_jitter_s: float | None = None) -> None:
        self.grid = grid
        self.configured_jitter_s = configured_jitter_s

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        return self.grid.next_after(previous_fire_time or now)

    def __str__(self) -> str:
        interval_s = self.grid.interval_us / MICROS_PER_S
        jitter_s = self.grid.jitter_us / MICROS_PER_S
        configured = self.configured_jitter_s
        if configured is not None and configured > jitter_s:  # capped: say so, with the setting's value
            return (
                f"interval[{interval_s:g}s, jitter up to {jitter_s:g}s (half the interval; "
                f"{configured:g}s configured), aligned]"
            )
        if jitter_s == 0:
            return f"interval[{interval_s:g}s, aligned]"
        return f"interval[{interval_s:g}s, jitter up to {jitter_s:g}s, aligned]"

    def __repr__(self) -> str:
        return f"<AlignedIntervalTrigger {self}>"
