"""What each instance is, as shown to operators: decided from the election, not self-reported.

An instance's row says what it last believed (`leader` or `follower`). Only the holder of the
current term leads; an instance that has missed several heartbeats is shown as `stale` (dead,
frozen or cut off) until the leader's housekeeping removes its row.
"""

from __future__ import annotations

from datetime import datetime

STALE_AFTER_HEARTBEATS = 3


def shown_role(
    instance_id: str, leader_id: str | None, last_seen: datetime, now: datetime, heartbeat_interval_s: float
) -> str:
    if leader_id is not None and instance_id == leader_id:
        return "leader"
    if (now - last_seen).total_seconds() > STALE_AFTER_HEARTBEATS * heartbeat_interval_s:
        return "stale"
    return "follower"
