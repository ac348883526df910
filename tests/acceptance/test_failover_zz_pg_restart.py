"""PostgreSQL restarted under two `backburner worker` processes: exactly one leads again within
the lease plus the retry interval.

Restarting the shared server disturbs every other test using it, so this test carries the
`pg_restart` marker and the suite runs it last (see `tests/conftest.py`).
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cluster import LEASE_S, Member, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.pg_restart]

RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]
RETRY_S = 1


def leading(member: Member) -> bool:
    """Whether the member's last leadership event is an acquisition."""
    events = [e for e in member.events() if e.get("event") in ("leader.acquired", "leader.stepped_down")]
    return bool(events) and events[-1]["event"] == "leader.acquired"


def test_after_a_postgresql_restart_exactly_one_leads_again(postgres_url: str, tmp_path: Path) -> None:
    probe = Probe(postgres_url)
    env = leader_env(postgres_url, tmp_path / "data", poll_lock_retry_interval_seconds=RETRY_S)
    members = start_members("worker", 2, env, tmp_path)
    try:
        _, election = wait_for_leader(probe, members, 60)
        wait_until(lambda: probe.followers_waiting() == 1, 20, "the follower to wait on the lock")

        subprocess.run(RESTART, check=True, capture_output=True, timeout=60)
        back_at = datetime.now(UTC)
        started = time.monotonic()
        _, new = wait_for_leader(probe, members, LEASE_S + RETRY_S + 10, above_epoch=election.epoch)
        # Everyone lost its session; the first to reconnect leads (backoff capped at the retry interval).
        assert (new.acquired_at - back_at).total_seconds() <= LEASE_S + RETRY_S + 1
        assert all(m.events("leader.connection_failed") or m.events("leader.lost") for m in members)
        wait_until(lambda: probe.followers_waiting() == 1, 10, "the other instance to wait on the lock")
        assert sum(leading(m) for m in members) == 1
        assert all(m.alive() for m in members)
        assert time.monotonic() - started < 60
    finally:
        for member in members:
            member.stop()
