"""Lease arithmetic of the PostgreSQL elector: every timing derives from `leader_lease_seconds`.

The server ends a silent lock session after one lease (`idle_session_timeout`); the leader
heartbeats five times per lease and steps down when no heartbeat has succeeded for 0.6 of a
lease, so it has stopped before the server can free the lock and let a follower in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

HEARTBEATS_PER_LEASE = 5
STEP_DOWN_FRACTION = 0.6
KEEPALIVE_PROBES = 3
# A follower's wait on the lock is cut into slices (server-side `lock_timeout`) so that it proves
# its own connection alive now and then, and logs a changed holder.
FOLLOWER_WAIT_SLICE_S = 30.0


@dataclass(frozen=True)
class LeaseTiming:
    lease_s: float

    @property
    def heartbeat_interval_s(self) -> float:
        return self.lease_s / HEARTBEATS_PER_LEASE

    @property
    def heartbeat_timeout_s(self) -> float:
        """Client-side deadline of one heartbeat query."""
        return self.lease_s / HEARTBEATS_PER_LEASE

    @property
    def step_down_after_s(self) -> float:
        """Silence (since the last successful heartbeat was sent) after which the leader steps down."""
        return self.lease_s * STEP_DOWN_FRACTION

    @property
    def connect_timeout_s(self) -> float:
        return max(2.0, self.lease_s)

    def server_settings(self, application_name: str) -> dict[str, str]:
        """Session settings sent at connection time, so they hold even if the client never speaks again.

        `idle_session_timeout` ends a session that went quiet (a frozen or dead leader, or a frozen
        follower that was granted the lock); keepalives and `tcp_user_timeout` end one whose peer
        is unreachable; `client_connection_check_interval` ends a waiting or running query whose
        client has gone.
        """
        lease_ms = max(1000, int(self.lease_s * 1000))
        keepalive_idle_s = max(1, math.floor(self.lease_s / 2))
        keepalive_interval_s = max(1, math.floor(self.lease_s / (2 * KEEPALIVE_PROBES)))
        return {
            "application_name": application_name[:63],
            "idle_session_timeout": str(lease_ms),
            "tcp_keepalives_idle": str(keepalive_idle_s),
            "tcp_keepalives_interval": str(keepalive_interval_s),
            "tcp_keepalives_count": str(KEEPALIVE_PROBES),
            "tcp_user_timeout": str(lease_ms),
            "client_connection_check_interval": str(max(100, int(self.heartbeat_interval_s * 1000))),
            "lock_timeout": str(int(FOLLOWER_WAIT_SLICE_S * 1000)),
        }


def lock_key(election: str) -> int:
    """A stable signed 64-bit advisory-lock key for an election name (same on every instance)."""
    digest = hashlib.sha256(f"backburner-election:{election}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_key_parts(key: int) -> tuple[int, int]:
    """How `pg_locks` shows a bigint advisory key: (classid, objid) = (high, low) 32 bits."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def application_name(instance_id: str) -> str:
    """What the lock session is called in `pg_stat_activity`: operators find it by instance."""
    return f"backburner-leader:{instance_id}"


class Backoff:
    """Reconnect delays: 1 s doubling up to a cap (`poll_lock_retry_interval_seconds`)."""

    def __init__(self, start_s: float, cap_s: float) -> None:
        self._start_s = min(start_s, cap_s)
        self._cap_s = cap_s
        self._next_s = self._start_s

    def next_delay_s(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self._cap_s)
        return delay

    def reset(self) -> None:
        self._next_s = self._start_s
