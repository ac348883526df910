"""SQLite: two `backburner worker` processes on one database file; the file lock picks one
leader, and the other takes over when it is killed."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cluster import START_DEADLINE_S, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import wait_until

pytestmark = pytest.mark.acceptance


def test_two_processes_on_one_sqlite_file_one_leads_and_the_other_takes_over(
    sqlite_url: str, tmp_path: Path
) -> None:
    probe = Probe(sqlite_url)
    members = start_members("worker", 2, leader_env(sqlite_url, tmp_path / "data"), tmp_path)
    try:
        leader, election = wait_for_leader(probe, members, 60)
        follower = next(m for m in members if m is not leader)
        wait_until(
            lambda: follower.events("leader.waiting"),
            START_DEADLINE_S,
            "the follower to wait on the file lock",
        )
        assert not follower.events("leader.acquired")
        assert {r.instance_id for r in probe.runs()} == {leader.instance_id}

        killed_at = datetime.now(UTC)
        leader.signal(signal.SIGKILL)
        successor, new = wait_for_leader(probe, members, 5, above_epoch=election.epoch)
        assert successor is follower
        assert (new.acquired_at - killed_at).total_seconds() < 2
        assert follower.events("leader.acquired")[0]["backend"] == "file"
    finally:
        for member in members:
            member.stop()
