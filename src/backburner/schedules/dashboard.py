"""The dashboard's schedules panel: counts, the schedules due soonest and the latest runs.

Its own part of the dashboard's JSON (`schedules`), scoped by the caller's organization like every
object panel; each list is a bounded page read through an index.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backburner.clock import iso_or_none
from backburner.schedules.component import Schedules

SOONEST = 10
RECENT_RUNS = 10


def empty_panel() -> dict[str, Any]:
    return {"counts": {}, "soonest": [], "recent_runs": [], "dispatching": False}


async def schedules_panel(component: Schedules | None, organization_id: str) -> dict[str, Any]:
    if component is None:
        return empty_panel()
    store = component.store
    counts, soonest, recent = await asyncio.gather(
        store.counts(organization_id),
        store.soonest(organization_id, SOONEST),
        store.recent_runs(organization_id, RECENT_RUNS),
    )
    return {
        "counts": counts,
        "dispatching": component.dispatching,
        "soonest": [
            {
                "id": s.id,
                "name": s.name,
                "kind": s.spec.kind,
                "timing": s.spec.cron
                or (f"{s.spec.interval_seconds:g}s" if s.spec.interval_seconds else "once"),
                "due_at": iso_or_none(s.due_at),
                "paused": s.paused,
                "triggered": s.trigger_at is not None,
                "action": s.action,
            }
            for s in soonest
        ],
        "recent_runs": [
            {
                "schedule_id": run.schedule_id,
                "schedule_name": name,
                "fire_time": run.fire_time.isoformat(),
                "trigger": run.trigger,
                "outcome": run.outcome,
                "attempts": run.attempts,
                "http_status": run.http_status,
                "error": run.error,
                "epoch": run.epoch,
            }
            for run, name in recent
        ],
    }
