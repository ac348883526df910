"""A frozen leader (SIGSTOP) and a killed lock session (pg_terminate_backend), with real
`backburner worker` processes on PostgreSQL and a 3 s lease."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backburner.scheduler.runs import overlapping_runs
from tests.support.cluster import LEASE_S, Probe, leader_env, start_members, wait_for_leader
from tests.support.processes import wait_until

pytestmark = pytest.mark.acceptance


def test_a_frozen_leader_is_replaced_and_after_it_thaws_it_steps_down_fenced_out(
    postgres_url: str, tmp_path: Path
) -> None:
    probe = Probe(postgres_url)
    members = start_members("worker", 2, leader_env(postgres_url, tmp_path / "data"), tmp_path)
    try:
        leader, election = wait_for_leader(probe, members, 60)
        probe.wait_for_one_follower("the follower to wait on the lock")

        frozen_at = datetime.now(UTC)
        leader.signal(signal.SIGSTOP)  # longer than the lease: until the follower has taken over
        successor, new = wait_for_leader(probe, members, LEASE_S + 5, above_epoch=election.epoch)
        assert successor is not leader
        assert (new.acquired_at - frozen_at).total_seconds() <= LEASE_S + 2

        leader.signal(signal.SIGCONT)
        # It steps down, and the leader-only write it attempts with its old epoch is refused.
        refusal = wait_until(
            lambda: leader.events("leader.fenced_out"), 10, "the thawed leader's refused write"
        )[0]
        assert refusal["epoch"] == election.epoch and refusal["current_epoch"] >= new.epoch
        stepped = leader.events("leader.stepped_down")
        assert stepped and stepped[-1]["epoch"] == election.epoch
        assert leader.alive()  # and goes back to following
        probe.wait_for_one_follower("the old leader to wait on the lock again")

        runs = probe.runs()
        assert {r.epoch for r in runs} >= {election.epoch, new.epoch}
        assert overlapping_runs(runs) == []
    finally:
        for member in members:
            member.stop()


def test_terminating_the_lock_session_moves_the_lead_within_the_lease(
    postgres_url: str, tmp_path: Path
) -> None:
    probe = Probe(postgres_url)
    members = start_members("worker", 2, leader_env(postgres_url, tmp_path / "data"), tmp_path)
    try:
        leader, election = wait_for_leader(probe, members, 60)
        probe.wait_for_one_follower("the follower to wait on the lock")

        cut_at = datetime.now(UTC)
        assert probe.terminate_lock_session(leader.instance_id)
        successor, new = wait_for_leader(probe, members, LEASE_S + 2, above_epoch=election.epoch)
        assert successor is not leader
        assert (new.acquired_at - cut_at).total_seconds() < LEASE_S

        lost = wait_until(lambda: leader.events("leader.lost"), 5, "the old leader to notice")[0]
        assert lost["reason"] == "connection_lost"
        assert wait_until(lambda: leader.events("leader.stepped_down"), 5, "the old leader to step down")
        probe.wait_for_one_follower("the old leader to wait on the lock again")
        assert overlapping_runs(probe.runs()) == []
    finally:
        for member in members:
            member.stop()
