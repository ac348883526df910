"""What the leader does with a due schedule: pure decisions taking `now`.

- **Catch-up**: fire times later than `misfire_grace_seconds` are *missed*. `skip` drops them,
  `latest` (the default) makes one run, at the latest of them, for all of them, and `all` runs
  each, the most recent `catch_up_limit` of them. Fire times within the grace always run.
- **Overlap**, when an earlier run of the schedule is still delivering: `skip` records the fire
  as skipped, `buffer_one` keeps one fire waiting until the earlier run ends (more are skipped),
  `allow` delivers it alongside.
- **Retries**: an attempt that failed is tried again after a backoff that doubles each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from backburner.schedules.specs import Fires


class CatchUp(StrEnum):
    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Overlap(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"


class RunOutcome(StrEnum):
    """The state of a run: the first three are unfinished, the others final."""

    BUFFERED = "buffered"  # waits for the run before it (overlap `buffer_one`)
    QUEUED = "queued"  # waits for its next attempt (a retry, or a buffered run let go)
    DELIVERING = "delivering"  # an attempt is under way
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed
    SKIPPED = "skipped"  # not delivered: an earlier run was still delivering


UNFINISHED = (RunOutcome.BUFFERED, RunOutcome.QUEUED, RunOutcome.DELIVERING)

DEFAULT_CATCH_UP_LIMIT = 10
MAX_CATCH_UP_LIMIT = 1000
DEFAULT_MISFIRE_GRACE_S = 60.0
MAX_MISFIRE_GRACE_S = 7 * 86_400.0
# Fire times within the grace that one pass takes from one schedule; the rest wait for the next.
MAX_ON_TIME_PER_PASS = 100
MAX_RETRY_DELAY_S = 300.0


@dataclass(frozen=True)
class Policy:
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    overlap: Overlap = Overlap.SKIP

    def kept_when_missed(self) -> int:
        return {CatchUp.SKIP: 0, CatchUp.LATEST: 1, CatchUp.ALL: self.catch_up_limit}[self.catch_up]


@dataclass(frozen=True)
class FirePlan:
    """One pass over a due schedule: the fire times to run (oldest first), how many were missed
    and not run, and the next fire time left for a later pass (None: no more)."""

    fires: tuple[datetime, ...]
    missed: int
    next_fire_at: datetime | None
    steps: int


def plan_fires(
    fires: Fires, next_fire_at: datetime | None, now: datetime, policy: Policy, budget: int
) -> FirePlan:
    """The fire times due at `now`, starting from `next_fire_at`, under the catch-up policy.

    At most `budget` fire times are computed; a schedule missed for longer than that is walked
    over a budget at a time, in later passes, without running anything until the walk is done.
    """
    if next_fire_at is None or next_fire_at > now:
        return FirePlan((), 0, next_fire_at, 0)
    cutoff = now - timedelta(seconds=policy.misfire_grace_s)
    missed = fires.advance(next_fire_at, cutoff, policy.kept_when_missed(), budget)
    if not missed.complete:
        return FirePlan((), missed.passed, missed.next, missed.steps)
    run = list(missed.kept)  # none (skip), the latest missed (latest), or the last few (all)
    moment, steps, on_time = missed.next, missed.steps, 0
    while moment is not None and moment <= now and on_time < MAX_ON_TIME_PER_PASS:
        run.append(moment)
        on_time += 1
        moment = fires.next_after(moment)
        steps += 1
    return FirePlan(tuple(run), missed.passed, moment, steps)


@dataclass(frozen=True)
class Active:
    """The unfinished runs of a schedule when a pass looks at it."""

    delivering: int = 0  # queued or delivering
    buffered: bool = False


def apply_overlap(fire_times: list[datetime], active: Active, overlap: Overlap) -> list[RunOutcome]:
    """The state each new run starts in: delivering, buffered or skipped, in `fire_times` order."""
    outcomes = []
    delivering, buffered = active.delivering, active.buffered
    for _ in fire_times:
        if (delivering == 0 and not buffered) or overlap == Overlap.ALLOW:
            outcomes.append(RunOutcome.DELIVERING)
            delivering += 1
        elif overlap == Overlap.BUFFER_ONE and not buffered:
            outcomes.append(RunOutcome.BUFFERED)
            buffered = True
        else:
            outcomes.append(RunOutcome.SKIPPED)
    return outcomes


def retry_delay_s(attempts: int, base_s: float) -> float:
    """Wait after the `attempts`-th failed attempt: base, 2 x base, 4 x base ... at most 5 min."""
    return float(min(base_s * 2 ** max(0, attempts - 1), MAX_RETRY_DELAY_S))


def gives_up(attempts: int, max_attempts: int) -> bool:
    return attempts >= max_attempts


def due_at(next_fire_at: datetime | None, trigger_at: datetime | None) -> datetime | None:
    """When the leader must look at a schedule next: its next fire, or a pending manual trigger."""
    moments = [m for m in (next_fire_at, trigger_at) if m is not None]
    return min(moments) if moments else None
