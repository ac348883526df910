"""The `heartbeat` housekeeping job: proves the leader alive (a fenced write) and expires the
rows of dead instances."""

from __future__ import annotations

import logging
from datetime import timedelta

from backburner.clock import Clock
from backburner.leader import store as leader_store
from backburner.logs import log_event
from backburner.membership import store as membership_store
from backburner.scheduler.jobs import JobContext, JobSpec

log = logging.getLogger("backburner.scheduler")

HEARTBEAT_JOB_ID = "heartbeat"


def heartbeat_job(*, interval_s: float, instance_expiry_s: float, clock: Clock) -> JobSpec:
    async def run(ctx: JobContext) -> None:
        now = clock.now()
        async with ctx.leadership.fenced() as conn:
            await leader_store.touch_heartbeat(conn, ctx.leadership.term.election, now)
            expired = await membership_store.expire(
                conn, last_seen_before=now - timedelta(seconds=instance_expiry_s)
            )
        if expired:
            log_event(log, logging.INFO, "membership.expired", instances=",".join(expired))

    return JobSpec(
        id=HEARTBEAT_JOB_ID,
        name="Leader heartbeat and instance expiry",
        interval_s=interval_s,
        run=run,
    )
