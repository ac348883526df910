"""The same tick fired by two schedulers is recorded and run once: two `backburner worker`
processes in different elections both lead and fire the `heartbeat` job on the same aligned
ticks; each tick has one row and one run."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.cluster import Member, Probe, leader_env
from tests.support.processes import wait_until

pytestmark = pytest.mark.acceptance


def test_two_schedulers_firing_the_same_ticks_run_each_once(postgres_url: str, tmp_path: Path) -> None:
    probe = Probe(postgres_url)
    members = [
        Member(
            "worker",
            leader_env(
                postgres_url,
                tmp_path / "data",
                leader_election_name=name,
                scheduler_heartbeat_interval_seconds=0.25,
            ),
            tmp_path,
            name,
        )
        for name in ("election-a", "election-b")
    ]
    try:
        both_lead = wait_until(
            lambda: all(m.events("leader.acquired") for m in members),
            60,
            "both processes to lead their election",
        )
        assert both_lead

        def collided() -> bool:
            return (
                all(any(e.get("reason") == "already_run" for e in m.events("job.skipped")) for m in members)
                and len(probe.runs("heartbeat")) >= 12
            )

        wait_until(collided, 30, "each scheduler to find some ticks already run by the other")
        for member in members:
            member.stop()

        rows = probe.runs("heartbeat")
        per_tick = Counter(r.fire_time for r in rows)
        assert set(per_tick.values()) == {1}
        started = Counter(
            datetime.fromisoformat(e["fire_time"])
            for m in members
            for e in m.events("job.started")
            if e["job"] == "heartbeat"
        )
        assert set(started.values()) == {1}  # no tick ran twice
        assert set(started) <= set(per_tick)  # and none ran without its row
        # Every finished run was started. A stop may land while a claim commits: that tick is
        # recorded as running but never starts, and stays unfinished (the next term abandons it).
        unstarted = [r for r in rows if r.fire_time not in started]
        assert all(r.outcome == "running" and r.finished_at is None for r in unstarted), unstarted
        assert len(unstarted) <= len(members)
        assert {r.election for r in rows} == {"election-a", "election-b"}
    finally:
        for member in members:
            member.stop()
