"""PostgreSQL restarted under two `backburner worker` processes: exactly one leads again within
the lease plus the retry interval.

The server restarted is the test's own (`tests/support/private_postgres.py`): restarting the
shared one would disturb every other test using it, in this run and in any run beside it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cluster import LEASE_S, Member, Probe, leader_env, start_members, wait_for_leader
from tests.support.private_postgres import PrivatePostgres, private_postgres

pytestmark = pytest.mark.acceptance

RETRY_S = 1


def leading(member: Member) -> bool:
    """Whether the member's last leadership event is an acquisition."""
    events = [e for e in member.events() if e.get("event") in ("leader.acquired", "leader.stepped_down")]
    return bool(events) and events[-1]["event"] == "leader.acquired"


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def test_after_a_postgresql_restart_exactly_one_leads_again(server: PrivatePostgres, tmp_path: Path) -> None:
    probe = Probe(server.url)
    env = leader_env(server.url, tmp_path / "data", poll_lock_retry_interval_seconds=RETRY_S)
    members = start_members("worker", 2, env, tmp_path)
    try:
        _, election = wait_for_leader(probe, members, 60)
        probe.wait_for_one_follower("the follower to wait on the lock")

        server.restart()
        back_at = datetime.now(UTC)
        started = time.monotonic()
        _, new = wait_for_leader(probe, members, LEASE_S + RETRY_S + 10, above_epoch=election.epoch)
        # Everyone lost its session; the first to reconnect leads (backoff capped at the retry interval).
        assert (new.acquired_at - back_at).total_seconds() <= LEASE_S + RETRY_S + 1
        assert all(m.events("leader.connection_failed") or m.events("leader.lost") for m in members)
        probe.wait_for_one_follower("the other instance to wait on the lock")
        assert sum(leading(m) for m in members) == 1
        assert all(m.alive() for m in members)
        assert time.monotonic() - started < 60
    finally:
        for member in members:
            member.stop()
