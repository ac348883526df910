"""Three `backburner serve` processes on one PostgreSQL database: exactly one leads, all agree,
and the lead moves on SIGKILL (first run within 5 s) and on SIGTERM (within 2 s)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cluster import Member, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import wait_until

pytestmark = pytest.mark.acceptance


def statuses(members: list[Member]) -> list[dict]:  # type: ignore[type-arg]
    return [m.process.get("/api/admin/scheduler/status").json() for m in members if m.alive()]


def agreed(members: list[Member], count: int) -> list[dict] | None:  # type: ignore[type-arg]
    found = statuses(members)
    leaders = [s for s in found if s["is_leader"]]
    views = {(s["leader"]["instance_id"], s["leader"]["epoch"]) if s["leader"] else None for s in found}
    complete = all(len(s["instances"]) == count for s in found)
    if len(found) == count and len(leaders) == 1 and len(views) == 1 and None not in views and complete:
        return found
    return None


def test_three_instances_one_leader_then_sigkill_and_sigterm_move_the_lead(
    postgres_url: str, tmp_path: Path
) -> None:
    probe = Probe(postgres_url)
    # A short expiry, so the killed instance's row is seen to go.
    env = leader_env(postgres_url, tmp_path / "data", instance_expiry_seconds=2)
    members = start_members("serve", 3, env, tmp_path)
    try:
        for member in members:
            member.process.wait_ready(60)
        found = wait_until(lambda: agreed(members, 3), 15, "three statuses agreeing on one leader")
        leader_id = next(s["instance_id"] for s in found if s["is_leader"])
        leader_view = found[0]["leader"]
        assert leader_view["instance_id"] == leader_id
        assert {s["election"]["backend"] for s in found} == {"postgres"}
        assert {j["id"] for j in found[0]["jobs"]} >= {"heartbeat"}
        assert sorted(i["role"] for i in found[0]["instances"]) == ["follower", "follower", "leader"]

        # The CLI shows the same, as JSON and as tables.
        leader = next(m for m in members if m.instance_id == leader_id)
        cli = [sys.executable, "-m", "backburner", "scheduler", "status", "--url", leader.process.url]
        as_json = json.loads(
            subprocess.run([*cli, "--json"], capture_output=True, text=True, check=True).stdout
        )
        assert as_json["leader"]["epoch"] == leader_view["epoch"] and as_json["is_leader"] is True
        table = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
        assert leader_id in table and "heartbeat" in table and "Instances" in table

        metrics = leader.process.get("/metrics").text
        assert "backburner_leader 1.0" in metrics
        assert f"backburner_leader_epoch {float(leader_view['epoch'])}" in metrics
        assert 'backburner_job_runs_total{job="heartbeat",outcome="succeeded"}' in metrics
        assert "backburner_job_run_duration_seconds_count" in metrics
        follower = next(m for m in members if m is not leader)
        assert "backburner_leader 0.0" in follower.process.get("/metrics").text

        # SIGKILL: another instance leads and records its first run within 5 s.
        epoch = leader_view["epoch"]
        killed_at = datetime.now(UTC)
        leader.signal(signal.SIGKILL)
        successor, election = wait_for_leader(probe, members, 5, above_epoch=epoch)
        first_run = probe.first_run_of_epoch_above(epoch)
        assert first_run is not None and first_run.instance_id == successor.instance_id
        assert (first_run.started_at - killed_at).total_seconds() < 5

        # SIGTERM: the last instance leads within 2 s; the stopped one exits 0.
        probe.wait_for_one_follower("the last follower to wait on the lock")
        termed_at = datetime.now(UTC)
        successor.signal(signal.SIGTERM)
        last, final = wait_for_leader(probe, members, 5, above_epoch=election.epoch)
        assert (final.acquired_at - termed_at).total_seconds() < 2
        assert last is not successor and last is not leader
        assert successor.process.popen.wait(10) == 0
        assert successor.events("leader.released")
        # The graceful one left; the killed one's row expired under the leader's housekeeping.
        wait_until(lambda: agreed([last], 1), 10, "the survivor to see itself alone")
    finally:
        for member in members:
            member.stop()
